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
tensor that changed inside a changed file.  A signed manifest is read back from a statement's
predicate by :func:`manifest_from_predicate` (model_signing's ``serialization`` and ``resources``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmassay.attest.checkpoint_reader import DAMAGED_FIX
from lmassay.digests import SIGNATURE_FILES, Digest, ModelIdentity, root_digest
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


def hashing_config(
    ignore_paths: Sequence[str | os.PathLike[str]] = (), *, allow_symlinks: bool = False
) -> Any:
    """The ``model_signing.hashing.Config`` lmassay uses: files, SHA-256, git paths ignored;
    symbolic links refused unless ``allow_symlinks`` (a hub snapshot's files are links into the
    cache's blobs: they are followed and their targets hashed; the manifest records it)."""
    from model_signing import hashing

    config = hashing.Config().set_ignored_paths(
        paths=[Path(p) for p in ignore_paths], ignore_git_paths=True
    )
    if allow_symlinks:
        config.use_file_serialization(allow_symlinks=True)
        config.set_allow_symlinks(True)
    return config


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


def add_tensor_digests(
    manifest: Manifest, target: Path, progress: Progress | None = None
) -> Manifest:
    """``manifest`` with the tensor digests of its ``.safetensors`` files (read from ``target``)."""
    progress = progress or NullProgress()
    if target.is_file():
        shards = ["."] if target.suffix == ".safetensors" else []
    else:
        shards = [f.path for f in manifest.files if f.path.endswith(".safetensors")]
    tensors: list[TensorEntry] = []
    update = progress.task("hashing tensors", len(shards))
    for done, name in enumerate(shards, start=1):
        tensors.extend(safetensors_tensor_digests(target if name == "." else target / name, name))
        update(done, len(shards))
    return replace(manifest, tensors=tuple(tensors))


def build_manifest(
    path: str | os.PathLike[str],
    *,
    ignore_paths: Sequence[str] = (),
    tensors: bool = True,
    progress: Progress | None = None,
) -> Manifest:
    """Hash ``path`` (a folder or one file) with model_signing; add tensor digests if ``tensors``.

    ``ignore_paths`` are relative to the folder (signature files, when they lie inside).
    """
    progress = progress or NullProgress()
    target = Path(path)
    progress.log(f"hashing {target}")
    ms_manifest = model_signing_manifest(target, ignore_paths)
    predicate = {
        "serialization": dict(ms_manifest.serialization_type),
        "resources": [
            {
                "name": rd.identifier,
                "algorithm": rd.digest.algorithm,
                "digest": rd.digest.digest_hex,
            }
            for rd in ms_manifest.resource_descriptors()
        ],
    }
    manifest = manifest_from_predicate(ms_manifest.model_name, predicate)
    return add_tensor_digests(manifest, target, progress) if tensors else manifest


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where tensor data starts.

    A damaged header (too short, an implausible length, not a JSON object, nested too deeply) is
    an :class:`InputError` naming ``path`` with :data:`DAMAGED_FIX`.
    """
    with open(path, "rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) != 8:
            raise InputError(
                f"{path} is not a safetensors file (shorter than 8 bytes)", DAMAGED_FIX
            )
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > _SAFETENSORS_HEADER_LIMIT:
            raise InputError(f"{path} has an implausible safetensors header length", DAMAGED_FIX)
        raw_header = handle.read(header_len)
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path} has an unreadable safetensors header ({exc})", DAMAGED_FIX
        ) from exc
    except RecursionError as exc:  # a header nested thousands of levels deep
        raise InputError(f"{path} has a safetensors header nested too deeply", DAMAGED_FIX) from exc
    if not isinstance(header, dict):
        raise InputError(f"{path} has a safetensors header that is not an object", DAMAGED_FIX)
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


def manifest_from_predicate(
    name: str, predicate: Any, tensors: tuple[TensorEntry, ...] | None = None
) -> Manifest:
    """The manifest a signed predicate carries: model_signing's ``resources`` and ``serialization``
    (the v1.0 predicate, and the ``model`` part of an lmassay attestation statement)."""
    try:
        files = tuple(
            FileEntry(str(r["name"]), Digest(str(r["algorithm"]), str(r["digest"])))
            for r in predicate["resources"]
        )
        serialization = dict(predicate.get("serialization") or {})
        ignores = tuple(str(p) for p in serialization.get("ignore_paths") or GIT_PATHS)
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"the signed manifest is malformed ({exc})", "re-seal") from exc
    return Manifest(
        name=name,
        files=files,
        root=root_digest((f.path, f.digest.value) for f in files),
        tensors=tensors,
        ignore_paths=tuple(sorted(set(ignores))),
        serialization=serialization,
    )


def identity_manifest(name: str, identity: ModelIdentity) -> Manifest:
    """The manifest of a :func:`lmassay.digests.model_identity` pass (links followed, the default
    signature files left out), in model_signing's terms so that a verifier re-hashes the same way."""
    ignores = sorted({*GIT_PATHS, *SIGNATURE_FILES})
    serialization = {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": True,
        "ignore_paths": ignores,
    }
    return Manifest(
        name=name,
        files=tuple(FileEntry(path, digest) for path, digest in identity.files),
        root=identity.root,
        ignore_paths=tuple(ignores),
        serialization=serialization,
    )
