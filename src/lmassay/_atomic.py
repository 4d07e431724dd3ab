"""Write files atomically: to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and an interrupted run leaves the old
file (or none) in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def _default_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    The file gets ``mode``, or by default the permissions an ordinary write would give (0o666 less
    the umask) — not the 0o600 of the temporary file it is written through.
    """
    with atomic_file(path, mode=mode) as handle:
        handle.write(data)
    return Path(path)


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path`` that replaces ``path`` on success.

    For files written piece by piece (the reference cache writes rows at their offsets as they
    are scored): on leaving the block the file is flushed, synced, given ``mode`` (as in
    :func:`atomic_write_bytes`) and renamed over ``path``; an error removes it and leaves ``path``
    as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_mode() if mode is None else mode)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN and infinities refused) atomically."""
    return atomic_write_text(
        path, json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    )


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> Path:
    """Write one JSON object per line atomically."""
    lines = [json.dumps(row, allow_nan=False, ensure_ascii=False) for row in rows]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
