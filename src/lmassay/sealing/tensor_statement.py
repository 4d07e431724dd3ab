"""The tensor statement beside a seal: signed per-tensor digests of the sealed ``.safetensors`` files.

``lmassay seal`` writes the model signature through model_signing's public API, which signs the
file manifest and nothing else.  The tensor digests therefore travel in a second statement, signed
with the same key (:mod:`~lmassay.sealing.dsse`), next to the signature::

    FOLDER/model.sig            model_signing's bundle: files, root digest
    FOLDER/model.tensors.sig    lmassay's bundle: the same root as subject, the tensor digests

The statement's subject is the seal's manifest root digest, so it vouches for the tensors of
exactly the sealed files; ``verify`` uses it only when its signature verifies with the same public
key and its subject equals the seal's root.  Predicate (type ``https://lmassay.dev/tensors/v1``)::

    {"schema": "lmassay.tensors/v1", "tool": {"name": "lmassay", "version"},
     "tensors": [{"file", "name", "dtype", "shape", "digest"}, ...]}
"""

from __future__ import annotations

import os
from pathlib import Path

from lmassay import __version__
from lmassay.digests import Digest
from lmassay.errors import InputError
from lmassay.sealing.dsse import (
    in_toto_statement,
    read_bundle,
    sign_statement,
    signature_problem,
    subject_digest,
    write_signature,
)
from lmassay.sealing.manifest import Manifest, TensorEntry, tensors_from_json

TENSORS_PREDICATE = "https://lmassay.dev/tensors/v1"
TENSORS_SCHEMA = "lmassay.tensors/v1"


def tensor_statement_path(signature: Path) -> Path:
    """``model.sig`` → ``model.tensors.sig``; ``data.jsonl.sig`` → ``data.jsonl.tensors.sig``."""
    stem = signature.name.removesuffix(".sig")
    return signature.with_name(f"{stem}.tensors.sig")


def write_tensor_statement(
    path: Path, manifest: Manifest, private_key: str | os.PathLike[str]
) -> None:
    """Sign the manifest's tensor digests (subject: its root) and write them to ``path``."""
    predicate = {
        "schema": TENSORS_SCHEMA,
        "tool": {"name": "lmassay", "version": __version__},
        "tensors": [t.to_json() for t in manifest.tensors or ()],
    }
    statement = in_toto_statement(manifest.name, manifest.root.value, TENSORS_PREDICATE, predicate)
    write_signature(path, sign_statement(statement, private_key))


def read_tensor_statement(
    path: Path, root: Digest, public_key: str | os.PathLike[str]
) -> tuple[tuple[TensorEntry, ...] | None, str | None]:
    """The tensors signed in ``path`` for the seal whose root is ``root``: (tensors, None), or
    (None, a note saying why there is no usable tensor detail)."""
    if not path.is_file():
        return None, None
    try:
        bundle = read_bundle(path)
        statement = bundle.statement()
        problem = signature_problem(bundle, public_key)
        if problem is not None:
            return None, f"{path.name} is ignored ({problem})"
        if statement.get("predicateType") != TENSORS_PREDICATE or subject_digest(statement) != root:
            return None, f"{path.name} is ignored (it is not about this seal's root digest)"
        predicate = statement.get("predicate")
        if not isinstance(predicate, dict):
            raise InputError("the tensor statement has no predicate", "re-seal with lmassay seal")
        return tensors_from_json(predicate.get("tensors")), None
    except InputError as exc:
        return None, f"{path.name} is ignored ({exc.what})"
