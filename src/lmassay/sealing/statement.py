"""Signed attestation statements: "this attestation is about exactly these weights".

An in-toto v1 statement in the same bundle format as a seal (a DSSE envelope in a Sigstore bundle,
signed by :mod:`~lmassay.sealing.dsse` with the ``cryptography`` package: model_signing's public
API signs model manifests only):

* ``subject``: the model folder's name and its **manifest root digest** — the one model identity
  (:func:`lmassay.digests.model_identity`): the digest model_signing computes for the same folder,
  and the ``model.digest`` attestation.json records, so a seal, an attestation and its statement
  name the same weights;
* ``predicateType``: ``https://lmassay.dev/attestation/v1``;
* ``predicate``::

    {"attestation": {verdict, flagged, comparison, kl_direction, message,
                     categories: [{name, n_samples, n_tokens, mean_kl, delta_bpb, q_value, flagged}]},
     "attestation_file": {"name": "attestation.json", "sha256": ...},
     "model": {"name", "attested_digest" (attestation.json's model.digest), "manifest_digest",
               "serialization", "resources": [...], "tensors": [...]},
     "reference": {"name", "digest"} | null,  "probes": {"path", "digest", "n_samples"},
     "tool": {"name": "lmassay", "version"}, "attested_with": version in attestation.json,
     "created": ISO time}

The model's full file list (and tensor digests) travel in the predicate, so a failed check names the
files and tensors that differ.  Before anything is signed, the folder is hashed once and must be the
model attestation.json names: its root equals ``model.digest``, or — for an attestation written by
lmassay 0.1, which recorded the legacy tree digest — the tree digest over its recorded ``files``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmassay import __version__
from lmassay.attest.document import SCHEMA as ATTESTATION_SCHEMA
from lmassay.attest.document import STATEMENT_FILE, Attestation
from lmassay.bounded_read import DOCUMENT_LIMIT, read_bytes
from lmassay.digests import Digest, ModelIdentity, digest_file, model_identity
from lmassay.errors import InputError
from lmassay.output_folder import locked
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import utc_now
from lmassay.sealing.dsse import in_toto_statement, sign_statement, write_signature
from lmassay.sealing.keys import load_private_key, private_key_fingerprint
from lmassay.sealing.manifest import Manifest, add_tensor_digests, identity_manifest
from lmassay.sealing.signing import SealResult, check_signature_target

ATTESTATION_PREDICATE = "https://lmassay.dev/attestation/v1"
_CATEGORY_FIELDS = ("name", "n_samples", "n_tokens", "mean_kl", "delta_bpb", "q_value", "flagged")


def load_attestation_file(path: str | os.PathLike[str]) -> tuple[Path, Attestation]:
    """Resolve a run folder or an attestation.json; return its path and the typed document."""
    target = Path(path)
    file = target / "attestation.json" if target.is_dir() else target
    if not file.is_file():
        raise InputError(
            f"{file} does not exist", "give an lmassay attest --out folder or its attestation.json"
        )
    return file, Attestation.read(file)


def is_attestation_file(path: Path) -> bool:
    """Whether ``path`` is a JSON file declaring the lmassay attestation schema."""
    if not path.is_file() or path.suffix != ".json":
        return False
    try:
        data = json.loads(read_bytes(path, what="file", limit=DOCUMENT_LIMIT, flag=None))
    except (InputError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("schema") == ATTESTATION_SCHEMA


def attestation_summary(att: Attestation) -> dict[str, Any]:
    """The part of attestation.json a statement carries: verdict, flags and per-category figures."""
    return {
        "verdict": att.verdict.value,
        "flagged": list(att.flagged),
        "comparison": att.comparison.value,
        "kl_direction": att.kl_direction,
        "message": att.summary.message,
        "categories": [
            {key: getattr(row, key) for key in _CATEGORY_FIELDS} for row in att.categories
        ],
    }


def _digest_json(digest: Digest | str | None) -> dict[str, Any] | None:
    """A recorded digest as ``{"algorithm", "value"}`` (None where none, or only a bare string)."""
    return digest.to_json() if isinstance(digest, Digest) else None


def _model_dir(att: Attestation, model_dir: str | os.PathLike[str] | None) -> Path:
    if model_dir is not None:
        folder = Path(model_dir)
    else:
        recorded = att.model.path if att.model is not None else None
        if not recorded:
            raise InputError("attestation.json records no model path", "pass --model MODEL_DIR")
        folder = Path(recorded)
    if not folder.is_dir():
        raise InputError(
            f"model folder {folder} does not exist", "pass --model MODEL_DIR (the attested weights)"
        )
    return folder


def check_attested_weights(att: Attestation, folder: Path, identity: ModelIdentity) -> Digest:
    """Raise unless ``identity`` (of ``folder``) is the model attestation.json's ``model`` names."""
    recorded = att.model.digest if att.model is not None else None
    if not isinstance(recorded, Digest):
        raise InputError("attestation.json has no model digest", "re-run lmassay attest")
    files = att.model.files if att.model is not None else None
    value = recorded.value
    legacy_files = list(files) if files is not None and value != identity.root.value else None
    missing = [f for f in legacy_files or () if f not in identity.names]
    if missing:
        raise InputError(
            f"{folder} lacks files the attestation read: {', '.join(missing[:5])}",
            "pass --model with the folder that was attested",
        )
    if not identity.names_model(value, legacy_files):
        raise InputError(
            f"{folder} is not the model this attestation is about (digest "
            f"{identity.root.value[:16]}… vs {value[:16]}…)",
            "pass --model with the folder that was attested",
        )
    return recorded


