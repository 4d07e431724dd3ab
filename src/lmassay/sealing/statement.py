"""Signed attestation statements: "this attestation is about exactly these weights".

An in-toto v1 statement in the same bundle format as a seal (DSSE envelope, Sigstore bundle JSON):

* ``subject``: the model folder's name and its **manifest root digest** — the digest model_signing
  computes for the same folder, so a seal and an attestation statement name the same weights;
* ``predicateType``: ``https://lmassay.dev/attestation/v1``;
* ``predicate``::

    {"attestation": {verdict, flagged, comparison, kl_direction, message,
                     categories: [{name, n_samples, n_tokens, mean_kl, delta_bpb, q_value, flagged}]},
     "attestation_file": {"name": "attestation.json", "sha256": ...},
     "model": {"name", "tree_digest" (attestation.json's model.digest, lmassay.digests.digest_tree),
               "manifest_digest", "serialization", "resources": [...], "tensors": [...]},
     "reference": {"name", "digest"} | null,  "probes": {"path", "digest", "n_samples"},
     "tool": {"name": "lmassay", "version"}, "attested_with": version in attestation.json,
     "created": ISO time}

The model's full file list (and tensor digests) travel in the predicate, so a failed check names the
files and tensors that differ.  attestation.json's own ``model.digest`` covers only the files the
loader read; it is recomputed over those files and must match before anything is signed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmassay import __version__
from lmassay.digests import Digest, digest_file, digest_tree
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import utc_now
from lmassay.sealing.manifest import (
    GIT_PATHS,
    Manifest,
    build_manifest,
    root_digest,
    tensors_from_json,
)
from lmassay.sealing.signing import (
    SealResult,
    check_signature_target,
    sign_statement,
    write_signature,
)

ATTESTATION_PREDICATE = "https://lmassay.dev/attestation/v1"
ATTESTATION_SCHEMA = "lmassay.attestation/v1"
STATEMENT_FILE = "attestation.sig"
_CATEGORY_FIELDS = ("name", "n_samples", "n_tokens", "mean_kl", "delta_bpb", "q_value", "flagged")


def load_attestation_file(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Resolve a run folder or an attestation.json; return its path and content."""
    target = Path(path)
    file = target / "attestation.json" if target.is_dir() else target
    if not file.is_file():
        raise InputError(
            f"{file} does not exist", "give an lmassay attest --out folder or its attestation.json"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{file} is not JSON ({exc})", "give the attestation.json lmassay attest wrote"
        ) from exc
    if not isinstance(data, dict) or data.get("schema") != ATTESTATION_SCHEMA:
        raise InputError(
            f"{file} is not an lmassay attestation", f"expected schema {ATTESTATION_SCHEMA}"
        )
    return file, data


def is_attestation_file(path: Path) -> bool:
    """Whether ``path`` is a JSON file declaring the lmassay attestation schema."""
    if not path.is_file() or path.suffix != ".json":
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("schema") == ATTESTATION_SCHEMA


def attestation_summary(att: dict[str, Any]) -> dict[str, Any]:
    """The part of attestation.json a statement carries: verdict, flags and per-category figures."""
    summary = att.get("summary") or {}
    return {
        "verdict": att.get("verdict"),
        "flagged": list(att.get("flagged") or []),
        "comparison": att.get("comparison"),
        "kl_direction": att.get("kl_direction"),
        "message": summary.get("message"),
        "categories": [
            {key: cat.get(key) for key in _CATEGORY_FIELDS} for cat in att.get("categories") or []
        ],
    }


def _digest_json(obj: Any) -> dict[str, Any] | None:
    return (
        {"algorithm": obj.get("algorithm"), "value": obj.get("value")}
        if isinstance(obj, dict)
        else None
    )


def _model_dir(att: dict[str, Any], model_dir: str | os.PathLike[str] | None) -> Path:
    if model_dir is not None:
        folder = Path(model_dir)
    else:
        recorded = (att.get("model") or {}).get("path")
        if not recorded:
            raise InputError("attestation.json records no model path", "pass --model MODEL_DIR")
        folder = Path(recorded)
    if not folder.is_dir():
        raise InputError(
            f"model folder {folder} does not exist", "pass --model MODEL_DIR (the attested weights)"
        )
    return folder


