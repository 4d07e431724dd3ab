"""Content digests of files, folders and byte strings.

A folder's digest is SHA-256 over its sorted relative paths and their file
digests, so it names the content and not where it is stored::

    sha256( for each file, sorted by POSIX relative path:  "<relpath>\\0<hex sha256 of file>\\n" )
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    """A typed digest: the algorithm and the hex value."""

    algorithm: str
    value: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"

    def to_json(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "value": self.value}


def digest_bytes(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def digest_file(path: str | os.PathLike[str]) -> Digest:
    """SHA-256 of one file, read in 1 MiB chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return Digest("sha256", hasher.hexdigest())


def digest_entries(entries: Iterable[tuple[str, Digest]]) -> Digest:
    """Root digest over ``(relative path, file digest)`` pairs, sorted by path."""
    hasher = hashlib.sha256()
    for rel, file_digest in sorted(entries):
        hasher.update(rel.encode("utf-8") + b"\0" + file_digest.value.encode("ascii") + b"\n")
    return Digest("sha256", hasher.hexdigest())


def list_files(root: str | os.PathLike[str]) -> list[str]:
    """Relative POSIX paths of the regular files under ``root``, sorted; hidden entries skipped."""
    base = Path(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                found.append(full.relative_to(base).as_posix())
    return sorted(found)


def digest_tree(root: str | os.PathLike[str], files: Iterable[str] | None = None) -> Digest:
    """Digest of a folder (or of the given relative ``files`` inside it)."""
    base = Path(root)
    names = sorted(files) if files is not None else list_files(base)
    return digest_entries((rel, digest_file(base / rel)) for rel in names)
