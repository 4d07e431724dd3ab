"""Verify a seal or a signed attestation statement against a folder or file.

Steps: read the Sigstore bundle; check the DSSE signature with the public key (model_signing's EC-key
verifier, which also checks the bundle's key hint); read the signed in-toto statement; re-hash the
path with the hashing settings the statement records; compare.  A failure lists missing, extra,
renamed and changed files and, for changed ``.safetensors`` files whose tensor digests were sealed,
the changed, missing and extra tensors.

Two statement kinds are recognised:

* ``https://model_signing/signature/v1.0`` (and its v0.1 predecessor) — a seal by ``lmassay seal`` or
  by ``model_signing sign``; tensor detail only when lmassay's extension is present;
* ``https://lmassay.dev/attestation/v1`` — an attestation statement: the path must be the model
  folder the attestation is about; its subject is that folder's manifest root digest.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmassay.digests import Digest
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.sealing.keys import load_public_key, public_key_fingerprint
from lmassay.sealing.manifest import (
    Manifest,
    TensorEntry,
    check_sealable,
    from_model_signing,
    relative_ignores,
    root_digest,
    safetensors_tensor_digests,
    tensors_from_json,
)
from lmassay.sealing.signing import EXTENSION_KEY, MODEL_SIGNING_PREDICATE
from lmassay.sealing.statement import ATTESTATION_PREDICATE, manifest_from_predicate

_MODEL_SIGNING_COMPAT = "https://model_signing/Digests/v0.1"
_IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"


@dataclass
class ManifestDiff:
    """How the files (and tensors) on disk differ from the signed manifest."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    changed_tensors: list[str] = field(default_factory=list)
    missing_tensors: list[str] = field(default_factory=list)
    extra_tensors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.renamed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "missing_files": self.missing,
            "extra_files": self.extra,
            "renamed_files": [{"from": a, "to": b} for a, b in self.renamed],
            "changed_files": self.changed,
            "changed_tensors": self.changed_tensors,
            "missing_tensors": self.missing_tensors,
            "extra_tensors": self.extra_tensors,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """One line per finding, for the terminal."""
        out = [f"missing file: {p}" for p in self.missing]
        out += [f"extra file: {p}" for p in self.extra]
        out += [f"renamed file: {a} -> {b}" for a, b in self.renamed]
        out += [f"changed file: {p}" for p in self.changed]
        out += [f"changed tensor: {t}" for t in self.changed_tensors]
        out += [f"missing tensor: {t}" for t in self.missing_tensors]
        out += [f"extra tensor: {t}" for t in self.extra_tensors]
        return out


@dataclass
class VerifyResult:
    """The answer of :func:`verify`: is the signature good, and does the content match it?"""

    path: Path
    signature: Path
    kind: str  # "model" or "attestation"
    signer: str  # fingerprint of the public key that was checked
    signature_valid: bool
    reason: str | None = None  # why the signature itself failed
    signed_root: Digest | None = None
    actual_root: Digest | None = None
    diff: ManifestDiff | None = None
    tensor_detail: bool = False
    notes: list[str] = field(default_factory=list)
    predicate: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return (
            self.signature_valid
            and self.diff is not None
            and self.diff.clean
            and self.signed_root == self.actual_root
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.valid else 1

    @property
    def verdict(self) -> str:
        return "valid" if self.valid else "invalid"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "kind": self.kind,
            "path": str(self.path),
            "signature": str(self.signature),
            "signer": self.signer,
            "signature_valid": self.signature_valid,
            "reason": self.reason,
            "signed_root": str(self.signed_root) if self.signed_root else None,
            "actual_root": str(self.actual_root) if self.actual_root else None,
            "tensor_detail": self.tensor_detail,
            "diff": self.diff.to_json() if self.diff else None,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class _Signed:
    """The content of a verified bundle."""

    kind: str
    manifest: Manifest
    subject_root: Digest
    predicate: dict[str, Any]


def read_bundle_payload(
    signature: Path, public_key: Path
) -> tuple[dict[str, Any] | None, str | None]:
    """Check the bundle's signature; return (statement, None) or (None, reason it failed).

    Raises :class:`InputError` when the file is not a readable bundle at all.
    """
    from cryptography.exceptions import InvalidSignature
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    if not signature.is_file():
        raise InputError(
            f"signature {signature} does not exist", "give the .sig file written by seal"
        )
    load_public_key(public_key)
    try:
        bundle = sign_sigstore_pb.Signature.read(signature)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{signature} is not a Sigstore bundle ({type(exc).__name__}: {exc})",
            "give a signature written by lmassay seal or model_signing sign key",
        ) from exc
    if bundle.bundle.media_type != sign_sigstore_pb._BUNDLE_MEDIA_TYPE:
        raise InputError(
            f"{signature} has bundle media type {bundle.bundle.media_type!r}",
            "only key-signed bundles (v0.3) are supported",
        )
    try:
        payload_type, payload = sign_ec_key.Verifier(public_key)._verify_signed_content(bundle)
    except InvalidSignature:
        return None, "the signature does not verify with this public key"
    except ValueError as exc:  # model_signing's key-hint mismatch
        return None, " ".join(str(exc).split())
    if payload_type != "application/vnd.in-toto+json":
        raise InputError(
            f"{signature} signs a {payload_type!r} payload", "expected an in-toto statement"
        )
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{signature}: the signed payload is not JSON", "") from exc
    if not isinstance(statement, dict) or statement.get("_type") != _IN_TOTO_STATEMENT:
        raise InputError(f"{signature}: the signed payload is not an in-toto v1 statement", "")
    return statement, None


