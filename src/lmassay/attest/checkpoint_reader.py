"""Reading tensors of a safetensors checkpoint one module at a time, for layer streaming.

A safetensors file is an 8-byte little-endian header size, a JSON header naming each tensor's dtype,
shape and byte range, then the data.  :class:`Checkpoint` indexes every ``*.safetensors`` file of a
model folder and reads the tensors asked for with positioned reads straight into their own memory
(no map of the whole file), counting the bytes and the time in a
:class:`~lmassay.attest.streamed_model.StreamStats`.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch

    from lmassay.attest.streamed_model import StreamStats

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


@dataclass(frozen=True)
class _Entry:
    """Where one tensor lies in a safetensors file."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


DAMAGED_FIX = "the file is damaged or not a safetensors file: download or save the checkpoint again"
"""The fix of every damaged-checkpoint error: there is no repairing a safetensors file in place."""


def safetensors_entries(file: Path) -> dict[str, _Entry]:
    """The tensors of one safetensors file, checked against the file before any data is read.

    The header is read by :func:`lmassay.sealing.manifest.read_safetensors_header` (its length is
    bounded, it must be a JSON object); each entry must then name a dtype, a shape of
    non-negative integers and a byte range ``[begin, end)`` that lies inside the file.  A file cut
    short is therefore refused here, naming it, rather than deep inside a loader.  Raises
    :class:`InputError` naming ``file`` and :data:`DAMAGED_FIX`.
    """
    from lmassay.sealing.manifest import read_safetensors_header

    header, start = read_safetensors_header(file)
    size = file.stat().st_size
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        entry = _entry(file, key, info, start)
        if entry.end > size:
            raise InputError(
                f"{file} ends at byte {size}, before the data of tensor {key!r} "
                f"(bytes {entry.begin}-{entry.end}): the file is cut short",
                DAMAGED_FIX,
            )
        out[key] = entry
    return out


def _entry(file: Path, key: str, info: object, start: int) -> _Entry:
    """One header entry as an :class:`_Entry`, or :class:`InputError` naming what is wrong."""
    fields = info if isinstance(info, dict) else {}
    dtype, shape, offsets = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
    if (
        isinstance(dtype, str)
        and _counts(shape)
        and _counts(offsets)
        and len(offsets) == 2
        and offsets[0] <= offsets[1]
    ):
        return _Entry(file, dtype, tuple(shape), start + offsets[0], start + offsets[1])
    raise InputError(
        f"{file}: the safetensors header entry of tensor {key!r} is malformed "
        "(it needs a dtype, a shape and data_offsets [begin, end])",
        DAMAGED_FIX,
    )


def _counts(value: object) -> TypeGuard[list[int]]:
    """Whether ``value`` is a JSON list of non-negative integers (``true`` is not one)."""
    return isinstance(value, list) and all(type(n) is int and n >= 0 for n in value)


class Checkpoint:
    """The safetensors files of a model folder: which file holds which tensor, and reading one.

    Tensors are read with positioned reads straight into their own memory.  (``safe_open`` maps a
    whole shard into the address space to copy one tensor out of it; under an address-space cap
    the map of a shard holding the embedding table would double the peak.)
    """

    def __init__(self, folder: Path, model_class: str) -> None:
        self.folder = folder
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise InputError(
                f"{folder} has no *.safetensors weights; layer streaming reads safetensors only",
                "convert the checkpoint to safetensors or use --offload none",
            )
        self.entries: dict[str, _Entry] = {}
        for file in files:
            self.entries.update(safetensors_entries(file))
        self.names = {key: key for key in self.entries}
        for pattern, target in _renamings(model_class):  # legacy names, e.g. GPT-NeoX embed_out
            for key in self.entries:
                self.names.setdefault(re.sub(pattern, target, key), key)

    def resolve(self, name: str, prefix: str) -> str | None:
        """The checkpoint key of parameter ``name`` (with or without the base-model prefix)."""
        candidates = [name]
        if prefix and name.startswith(prefix + "."):
            candidates.append(name[len(prefix) + 1 :])
        else:
            candidates.append(f"{prefix}.{name}" if prefix else name)
        return next((self.names[c] for c in candidates if c in self.names), None)

    def read(self, keys: Sequence[str], stats: StreamStats) -> dict[str, torch.Tensor]:
        """Read the tensors ``keys`` (CPU, their stored dtype), one file open at a time."""
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.entries[key].file, []).append(key)
        out = {}
        start = time.perf_counter()
        for file, names in by_file.items():
            with open(file, "rb", buffering=0) as handle:
                for key in sorted(names, key=lambda k: self.entries[k].begin):
                    out[key] = _read_tensor(handle, key, self.entries[key])
                    stats.bytes_read += self.entries[key].end - self.entries[key].begin
        stats.seconds_loading += time.perf_counter() - start
        return out


def _read_tensor(handle: io.FileIO, key: str, entry: _Entry) -> torch.Tensor:
    """Read one tensor from an open (unbuffered) file straight into a new tensor's memory."""
    import torch

    dtype = _SAFETENSORS_DTYPES.get(entry.dtype)
    if dtype is None:
        raise InputError(
            f"{entry.file} stores {key} as {entry.dtype}, which layer streaming cannot read",
            "use --offload none",
        )
    tensor = torch.empty(entry.shape, dtype=getattr(torch, dtype))
    view = tensor.reshape(-1).view(torch.uint8).numpy().data  # memoryview
    if view.nbytes != entry.end - entry.begin:
        raise InputError(
            f"{entry.file}: tensor {key} has {entry.end - entry.begin} bytes, "
            f"its shape needs {view.nbytes}",
            "the checkpoint is damaged; re-save it",
        )
    handle.seek(entry.begin)
    done = 0
    while done < view.nbytes:
        n = handle.readinto(view[done:])
        if not n:
            raise InputError(f"{entry.file} ends inside tensor {key}", "re-save it")
        done += n
    return tensor


def _renamings(model_class: str) -> list[tuple[str, str]]:
    """The plain key renamings transformers applies when loading ``model_class`` checkpoints."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # older transformers: checkpoints use the module names
        return []
    out = []
    for rule in get_checkpoint_conversion_mapping(model_class) or []:
        sources, targets = (
            getattr(rule, "source_patterns", []),
            getattr(rule, "target_patterns", []),
        )
        if type(rule).__name__ == "WeightRenaming" and len(sources) == len(targets) == 1:
            out.append((str(sources[0]), str(targets[0])))
    return out
