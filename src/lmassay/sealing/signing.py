"""Seal a model folder, a dataset or a file: an OpenSSF model-signing bundle, plus lmassay's tensors.

The signature file is written by model_signing's public API (``model_signing.signing.Config`` with
an elliptic-curve key and a ``model_signing.hashing.Config``), so it is exactly what
``model_signing sign key`` writes: a Sigstore bundle holding a DSSE envelope around an in-toto
statement of predicate type ``https://model_signing/signature/v1.0`` (files, their SHA-256 and the
root digest as subject).

That API signs the file manifest only, with no room for more fields.  The per-tensor digests of the
sealed ``.safetensors`` files therefore go into a second statement beside the signature, signed
with the same key: see :mod:`~lmassay.sealing.tensor_statement`.  Both signature files are left out
of the manifest when they lie inside the sealed folder (recorded in its ``ignore_paths``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.sealing.dsse import read_bundle, subject_digest, write_signature
from lmassay.sealing.keys import private_key_fingerprint
from lmassay.sealing.manifest import (
    Manifest,
    add_tensor_digests,
    check_sealable,
    hashing_config,
    manifest_from_predicate,
    relative_ignores,
)
from lmassay.sealing.tensor_statement import tensor_statement_path, write_tensor_statement

#: model_signing's predicate type for a model (or dataset, or file) signature.
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"


@dataclass(frozen=True)
class SealResult:
    """A written signature: what was sealed, where the signature is, by whom, and the manifest."""

    path: Path
    signature: Path
    manifest: Manifest
    signer: str
    kind: str = "model"  # "model" (folder, dataset or file) or "attestation"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "signature": str(self.signature),
            "signer": self.signer,
            "root": str(self.manifest.root),
            "n_files": len(self.manifest.files),
            "n_tensors": None if self.manifest.tensors is None else len(self.manifest.tensors),
        }


def default_signature_path(path: Path) -> Path:
    """``FOLDER/model.sig`` for a folder (model_signing's name), ``FILE.sig`` beside a file."""
    return path / "model.sig" if path.is_dir() else path.with_name(path.name + ".sig")


def check_signature_target(path: Path, signature: Path) -> None:
    """Refuse a signature path that is a folder or the sealed file itself."""
    if signature.is_dir():
        raise InputError(f"--out {signature} is a folder", "give a file path for the signature")
    if path.is_file() and signature.resolve() == path.resolve():
        raise InputError("--out is the file being sealed", "write the signature to another path")


def _sign_with_model_signing(
    target: Path, private_key: str | os.PathLike[str], ignores: list[str], allow_symlinks: bool
) -> tuple[str, Manifest]:
    """Sign ``target`` through model_signing's public API; return the bundle and its manifest.

    The bundle is written to a temporary folder outside ``target`` (so that it is not hashed) and
    its signed statement is read back: the manifest returned is exactly what was signed.
    """
    from model_signing import signing

    config = signing.Config().use_elliptic_key_signer(private_key=Path(private_key))
    config.set_hashing_config(hashing_config(ignores, allow_symlinks=allow_symlinks))
    with tempfile.TemporaryDirectory(prefix="lmassay-seal-") as tmp:
        written = Path(tmp) / "model.sig"
        try:
            config.sign(target, written)
        except ValueError as exc:  # model_signing reports links and special files this way
            raise InputError(str(exc), "seal a folder of regular files (copy links first)") from exc
        bundle = read_bundle(written)
        statement = bundle.statement()
    root = subject_digest(statement)
    name = str(statement["subject"][0].get("name") or target.name)
    manifest = manifest_from_predicate(name, statement["predicate"])
    if manifest.root != root:
        raise RuntimeError("model_signing signed a subject that does not match its resources")
    return bundle.raw.decode("utf-8"), manifest


def seal(
    path: str | os.PathLike[str],
    private_key: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    with_tensors: bool = True,
    allow_symlinks: bool = False,
    progress: Progress | None = None,
) -> SealResult:
    """Hash ``path`` (folder or file), sign its manifest with ``private_key``, write the bundle.

    The signature goes to ``out`` (default :func:`default_signature_path`), the tensor statement
    beside it (:func:`~lmassay.sealing.tensor_statement.tensor_statement_path`; written when
    ``with_tensors`` and there is at least one tensor, removed otherwise so that no stale one
    remains). ``allow_symlinks``: follow links (a hub snapshot), as :func:`hashing_config` says.
    """
    progress = progress or NullProgress()
    target = Path(path)
    check_sealable(target)
    signature_path = Path(out) if out is not None else default_signature_path(target)
    check_signature_target(target, signature_path)
    tensors_path = tensor_statement_path(signature_path)
    check_signature_target(target, tensors_path)
    signer = private_key_fingerprint(private_key)
    ignores = relative_ignores(target, [signature_path, tensors_path])
    progress.log(f"hashing {target} and signing with {signer}")
    bundle_json, manifest = _sign_with_model_signing(target, private_key, ignores, allow_symlinks)
    if with_tensors:
        manifest = add_tensor_digests(manifest, target, progress)
    write_signature(signature_path, bundle_json)
    if manifest.tensors:
        write_tensor_statement(tensors_path, manifest, private_key)
    elif tensors_path.is_file():
        tensors_path.unlink()
    return SealResult(target, signature_path, manifest, signer, kind="model")
