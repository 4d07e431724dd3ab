"""Manifests of model folders, datasets and single files: a digest per file, per tensor, and a root.

The file part is computed by ``model_signing`` itself (the OpenSSF model signing library), so the
digests and the root agree with what ``model_signing sign`` writes for the same folder:

* one SHA-256 per regular file, named by its POSIX path relative to the folder (``"."`` when the
  sealed path is a single file);
* ignored: ``.git/``, ``.gitattributes``, ``.github/``, ``.gitignore`` and the signature file itself
  when it lies inside the folder (model_signing's defaults);
* the **root digest** is model_signing's: SHA-256 over the concatenated raw file digests in sorted
  path order.  It does not cover the names, so a verifier always compares the full file list too.

lmassay adds a digest per tensor of every ``.safetensors`` file: SHA-256 of the tensor's raw bytes as
stored (the header names the dtype, the shape and the byte range).  They let a verifier name the
tensor that changed inside a changed file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmassay.digests import Digest
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress

MANIFEST_SCHEMA = "lmassay.manifest/v1"
#: Paths model_signing leaves out of a manifest by default (``ignore_git_paths=True``).
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
_SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest: its path relative to the sealed folder and its digest."""

    path: str
    digest: Digest

    def to_json(self) -> dict[str, str]:
        return {"name": self.path, "algorithm": self.digest.algorithm, "digest": self.digest.value}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a ``.safetensors`` file: dtype and shape as stored, digest of its raw bytes."""

    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: Digest

    @property
    def key(self) -> str:
        """``file:tensor`` — unique within a manifest."""
        return f"{self.file}:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "digest": self.digest.value,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TensorEntry:
        return cls(
            file=str(obj["file"]),
            name=str(obj["name"]),
            dtype=str(obj["dtype"]),
            shape=tuple(int(n) for n in obj["shape"]),  # JSON via protobuf Struct gives floats
            digest=Digest("sha256", str(obj["digest"])),
        )


@dataclass(frozen=True)
class Manifest:
    """What was sealed: files, tensors (``None`` when not recorded) and the root digest."""

    name: str
    files: tuple[FileEntry, ...]
    root: Digest
    tensors: tuple[TensorEntry, ...] | None = None
    ignore_paths: tuple[str, ...] = GIT_PATHS
    serialization: dict[str, Any] = field(default_factory=dict)

    def file_digests(self) -> dict[str, str]:
        return {entry.path: entry.digest.value for entry in self.files}

    def tensors_of(self, file: str) -> dict[str, TensorEntry]:
        return {t.name: t for t in self.tensors or () if t.file == file}

    def to_json(self) -> dict[str, Any]:
        """The manifest as lmassay writes it (``--manifest`` output and the golden files)."""
        return {
            "schema": MANIFEST_SCHEMA,
            "name": self.name,
            "root": self.root.to_json(),
            "ignore_paths": sorted(self.ignore_paths),
            "files": [entry.to_json() for entry in self.files],
            "tensors": None if self.tensors is None else [t.to_json() for t in self.tensors],
        }


def root_digest(file_digests: Iterable[tuple[str, str]]) -> Digest:
    """model_signing's root: SHA-256 over the raw digests, concatenated in sorted path order."""
    hasher = hashlib.sha256()
    for _, value in sorted(file_digests):
        hasher.update(bytes.fromhex(value))
    return Digest("sha256", hasher.hexdigest())


def hashing_config(ignore_paths: Sequence[str | os.PathLike[str]] = ()) -> Any:
    """The ``model_signing.hashing.Config`` lmassay uses: files, SHA-256, git paths ignored."""
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(
        paths=[Path(p) for p in ignore_paths], ignore_git_paths=True
    )


def relative_ignores(path: Path, candidates: Iterable[str | os.PathLike[str] | None]) -> list[str]:
    """The candidates that lie inside folder ``path``, relative to it (others are dropped)."""
    if not path.is_dir():
        return []
    root = path.resolve()
    found: list[str] = []
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            found.append(Path(candidate).resolve().relative_to(root).as_posix())
        except ValueError:
            continue
    return found


