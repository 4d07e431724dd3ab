"""Verify a seal or a signed attestation statement against a folder or file.

A **seal** (``https://model_signing/signature/v1.0``, or its v0.1 predecessor; written by
``lmassay seal`` or ``model_signing sign``) is verified by model_signing's public API
(``model_signing.verifying.Config`` with the elliptic-key verifier): it checks the signature and
the key hint, re-hashes the path the way the signed manifest records, and compares.  When that
passes the path is valid.  When it fails, lmassay says why: the signature itself is checked again
(:func:`lmassay.sealing.dsse.signature_problem`) and, if it holds, the path is re-hashed and
compared with the signed manifest, which lists missing, extra, renamed and changed files and, for
changed ``.safetensors`` files whose tensor digests were signed beside the seal
(:mod:`~lmassay.sealing.tensor_statement`), the changed, missing and extra tensors.

An **attestation statement** (``https://lmassay.dev/attestation/v1``) is lmassay's own statement,
which model_signing cannot read: its signature is checked by :mod:`~lmassay.sealing.dsse`, then the
path (the model folder the attestation is about) is re-hashed and compared with the manifest in the
predicate.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmassay.digests import Digest, root_digest
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.sealing.dsse import Bundle, read_bundle, signature_problem, subject_digest
from lmassay.sealing.keys import public_key_fingerprint
from lmassay.sealing.manifest import (
    Manifest,
    TensorEntry,
    check_sealable,
    hashing_config,
    manifest_from_predicate,
    relative_ignores,
    safetensors_tensor_digests,
    tensors_from_json,
)
from lmassay.sealing.signing import MODEL_SIGNING_PREDICATE
from lmassay.sealing.statement import ATTESTATION_PREDICATE
from lmassay.sealing.tensor_statement import (
    TENSORS_PREDICATE,
    read_tensor_statement,
    tensor_statement_path,
)

_MODEL_SIGNING_COMPAT = "https://model_signing/Digests/v0.1"


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


def _signed_manifest(statement: dict[str, Any]) -> tuple[str, Manifest, Digest]:
    """The kind of statement ("model" or "attestation"), the manifest it vouches for and the root
    digest it names (a v0.1 statement names no root: its files are its subjects)."""
    kind = statement.get("predicateType")
    predicate = statement.get("predicate")
    subjects = statement.get("subject")
    if kind == _MODEL_SIGNING_COMPAT:
        try:
            resources = [
                {"name": s["name"], "algorithm": "sha256", "digest": s["digest"]["sha256"]}
                for s in subjects or []
            ]
        except (KeyError, TypeError) as exc:
            raise InputError(f"the signed v0.1 subjects are malformed ({exc})", "re-seal") from exc
        manifest = manifest_from_predicate("", {"resources": resources})
        return "model", manifest, manifest.root
    name = str(subjects[0].get("name") or "") if isinstance(subjects, list) and subjects else ""
    if kind == MODEL_SIGNING_PREDICATE:
        return "model", manifest_from_predicate(name, predicate), subject_digest(statement)
    if kind == ATTESTATION_PREDICATE:
        model = predicate.get("model") if isinstance(predicate, dict) else None
        tensors = tensors_from_json(model.get("tensors")) if isinstance(model, dict) else None
        manifest = manifest_from_predicate(name, model, tensors)
        return "attestation", manifest, subject_digest(statement)
    hint = " (read from beside model.sig)" if kind == TENSORS_PREDICATE else ""
    raise InputError(
        f"the signed statement has predicate type {kind!r}{hint}",
        "give a model signature or an lmassay attestation statement",
    )


def _model_signing_refusal(
    target: Path, bundle: Bundle, public_key: Path, manifest: Manifest
) -> str | None:
    """Verify a seal with model_signing's public API; ``None`` when it passes, else its message.

    The bundle's bytes as read are what model_signing checks (a temporary copy), so the statement
    decoded here is the one that was verified. A seal that followed links (a hub snapshot) is
    re-hashed following them, as the signed manifest records.
    """
    from cryptography.exceptions import InvalidSignature
    from model_signing import verifying

    config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    if manifest.serialization.get("allow_symlinks"):
        ignores = list(manifest.ignore_paths) if target.is_dir() else []
        config.set_hashing_config(hashing_config(ignores, allow_symlinks=True))
    with tempfile.TemporaryDirectory(prefix="lmassay-verify-") as tmp:
        copy = Path(tmp) / "model.sig"
        copy.write_bytes(bundle.raw)
        try:
            config.verify(target, copy)
        except InvalidSignature:
            return "the signature does not verify with this public key"
        except (ValueError, KeyError, TypeError) as exc:
            return " ".join(str(exc).split())
    return None


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


def _attach_signed_tensors(
    result: VerifyResult, manifest: Manifest, signature: Path, public_key: Path
) -> Manifest:
    """For a seal: the tensor digests signed beside it, when usable (else a note says why not)."""
    tensors, note = read_tensor_statement(
        tensor_statement_path(signature), manifest.root, public_key
    )
    if note:
        result.notes.append(note)
    return replace(manifest, tensors=tensors) if tensors is not None else manifest


def _compare(result: VerifyResult, target: Path, manifest: Manifest) -> None:
    """Re-hash ``target`` as the signed manifest records and set the result's root and diff.

    A seal is re-hashed exactly as model_signing does; for an attestation statement written into
    the model folder itself, the statement file is left out too.
    """
    extra = relative_ignores(target, [result.signature]) if result.kind == "attestation" else []
    ms_actual = _rehash(target, manifest, extra)
    actual = {rd.identifier: rd.digest.digest_hex for rd in ms_actual.resource_descriptors()}
    result.actual_root = root_digest(actual.items())
    result.diff = compare_manifests(manifest, actual, target)


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
    bundle = read_bundle(signature_path)
    problem = signature_problem(bundle, key_path)  # before anything in the payload is trusted
    if problem is not None:
        return VerifyResult(target, signature_path, "unknown", signer, False, reason=problem)
    statement = bundle.statement()
    kind, manifest, signed_root = _signed_manifest(statement)
    result = VerifyResult(target, signature_path, kind, signer, True, signed_root=signed_root)
    result.predicate = statement.get("predicate") if kind == "attestation" else None
    if manifest.root != result.signed_root:
        result.signature_valid = False
        result.reason = "the statement's subject digest does not match its own file list"
        return result
    refusal = None
    if kind == "model":
        manifest = _attach_signed_tensors(result, manifest, signature_path, key_path)
        progress.log(f"verifying {target} with model_signing")
        refusal = _model_signing_refusal(target, bundle, key_path, manifest)
        if refusal is None:  # signature and content verified: the signed manifest is the truth
            result.actual_root, result.diff = result.signed_root, ManifestDiff()
            _note_tensor_detail(result, manifest, target)
            return result
    progress.log(f"re-hashing {target}")
    _compare(result, target, manifest)
    if refusal is not None and result.valid:  # model_signing refused what matches: say so
        result.signature_valid, result.reason = False, f"model_signing refused it: {refusal}"
    _note_tensor_detail(result, manifest, target)
    return result


def _note_tensor_detail(result: VerifyResult, manifest: Manifest, target: Path) -> None:
    result.tensor_detail = manifest.tensors is not None
    has_shards = any(f.path.endswith(".safetensors") for f in manifest.files) or (
        target.is_file() and target.suffix == ".safetensors"
    )
    if not result.tensor_detail and has_shards:
        result.notes.append(
            "tensor-level detail is unavailable: no tensor digests were signed "
            "(signed by model_signing, or sealed with --no-tensors)"
        )


def decode_bundle_statement(signature: str | os.PathLike[str]) -> dict[str, Any]:
    """The in-toto statement inside a bundle, without checking the signature (for inspection)."""
    return read_bundle(signature).statement()
