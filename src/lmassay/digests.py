"""Content digests of files, folders and byte strings, and the one identity of a model.

**A model's identity** (:func:`model_identity`) is the root digest of its model_signing manifest,
the same digest ``model_signing sign`` (and ``lmassay seal``) puts in a signature's subject::

    sha256( raw SHA-256 of each file, concatenated in sorted POSIX-path order )

over every regular file of the folder except git paths (``.git/``, ``.gitattributes``, ``.github/``,
``.gitignore``) and the default signature files ``model.sig`` and ``model.tensors.sig``.  Symbolic
links are followed, so a Hugging Face cache snapshot (links into ``blobs/``) is named by the
content of the resolved files.  attestation.json records it as ``model.digest`` and
``reference.digest``; the registry and signed statements use the same value.

**The legacy "tree" digest** (:func:`digest_entries`, :func:`digest_tree`) is what attestations
written by lmassay 0.1 recorded, and what derived folders (world, zoo, edits) still record::

    sha256( for each file, sorted by POSIX relative path:  "<relpath>\\0<hex sha256 of file>\\n" )

over the files whose path has no hidden component.  :class:`ModelIdentity` computes both from one
hashing pass, so older attestations and registry rows are still recognised.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
#: Signature files lmassay and model_signing write into a sealed folder by default.
SIGNATURE_FILES = ("model.sig", "model.tensors.sig")


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


def root_digest(file_digests: Iterable[tuple[str, str]]) -> Digest:
    """model_signing's root: SHA-256 over the raw file digests (hex given), in sorted path order."""
    hasher = hashlib.sha256()
    for _, value in sorted(file_digests):
        hasher.update(bytes.fromhex(value))
    return Digest("sha256", hasher.hexdigest())


@dataclass(frozen=True)
class ModelIdentity:
    """One hashing pass over a model folder (or file): its identity and the legacy tree digest."""

    root: Digest  # the model_signing manifest root: the one identity
    files: tuple[tuple[str, Digest], ...]  # (relative path, digest) of what ``root`` covers
    legacy_tree: Digest  # lmassay 0.1's tree digest over every non-hidden file

    @property
    def names(self) -> list[str]:
        return [path for path, _ in self.files]

    def names_model(self, recorded: str, recorded_files: Sequence[str] | None = None) -> bool:
        """Whether a recorded digest value names these files: the root, or a legacy tree digest
        (over ``recorded_files`` when an old attestation lists them, else every non-hidden file)."""
        if recorded == self.root.value:
            return True
        if recorded_files is None:
            return recorded == self.legacy_tree.value
        known = dict(self.files)
        if any(name not in known for name in recorded_files):
            return False
        return recorded == digest_entries((name, known[name]) for name in recorded_files).value


def model_identity(path: str | os.PathLike[str]) -> ModelIdentity:
    """Hash ``path`` with model_signing (links followed); :class:`InputError` for special files."""
    from model_signing import hashing

    from lmassay.errors import InputError

    target = Path(path)
    try:
        manifest = hashing.Config().set_allow_symlinks(True).hash(target)
    except ValueError as exc:  # model_signing's report of a broken link or a special file
        raise InputError(str(exc), "give a folder of regular files (or links to them)") from exc
    entries = sorted(
        (rd.identifier, Digest(rd.digest.algorithm, rd.digest.digest_hex))
        for rd in manifest.resource_descriptors()
    )
    covered = tuple((p, d) for p, d in entries if not (target.is_dir() and p in SIGNATURE_FILES))
    visible = ((p, d) for p, d in entries if not any(part.startswith(".") for part in p.split("/")))
    return ModelIdentity(
        root=root_digest((p, d.value) for p, d in covered),
        files=covered,
        legacy_tree=digest_entries(visible),
    )