def check_sealable(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is an existing regular file or folder."""
    if path.is_symlink():
        raise InputError(f"{path} is a symbolic link", "seal the folder or file it points to")
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{path} does not exist", "give a model folder, a dataset or a file")


def model_signing_manifest(path: Path, ignore_paths: Sequence[str] = ()) -> Any:
    """Hash ``path`` with model_signing (its ``Manifest``); symlinks are refused, as there."""
    check_sealable(path)
    try:
        return hashing_config(ignore_paths).hash(path)
    except ValueError as exc:  # model_signing reports symlinks and special files this way
        raise InputError(str(exc), "seal a folder of regular files (copy links first)") from exc


def from_model_signing(
    ms_manifest: Any, *, ignore_paths: Sequence[str] = (), tensors: Sequence[TensorEntry] | None
) -> Manifest:
    """Convert a ``model_signing.manifest.Manifest`` (plus lmassay's tensors) to a :class:`Manifest`."""
    files = tuple(
        FileEntry(rd.identifier, Digest(rd.digest.algorithm, rd.digest.digest_hex))
        for rd in ms_manifest.resource_descriptors()
    )
    serialization = dict(ms_manifest.serialization_type)
    recorded = serialization.get("ignore_paths") or [*GIT_PATHS, *ignore_paths]
    return Manifest(
        name=ms_manifest.model_name,
        files=files,
        root=root_digest((f.path, f.digest.value) for f in files),
        tensors=None if tensors is None else tuple(tensors),
        ignore_paths=tuple(sorted({str(p) for p in recorded})),
        serialization=serialization,
    )


def build_manifest(
    path: str | os.PathLike[str],
    *,
    ignore_paths: Sequence[str] = (),
    with_tensors: bool = True,
    progress: Progress | None = None,
) -> tuple[Manifest, Any]:
    """Hash ``path`` (a folder or one file); return lmassay's manifest and model_signing's.

    ``ignore_paths`` are relative to the folder (the signature file, when it lies inside).  Tensor
    digests are computed for every ``*.safetensors`` file when ``with_tensors``.
    """
    progress = progress or NullProgress()
    target = Path(path)
    progress.log(f"hashing {target}")
    ms_manifest = model_signing_manifest(target, ignore_paths)
    tensors: list[TensorEntry] | None = None
    if with_tensors:
        tensors = []
        names = [rd.identifier for rd in ms_manifest.resource_descriptors()]
        if target.is_file():
            shards = ["."] if target.suffix == ".safetensors" else []
        else:
            shards = [n for n in names if n.endswith(".safetensors")]
        update = progress.task("hashing tensors", len(shards))
        for done, name in enumerate(shards, start=1):
            file_path = target if name == "." else target / name
            tensors.extend(safetensors_tensor_digests(file_path, name))
            update(done, len(shards))
    manifest = from_model_signing(ms_manifest, ignore_paths=ignore_paths, tensors=tensors)
    return manifest, ms_manifest


def folder_digests(path: str | os.PathLike[str]) -> tuple[Digest, Digest]:
    """One hashing pass, two names for a folder or file as the registry records them.

    * the manifest root (model_signing's), with a ``model.sig`` inside left out, as when the folder
      was sealed with the default ``--out``;
    * lmassay's tree digest (:func:`lmassay.digests.digest_tree`: every file whose path has no
      hidden component), the ``model.digest`` that attestation.json records.
    """
    from lmassay.digests import digest_entries

    target = Path(path)
    ms_manifest = model_signing_manifest(target)
    entries = [(rd.identifier, rd.digest.digest_hex) for rd in ms_manifest.resource_descriptors()]
    sealed = [(p, d) for p, d in entries if not (target.is_dir() and p == "model.sig")]
    if target.is_file():
        tree = digest_entries([(target.name, Digest("sha256", entries[0][1]))])
    else:
        tree = digest_entries(
            (p, Digest("sha256", d))
            for p, d in entries
            if not any(part.startswith(".") for part in p.split("/"))
        )
    return root_digest(sealed), tree


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where tensor data starts."""
    with open(path, "rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) != 8:
            raise InputError(f"{path} is not a safetensors file (shorter than 8 bytes)", "")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _SAFETENSORS_HEADER_LIMIT:
            raise InputError(f"{path} has an implausible safetensors header length", "")
        raw_header = handle.read(header_len)
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} has an unreadable safetensors header ({exc})", "") from exc
    if not isinstance(header, dict):
        raise InputError(f"{path} has a safetensors header that is not an object", "")
    return header, 8 + header_len


def safetensors_tensor_digests(path: Path, file_name: str) -> list[TensorEntry]:
    """SHA-256 of each tensor's stored bytes, in name order (``__metadata__`` skipped)."""
    header, data_start = read_safetensors_header(path)
    entries: list[TensorEntry] = []
    with open(path, "rb") as handle:
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            try:
                begin, end = (int(x) for x in info["data_offsets"])
                dtype, shape = str(info["dtype"]), tuple(int(n) for n in info["shape"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(
                    f"{path}: tensor {name!r} has a malformed header entry", ""
                ) from exc
            hasher = hashlib.sha256()
            handle.seek(data_start + begin)
            remaining = end - begin
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise InputError(f"{path}: tensor {name!r} runs past the end of the file", "")
                hasher.update(chunk)
                remaining -= len(chunk)
            entries.append(
                TensorEntry(file_name, name, dtype, shape, Digest("sha256", hasher.hexdigest()))
            )
    return entries


def tensors_from_json(rows: Any) -> tuple[TensorEntry, ...] | None:
    """Parse a signed tensor list; ``None`` stays ``None`` (no tensor detail was sealed)."""
    if rows is None:
        return None
    if not isinstance(rows, list):
        raise InputError("the signed tensor list is not a list", "re-seal with lmassay seal")
    try:
        return tuple(TensorEntry.from_json(row) for row in rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"a signed tensor entry is malformed ({exc})", "re-seal") from exc