def _subject_root(statement: dict[str, Any]) -> Digest:
    try:
        return Digest("sha256", str(statement["subject"][0]["digest"]["sha256"]))
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError("the signed statement has no sha256 subject", "") from exc


def _signed_content(statement: dict[str, Any]) -> _Signed:
    """Turn a verified statement into the manifest it vouches for."""
    from model_signing._signing import signing as ms_signing

    predicate_type = statement.get("predicateType")
    predicate = statement.get("predicate") or {}
    if predicate_type in (MODEL_SIGNING_PREDICATE, _MODEL_SIGNING_COMPAT):
        try:
            ms_manifest = ms_signing.dsse_payload_to_manifest(statement)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"the signed manifest is inconsistent ({exc})", "re-seal the model"
            ) from exc
        extension = predicate.get(EXTENSION_KEY) if isinstance(predicate, dict) else None
        tensors = (
            tensors_from_json(extension.get("tensors")) if isinstance(extension, dict) else None
        )
        manifest = from_model_signing(ms_manifest, tensors=tensors)
        subject = (
            _subject_root(statement) if predicate_type == MODEL_SIGNING_PREDICATE else manifest.root
        )
        return _Signed("model", manifest, subject, predicate)
    if predicate_type == ATTESTATION_PREDICATE:
        manifest = manifest_from_predicate(predicate)
        return _Signed("attestation", manifest, _subject_root(statement), predicate)
    raise InputError(
        f"the signed statement has predicate type {predicate_type!r}",
        "give a model signature or an lmassay attestation statement",
    )


def _rehash(path: Path, manifest: Manifest, extra_ignores: list[str]) -> Any:
    """Hash ``path`` the way the signed manifest says it was hashed (a model_signing Manifest)."""
    from model_signing import hashing

    args = manifest.serialization
    config = hashing.Config()
    if args.get("method", "files") == "shards":
        config.use_shard_serialization(
            hashing_algorithm=args.get("hash_type", "sha256"),
            shard_size=int(args["shard_size"]),
            allow_symlinks=bool(args.get("allow_symlinks", False)),
        )
    else:
        config.use_file_serialization(
            hashing_algorithm=args.get("hash_type", "sha256"),
            allow_symlinks=bool(args.get("allow_symlinks", False)),
        )
    ignores = [*manifest.ignore_paths, *extra_ignores] if path.is_dir() else []
    config.set_ignored_paths(paths=[Path(p) for p in ignores], ignore_git_paths=True)
    config.set_allow_symlinks(bool(args.get("allow_symlinks", False)))
    try:
        return config.hash(path)
    except ValueError as exc:
        raise InputError(str(exc), "verify a folder of regular files") from exc


