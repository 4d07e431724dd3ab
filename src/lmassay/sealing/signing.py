"""Seal a model folder, a dataset or a file: an OpenSSF model-signing bundle with lmassay's tensors.

The signature file is exactly what ``model_signing sign key`` writes — a Sigstore bundle
(``application/vnd.dev.sigstore.bundle.v0.3+json``) holding a DSSE envelope around an in-toto
statement of predicate type ``https://model_signing/signature/v1.0`` — produced by model_signing's
own hashing, payload and EC-key signer.  lmassay adds one key to the predicate::

    "lmassay": {"schema": "lmassay.tensors/v1", "tool_version": "...", "tensors": [...]}

model_signing's verifier reads only ``serialization`` and ``resources`` from the predicate (its v1.0
format says other fields are ignored), so ``model_signing verify key`` accepts an lmassay seal, while
the tensor digests sit inside the same signed payload: nobody can alter them without breaking the
signature.  (A second statement would be a second file to keep together with the first.)

model_signing's stable API signs a folder in one call and has no hook for extra predicate fields, so
this module uses two of its internal classes, ``_signing.signing.Payload`` and
``_signing.sign_ec_key.Signer`` (model-signing is pinned to ``>=1.1,<2``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay import __version__
from lmassay._atomic import atomic_write_text
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.sealing.keys import load_private_key, private_key_fingerprint
from lmassay.sealing.manifest import Manifest, build_manifest, check_sealable, relative_ignores

EXTENSION_KEY = "lmassay"
TENSORS_SCHEMA = "lmassay.tensors/v1"
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


def write_signature(path: Path, bundle_json: str) -> None:
    """Write a bundle atomically, readable by all (0644): a signature is meant to be shared."""
    atomic_write_text(path, bundle_json)
    os.chmod(path, 0o644)


class _StatementPayload:
    """A ready in-toto statement in the shape model_signing's signers expect (``.statement.pb``)."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement


def sign_statement(statement: Any, private_key: str | os.PathLike[str]) -> str:
    """Sign an ``in_toto_attestation`` statement with an EC key; return the bundle as JSON text."""
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    load_private_key(private_key)  # one-line errors for a missing or unusable key
    signer = sign_ec_key.Signer(Path(private_key))
    signature = signer.sign(_StatementPayload(statement))  # type: ignore[arg-type]
    if not isinstance(signature, sign_sigstore_pb.Signature):
        raise TypeError(f"model_signing returned an unexpected {type(signature).__name__}")
    return str(signature.bundle.to_json())


def seal(
    path: str | os.PathLike[str],
    private_key: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    with_tensors: bool = True,
    progress: Progress | None = None,
) -> SealResult:
    """Hash ``path`` (folder or file), sign the manifest with ``private_key``, write the bundle.

    The signature goes to ``out`` (default :func:`default_signature_path`); when it lies inside the
    sealed folder it is left out of the manifest and recorded as ignored, as model_signing does.
    """
    from model_signing._signing import signing as ms_signing

    progress = progress or NullProgress()
    target = Path(path)
    check_sealable(target)
    signature_path = Path(out) if out is not None else default_signature_path(target)
    check_signature_target(target, signature_path)
    signer = private_key_fingerprint(private_key)
    ignores = relative_ignores(target, [signature_path])
    manifest, ms_manifest = build_manifest(
        target, ignore_paths=ignores, with_tensors=with_tensors, progress=progress
    )
    payload = ms_signing.Payload(ms_manifest)
    payload.statement.pb.predicate.update(
        {
            EXTENSION_KEY: {
                "schema": TENSORS_SCHEMA,
                "tool_version": __version__,
                "tensors": None
                if manifest.tensors is None
                else [t.to_json() for t in manifest.tensors],
            }
        }
    )
    progress.log(f"signing with {signer}")
    write_signature(signature_path, sign_statement(payload.statement, private_key))
    return SealResult(target, signature_path, manifest, signer, kind="model")