def check_attested_weights(att: dict[str, Any], folder: Path) -> Digest:
    """Recompute attestation.json's ``model.digest`` over its recorded files in ``folder``."""
    model = att.get("model") or {}
    files, recorded = model.get("files"), _digest_json(model.get("digest"))
    if not isinstance(files, list) or recorded is None:
        raise InputError(
            "attestation.json has no model file list or digest", "re-run lmassay attest"
        )
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InputError(
            f"{folder} lacks files the attestation read: {', '.join(missing[:5])}",
            "pass --model with the folder that was attested",
        )
    actual = digest_tree(folder, files)
    if actual.value != recorded["value"]:
        raise InputError(
            f"{folder} is not the model this attestation is about (digest {actual.value[:16]}… "
            f"vs {str(recorded['value'])[:16]}…)",
            "pass --model with the folder that was attested",
        )
    return actual


def build_statement(
    att: dict[str, Any], attestation_file: Path, manifest: Manifest, tree_digest: Digest
) -> Any:
    """The in-toto statement (an ``in_toto_attestation`` object) for a checked attestation."""
    from in_toto_attestation.v1 import statement
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor

    reference, probes = att.get("reference"), att.get("probes") or {}
    predicate = {
        "attestation": attestation_summary(att),
        "attestation_file": {
            "name": attestation_file.name,
            "sha256": digest_file(attestation_file).value,
        },
        "model": {
            "name": (att.get("model") or {}).get("name"),
            "tree_digest": tree_digest.to_json(),
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
        "reference": {
            "name": reference.get("name"),
            "digest": _digest_json(reference.get("digest")),
        }
        if isinstance(reference, dict)
        else None,
        "probes": {
            "path": probes.get("path"),
            "digest": _digest_json(probes.get("digest")),
            "n_samples": probes.get("n_samples"),
        },
        "tool": {"name": "lmassay", "version": __version__},
        "attested_with": (att.get("provenance") or {}).get("version"),
        "created": utc_now(),
    }
    subject = ResourceDescriptor(name=manifest.name, digest={"sha256": manifest.root.value}).pb
    return statement.Statement(
        subjects=[subject], predicate_type=ATTESTATION_PREDICATE, predicate=predicate
    )


def check_can_sign(model: str | os.PathLike[str], private_key: str | os.PathLike[str]) -> None:
    """Fail early (before an attestation runs) when its statement could not be signed."""
    from lmassay.sealing.keys import load_private_key

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
    """
    from lmassay.sealing.keys import private_key_fingerprint

    progress = progress or NullProgress()
    att_file, att = load_attestation_file(run)
    folder = _model_dir(att, model_dir)
    signature_path = Path(out) if out is not None else att_file.parent / STATEMENT_FILE
    check_signature_target(att_file, signature_path)
    signer = private_key_fingerprint(private_key)
    tree_digest = check_attested_weights(att, folder)
    ignores = ["model.sig"]  # a seal written into the folder later must not break the statement
    manifest, _ = build_manifest(
        folder, ignore_paths=ignores, with_tensors=with_tensors, progress=progress
    )
    statement = build_statement(att, att_file, manifest, tree_digest)
    progress.log(f"signing the attestation statement with {signer}")
    write_signature(signature_path, sign_statement(statement, private_key))
    return SealResult(folder, signature_path, manifest, signer, kind="attestation")


def manifest_from_predicate(predicate: Any) -> Manifest:
    """The model manifest carried in an attestation statement's predicate."""
    from lmassay.sealing.manifest import FileEntry

    try:
        model = predicate["model"]
        files = tuple(
            FileEntry(str(r["name"]), Digest(str(r["algorithm"]), str(r["digest"])))
            for r in model["resources"]
        )
        serialization = dict(model.get("serialization") or {})
        ignores = tuple(str(p) for p in serialization.get("ignore_paths") or GIT_PATHS)
        tensors = tensors_from_json(model.get("tensors"))
        name = str(model.get("name") or "")
    except (KeyError, TypeError) as exc:
        raise InputError(
            f"the attestation statement's model manifest is malformed ({exc})", ""
        ) from exc
    return Manifest(
        name=name,
        files=files,
        root=root_digest((f.path, f.digest.value) for f in files),
        tensors=tensors,
        ignore_paths=ignores,
        serialization=serialization,
    )
