"""Reading user-supplied files: regular files only, never more than a size limit.

Every file a user names (a probe corpus, repair data, a facts file, an attestation, a key) is read
through this module, so that a path that is a link to ``/dev/zero``, a named pipe, a socket or a
folder is refused at once with a message naming it, and a file too large to be what it claims is
refused before it is read, naming its size, the limit and the flag that raises it.

- :func:`open_regular` opens a path (links are followed) without blocking, even on a named pipe,
  then checks the *opened descriptor* with ``os.fstat``: it must be a regular file no larger than
  the limit. Checking the descriptor rather than the path leaves no window in which the path
  could be swapped for something else.
- :func:`read_bytes` reads at most ``limit + 1`` bytes, so a file that grows while it is read is
  still bounded; :func:`iter_lines` streams the lines of a line-based file (JSONL) under the same
  bound, so that the whole file never sits in memory twice.
- :func:`check_regular` and :func:`check_folder` check files that another library reads
  (pyarrow, ``datasets``): each must be a regular file, and their total size within the limit.

Two limits:

:data:`DATA_LIMIT` (4 GiB)
    Probe corpora, repair data, facts and covariance texts. A probe corpus is scored text by text
    and a repair corpus is held in memory as Python strings, which take up to four times the
    file's bytes; 4 GiB of text is far beyond any corpus lmassay is meant for (the worlds' corpora
    are a few MB) while staying within a workstation's memory. ``--max-file-size`` raises it
    (or lowers it).
:data:`DOCUMENT_LIMIT` (64 MiB)
    JSON documents lmassay writes itself (``attestation.json``) and PEM keys. An attestation is a
    few hundred KB at most (per-sample rows go to ``samples.jsonl``, not into it) and a key is
    under 1 KB, so anything over 64 MiB is not one of them; this limit has no flag.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmassay.errors import InputError

__all__ = [
    "DATA_LIMIT",
    "DATA_LIMIT_TEXT",
    "DOCUMENT_LIMIT",
    "FLAG",
    "FileLimitError",
    "check_folder",
    "check_regular",
    "format_size",
    "iter_lines",
    "open_regular",
    "over_folder_limit",
    "parse_size",
    "read_bytes",
    "size_from_flag",
]

FLAG = "--max-file-size"
"""The flag that sets the limit of data files (attest, repair, edit)."""

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

DATA_LIMIT_TEXT = "4GiB"
DATA_LIMIT = 4 * GiB
"""Default limit of probe and data files (see the module docstring)."""
DOCUMENT_LIMIT = 64 * MiB
"""Limit of JSON documents and keys lmassay writes itself (see the module docstring)."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": 1000,
    "kib": KiB,
    "m": MiB,
    "mb": 1000**2,
    "mib": MiB,
    "g": GiB,
    "gb": 1000**3,
    "gib": GiB,
    "t": TiB,
    "tb": 1000**4,
    "tib": TiB,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class FileSizeLimit:
    """The ``--max-file-size`` setting of a command's config (attest, repair, edit)."""

    max_file_size: str = DATA_LIMIT_TEXT
    """The most bytes a probe, data or facts file may hold, e.g. ``512MiB`` or ``8GiB``
    (``--max-file-size``)."""

    @property
    def max_file_bytes(self) -> int:
        """``max_file_size`` in bytes; :class:`InputError` naming ``--max-file-size`` if it is no
        size."""
        return size_from_flag(self.max_file_size)

    def check_file_size_limit(self) -> None:
        """Refuse a ``max_file_size`` that is no size (one message naming ``--max-file-size``)."""
        size_from_flag(self.max_file_size)


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512MiB``, ``8GiB``, ``1.5GB`` or ``1000000``.

    ``KiB``/``MiB``/``GiB``/``TiB`` (and ``K``/``M``/``G``/``T``) are powers of 1024, ``KB``/``MB``/
    ``GB``/``TB`` powers of 1000; case does not matter. Raises :class:`ValueError` for anything
    else, or for a size below one byte.
    """
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size")
    size = math.floor(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{text!r} is below one byte")
    return size


def size_from_flag(text: str, flag: str = FLAG) -> int:
    """Bytes of the size given to ``flag``; :class:`InputError` naming the flag when it is not one."""
    try:
        return parse_size(text)
    except ValueError as err:
        raise InputError(
            f"{flag} {err}", f"give a size such as 512MiB or 8GiB (default {DATA_LIMIT_TEXT})"
        ) from None


def format_size(n_bytes: int) -> str:
    """``n_bytes`` in the largest binary unit that keeps it at least 1 (``1.5 GiB``, ``12 B``)."""
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes} B"


def _suggested_flag(n_bytes: int) -> str:
    """A ``--max-file-size`` value at least ``n_bytes``: the next whole GiB or MiB."""
    if n_bytes > GiB:
        return f"{math.ceil(n_bytes / GiB)}GiB"
    return f"{max(1, math.ceil(n_bytes / MiB))}MiB"


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: Path, what: str, mode: int) -> InputError:
    link = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
    return InputError(
        f"{what} {path}{link} is {_kind(mode)}, not a regular file",
        "give a regular file; lmassay does not read devices, pipes or sockets",
    )


class FileLimitError(InputError):
    """A file (or a folder's files together) is larger than the limit; the fix names the flag."""


def _too_large(
    path: Path, what: str, size: int | None, limit: int, flag: str | None
) -> FileLimitError:
    """``size`` None: the file grew past ``limit`` while it was read."""
    if size is None:
        found = f"{what} {path} grew past the {format_size(limit)} limit while it was read"
    else:
        found = f"{what} {path} is {format_size(size)}, over the {format_size(limit)} limit"
    if flag is None:
        fix = f"no {what} written by lmassay is this large: check that {path} is the right file"
    else:
        fix = f"pass {flag} {_suggested_flag(size or 2 * limit)} (or more) to read it"
    return FileLimitError(found, fix)


def _unreadable(path: Path, what: str, err: OSError) -> InputError:
    if err.errno == errno.ENOENT:
        return InputError(f"{what} {path} does not exist", "check the path")
    if err.errno == errno.ENXIO:  # opening a socket
        return InputError(
            f"{what} {path} is a socket, not a regular file",
            "give a regular file; lmassay does not read devices, pipes or sockets",
        )
    return InputError(
        f"cannot read {what} {path}: {err.strerror or err}", "check the path and its permissions"
    )


@contextmanager
def open_regular(
    path: str | os.PathLike[str], *, what: str, limit: int, flag: str | None = FLAG
) -> Iterator[tuple[BinaryIO, int]]:
    """The open file at ``path`` (links followed) and its size, checked on the descriptor.

    ``what`` names the file in messages ("probe file", "facts file"); ``flag`` is the option that
    raises ``limit`` (None: the limit is fixed). Raises :class:`InputError` when the path is
    missing or unreadable, is not a regular file, or is larger than ``limit``. Reading more than
    ``limit`` bytes from the handle is the caller's to refuse (see :func:`read_bytes`).
    """
    file = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)  # O_NONBLOCK: opening a named pipe does not wait for a writer
    except OSError as err:
        raise _unreadable(file, what, err) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(file, what, info.st_mode)
        if info.st_size > limit:
            raise _too_large(file, what, info.st_size, limit, flag)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle, info.st_size


