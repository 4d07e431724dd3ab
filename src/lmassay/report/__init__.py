"""Reports rendered from ``attestation.json`` alone: a markdown summary and a self-contained HTML page.

``attestation.json`` is the source of truth; these functions only read it, so a report can be
re-rendered at any time without scoring again::

    from lmassay.report import load_attestation, render_markdown, write_report

    att = load_attestation("runs/my-model")          # the run folder or the JSON file
    print(render_markdown(att))
    write_report("runs/my-model", att)               # report.html and report.md
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_text
from lmassay.errors import InputError
from lmassay.report.html import render_html
from lmassay.report.markdown import render_markdown

SCHEMA = "lmassay.attestation/v1"
ATTESTATION_FILE = "attestation.json"
REQUIRED_KEYS = ("verdict", "flagged", "comparison", "categories", "summary")
_VERDICTS = ("consistent", "tampered", "different-model", "scored-only")
_COMPARISONS = ("kl", "bpb", "none")
_FIX_RERUN = "run `lmassay attest` again to write a complete attestation.json"

__all__ = [
    "ATTESTATION_FILE",
    "SCHEMA",
    "load_attestation",
    "load_repair_record",
    "render_html",
    "render_markdown",
    "write_report",
]


def load_attestation(path: str | Path) -> dict[str, Any]:
    """Read and check an attestation.

    ``path`` is a run folder holding ``attestation.json`` or the JSON file itself.  Raises
    :class:`~lmassay.errors.InputError`, naming the file, when it is missing, is not valid JSON,
    has another schema than ``lmassay.attestation/v1``, or lacks one of the keys the reports need
    (``verdict``, ``flagged``, ``comparison``, ``categories``, ``summary``) or has them of the
    wrong type.
    """
    given = Path(path)
    file = given / ATTESTATION_FILE if given.is_dir() else given
    if not file.is_file():
        where = f"{given} holds no {ATTESTATION_FILE}" if given.is_dir() else f"{file} not found"
        raise InputError(
            f"attestation {where}",
            "pass a run folder written by `lmassay attest` or the path of its attestation.json",
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"attestation {file} cannot be read ({err})", _FIX_RERUN) from err
    try:
        att = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"attestation {file} is not valid JSON (line {err.lineno}, column {err.colno}: "
            f"{err.msg})",
            _FIX_RERUN,
        ) from err
    if not isinstance(att, dict):
        raise InputError(f"attestation {file} is not a JSON object", _FIX_RERUN)
    schema = att.get("schema")
    if schema != SCHEMA:
        found = f"schema {schema!r}" if schema is not None else "no 'schema' key"
        raise InputError(
            f"attestation {file} has {found}, expected {SCHEMA!r}",
            "render it with the lmassay version that wrote it, or attest again",
        )
    missing = [key for key in REQUIRED_KEYS if key not in att]
    if missing:
        raise InputError(
            f"attestation {file} lacks required key(s) {', '.join(missing)}", _FIX_RERUN
        )
    _check_shape(att, file)
    return att


def _check_shape(att: Mapping[str, Any], file: Path) -> None:
    """Reject values of the wrong type, so that rendering never fails half-way."""
    problems = []
    if att["verdict"] not in _VERDICTS:
        problems.append(f"verdict {att['verdict']!r} is not one of {', '.join(_VERDICTS)}")
    if att["comparison"] not in _COMPARISONS:
        problems.append(f"comparison {att['comparison']!r} is not one of {', '.join(_COMPARISONS)}")
    if not isinstance(att["flagged"], list):
        problems.append("'flagged' is not a list")
    if not isinstance(att["summary"], dict):
        problems.append("'summary' is not an object")
    categories = att["categories"]
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in categories
    ):
        problems.append("'categories' is not a list of objects with a 'name'")
    for key in ("evidence", "warnings"):
        if att.get(key) is not None and not isinstance(att[key], list):
            problems.append(f"{key!r} is not a list")
    if att.get("evidence") and not all(isinstance(e, dict) for e in att["evidence"]):
        problems.append("'evidence' is not a list of objects")
    if problems:
        raise InputError(f"attestation {file}: {'; '.join(problems)}", _FIX_RERUN)


def load_repair_record(folder: str | Path) -> dict[str, Any] | None:
    """``folder/repair.json`` (written by ``lmassay repair``) if there is one, else None."""
    file = Path(folder) / "repair.json"
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(
            f"{file} cannot be read as JSON ({err})", "run lmassay repair again"
        ) from err
    if not isinstance(record, dict) or record.get("schema") != "lmassay.repair/v1":
        raise InputError(
            f"{file} is not a repair record (schema lmassay.repair/v1)", "remove it or repair again"
        )
    return record


def write_report(
    out_dir: str | Path, att: dict[str, Any], repair: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir`` atomically; return their paths.

    Each file is written to a temporary file in the same folder and renamed, so a reader never sees
    a half-written report.  Both are rendered before either is written.
    """
    folder = Path(out_dir)
    html = render_html(att, repair)
    markdown = render_markdown(att, repair)
    return {
        "html": atomic_write_text(folder / "report.html", html),
        "markdown": atomic_write_text(folder / "report.md", markdown),
    }
