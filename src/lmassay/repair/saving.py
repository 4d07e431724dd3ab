"""Write a changed model as a folder like its source, and put a finished folder in place.

Used by ``lmassay edit`` and ``lmassay repair``: the weights are written by ``save_pretrained``
(safetensors) in the source's dtype; the source's tokenizer and config files that it did not write
are copied byte for byte (never its weights, model card or lmassay's records about it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmassay.progress import hidden_library_bars

NOT_COPIED = frozenset(
    {"tamper.json", "edit.json", "attestation.json", "lmassay-reference.json", "README.md"}
)
"""Files of a source folder that describe that model, not the changed one."""
COPIED_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".py", ".tiktoken")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack")


def source_dtype(path: Path) -> str | None:
    """The dtype the source's config.json records (``dtype`` or ``torch_dtype``), if a float one."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in ("float32", "float16", "bfloat16") else None


def copy_source_files(source: Path, folder: Path, skip: Iterable[str] = ()) -> list[str]:
    """Copy ``source``'s tokenizer and config files that ``folder`` lacks; return their names."""
    excluded = NOT_COPIED | set(skip)
    copied = []
    for name in sorted(os.listdir(source)):
        path = source / name
        if (
            not path.is_file()
            or (folder / name).exists()
            or name in excluded
            or name.endswith(WEIGHT_SUFFIXES)
            or name.endswith(".index.json")
            or not name.endswith(COPIED_SUFFIXES)
        ):
            continue
        shutil.copyfile(path, folder / name)
        copied.append(name)
    return copied


def save_like_source(model: Any, source: Path, folder: Path) -> list[str]:
    """``model`` as safetensors into ``folder``, plus :func:`copy_source_files`; returns those."""
    with hidden_library_bars():
        model.save_pretrained(folder, safe_serialization=True)
    return copy_source_files(source, folder)