def read_bytes(
    path: str | os.PathLike[str], *, what: str, limit: int, flag: str | None = FLAG
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (see :func:`open_regular`)."""
    with open_regular(path, what=what, limit=limit, flag=flag) as (handle, _):
        try:
            data = handle.read(limit + 1)
        except OSError as err:
            raise _unreadable(Path(path), what, err) from None
    if len(data) > limit:
        raise _too_large(Path(path), what, None, limit, flag)
    return data


def iter_lines(
    path: str | os.PathLike[str], *, what: str, limit: int, flag: str | None = FLAG
) -> Iterator[bytes]:
    """The lines of the regular file ``path`` as bytes, each with its ``b"\\n"`` (the last may
    lack it), split on ``b"\\n"`` only; at most ``limit`` bytes in all (see :func:`open_regular`)."""
    with open_regular(path, what=what, limit=limit, flag=flag) as (handle, _):
        left = limit
        while True:
            try:
                line = handle.readline(left + 1)
            except OSError as err:
                raise _unreadable(Path(path), what, err) from None
            if not line:
                return
            left -= len(line)
            if left < 0:
                raise _too_large(Path(path), what, None, limit, flag)
            yield line


def check_regular(
    path: str | os.PathLike[str], *, what: str, limit: int, flag: str | None = FLAG
) -> int:
    """The size of ``path``, refused as :func:`open_regular` would refuse it (for files another
    library reads)."""
    with open_regular(path, what=what, limit=limit, flag=flag) as (_, size):
        return size


def check_folder(
    path: str | os.PathLike[str], *, what: str, limit: int, flag: str | None = FLAG
) -> int:
    """The total size of the files in the folder ``path`` (links followed, folders walked), for a
    folder another library reads: every entry must be a regular file or a folder, and the total
    within ``limit``."""
    root = Path(path)
    total = 0
    for dirpath, _, filenames in os.walk(root, onerror=_raise(root, what)):
        for name in filenames:
            file = Path(dirpath) / name
            try:
                info = file.stat()
            except OSError as err:
                raise _unreadable(file, what, err) from None
            if not stat.S_ISREG(info.st_mode):
                raise _not_regular(file, f"{what}'s file", info.st_mode)
            total += info.st_size
            if total > limit:
                raise over_folder_limit(root, what, limit, flag)
    return total


def over_folder_limit(root: Path, what: str, limit: int, flag: str | None = FLAG) -> FileLimitError:
    """The error for a folder whose files together are larger than ``limit``."""
    size = _folder_size(root)
    return FileLimitError(
        f"{what} {root} holds {format_size(size)} of files, over the {format_size(limit)} limit",
        f"pass {flag} {_suggested_flag(size)} (or more) to read it"
        if flag
        else f"check that {root} is the right folder",
    )


def _raise(root: Path, what: str) -> Callable[[OSError], None]:
    def on_error(err: OSError) -> None:
        raise _unreadable(Path(err.filename or root), what, err)

    return on_error


def _folder_size(root: Path) -> int:
    """Total bytes of the regular files under ``root`` (for the suggested flag value only)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += (Path(dirpath) / name).stat().st_size
            except OSError:
                continue
    return total
