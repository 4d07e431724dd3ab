"""A helper any test can call: check an attestation against the JSON Schema lmassay ships.

from attestation_check import assert_valid_attestation
assert_valid_attestation(run_dir)          # a run folder, an attestation.json, a dict or a document
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from lmassay.attest.document import ATTESTATION_FILE, Attestation, json_schema


def assert_valid_attestation(att: str | Path | Mapping[str, Any] | Attestation) -> dict[str, Any]:
    """Validate ``att`` against attestation.schema.json (draft 2020-12); return its JSON object.

    It must also read as the typed document and write back the same JSON.
    """
    if isinstance(att, Attestation):
        raw = att.to_json()
    elif isinstance(att, Mapping):
        raw = dict(att)
    else:
        path = Path(att)
        path = path / ATTESTATION_FILE if path.is_dir() else path
        raw = json.loads(path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(json_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    assert not errors, "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    assert Attestation.from_json(raw).to_json() == raw
    return raw