def build_statement(
    att: Attestation, attestation_file: Path, manifest: Manifest, attested: Digest
) -> dict[str, Any]:
    """The in-toto statement for a checked attestation."""
    reference, probes = att.reference, att.probes
    predicate = {
        "attestation": attestation_summary(att),
        "attestation_file": {
            "name": attestation_file.name,
            "sha256": digest_file(attestation_file).value,
        },
        "model": {
            "name": att.model.name if att.model is not None else None,
            "attested_digest": attested.to_json(),
            "manifest_digest": manifest.root.to_json(),
            "serialization": {
                **manifest.serialization,
                "ignore_paths": sorted(manifest.ignore_paths),
            },
            "resources": [entry.to_json() for entry in manifest.files],
            "tensors": None
            if manifest.tensors is None
            else [t.to_json() for t in manifest.tensors],
        },
        "reference": {"name": reference.name, "digest": _digest_json(reference.digest)}
        if reference is not None
        else None,
        "probes": {
            "path": probes.path if probes else None,
            "digest": _digest_json(probes.digest if probes else None),
            "n_samples": probes.n_samples if probes else None,
        },
        "tool": {"name": "lmassay", "version": __version__},
        "attested_with": att.provenance.version if att.provenance is not None else None,
        "created": utc_now(),
    }
    return in_toto_statement(manifest.name, manifest.root.value, ATTESTATION_PREDICATE, predicate)


def check_can_sign(model: str | os.PathLike[str], private_key: str | os.PathLike[str]) -> None:
    """Fail early (before an attestation runs) when its statement could not be signed."""
    load_private_key(private_key)
    if not Path(model).is_dir():
        raise InputError(
            f"--sign needs --model to be a local folder, not {model}",
            "download the model to a folder first, or drop --sign",
        )


def sign_attestation(
    run: str | os.PathLike[str],
    model_dir: str | os.PathLike[str] | None,
    private_key: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    with_tensors: bool = True,
    progress: Progress | None = None,
) -> SealResult:
    """Sign a statement that the attestation in ``run`` is about the weights in ``model_dir``.

    ``run`` is an attest output folder or its attestation.json; ``model_dir`` defaults to the path
    recorded in it.  Writes ``out`` (default ``RUN/attestation.sig``) and returns what was signed.
    The folder is hashed once (:func:`lmassay.digests.model_identity`); a seal written into it
    later (``model.sig``, ``model.tensors.sig``) does not change what the statement names.
    """
    progress = progress or NullProgress()
    run_folder = Path(run) if Path(run).is_dir() else Path(run).parent
    if not run_folder.is_dir():
        load_attestation_file(run)  # names the missing run; nothing is created for it
    with locked(run_folder, flag="run folder"):  # no attest run replaces it while we sign
        att_file, att = load_attestation_file(run)
        folder = _model_dir(att, model_dir)
        signature_path = Path(out) if out is not None else att_file.parent / STATEMENT_FILE
        check_signature_target(att_file, signature_path)
        signer = private_key_fingerprint(private_key)
        progress.log(f"hashing {folder}")
        identity = model_identity(folder)
        attested = check_attested_weights(att, folder, identity)
        manifest = identity_manifest(folder.name, identity)
        if with_tensors:
            manifest = add_tensor_digests(manifest, folder, progress)
        statement = build_statement(att, att_file, manifest, attested)
        progress.log(f"signing the attestation statement with {signer}")
        write_signature(signature_path, sign_statement(statement, private_key))
    return SealResult(folder, signature_path, manifest, signer, kind="attestation")