def compare_manifests(expected: Manifest, actual: dict[str, str], folder: Path) -> ManifestDiff:
    """Files on disk (``actual``: name → hex digest) against the signed manifest."""
    signed = expected.file_digests()
    diff = ManifestDiff()
    missing = sorted(set(signed) - set(actual))
    extra = sorted(set(actual) - set(signed))
    for name in list(missing):  # a file whose content reappears under a new name: a rename
        twin = next((e for e in extra if actual[e] == signed[name]), None)
        if twin is not None:
            diff.renamed.append((name, twin))
            missing.remove(name)
            extra.remove(twin)
    diff.missing, diff.extra = missing, extra
    diff.changed = sorted(n for n in set(signed) & set(actual) if signed[n] != actual[n])
    if expected.tensors is not None:
        for name in diff.changed:
            if name.endswith(".safetensors") or (name == "." and folder.suffix == ".safetensors"):
                _compare_tensors(expected, name, folder if name == "." else folder / name, diff)
    return diff


def _compare_tensors(expected: Manifest, file: str, path: Path, diff: ManifestDiff) -> None:
    signed = expected.tensors_of(file)
    try:
        now = {t.name: t for t in safetensors_tensor_digests(path, file)}
    except InputError as exc:
        diff.notes.append(f"{file}: tensors cannot be compared ({exc.what})")
        return

    def same(a: TensorEntry, b: TensorEntry) -> bool:
        return (a.digest, a.dtype, a.shape) == (b.digest, b.dtype, b.shape)

    changed = sorted(n for n in set(signed) & set(now) if not same(signed[n], now[n]))
    diff.changed_tensors += [f"{file}:{n}" for n in changed]
    diff.missing_tensors += [f"{file}:{n}" for n in sorted(set(signed) - set(now))]
    diff.extra_tensors += [f"{file}:{n}" for n in sorted(set(now) - set(signed))]
    if not changed and set(signed) == set(now):
        diff.notes.append(f"{file}: every tensor is unchanged; the header or metadata differs")


def verify(
    path: str | os.PathLike[str],
    signature: str | os.PathLike[str],
    public_key: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> VerifyResult:
    """Check ``signature`` with ``public_key`` and ``path`` against what it signs.

    Raises :class:`InputError` for unusable input (missing path, unreadable key or bundle, unknown
    statement); a bad signature or changed content is a result with ``valid == False``.
    """
    progress = progress or NullProgress()
    target, signature_path, key_path = Path(path), Path(signature), Path(public_key)
    check_sealable(target)
    signer = public_key_fingerprint(key_path)
    progress.log(f"checking the signature with {signer}")
    statement, reason = read_bundle_payload(signature_path, key_path)
    if statement is None:
        return VerifyResult(target, signature_path, "unknown", signer, False, reason=reason)
    signed = _signed_content(statement)
    result = VerifyResult(
        target,
        signature_path,
        signed.kind,
        signer,
        True,
        signed_root=signed.subject_root,
        tensor_detail=signed.manifest.tensors is not None,
        predicate=signed.predicate if signed.kind == "attestation" else None,
    )
    if signed.manifest.root != signed.subject_root:
        result.signature_valid = False
        result.reason = "the statement's subject digest does not match its own file list"
        return result
    progress.log(f"re-hashing {target}")
    ms_actual = _rehash(target, signed.manifest, relative_ignores(target, [signature_path]))
    actual = {rd.identifier: rd.digest.digest_hex for rd in ms_actual.resource_descriptors()}
    result.actual_root = root_digest(actual.items())
    result.diff = compare_manifests(signed.manifest, actual, target)
    if not result.tensor_detail:
        result.notes.append(
            "tensor-level detail is unavailable: the signature holds file digests only "
            "(signed by model_signing, or sealed with --no-tensors)"
        )
    return result


def decode_bundle_statement(signature: str | os.PathLike[str]) -> dict[str, Any]:
    """The in-toto statement inside a bundle, without checking the signature (for inspection)."""
    try:
        bundle = json.loads(Path(signature).read_text(encoding="utf-8"))
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
        statement = json.loads(payload)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{signature} is not a readable bundle ({exc})", "") from exc
    if not isinstance(statement, dict):
        raise InputError(f"{signature} does not hold an in-toto statement", "")
    return statement
