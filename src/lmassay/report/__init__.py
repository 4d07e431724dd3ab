"""Reports rendered from ``attestation.json`` alone: a markdown summary and a self-contained HTML page.

``attestation.json`` is the source of truth; these functions only read it, so a report can be
re-rendered at any time without scoring again::

    from lmassay.attest.document import Attestation
    from lmassay.report import render_markdown, write_report

    att = Attestation.read("runs/my-model")           # the run folder or the JSON file
    print(render_markdown(att))
    write_report("runs/my-model", att)               # report.html and report.md

The renderers take the typed :class:`~lmassay.attest.document.Attestation` (or its parsed JSON,
which they read into one first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_text
from lmassay.attest.document import ATTESTATION_FILE, SCHEMA, Attestation, as_attestation
from lmassay.errors import InputError
from lmassay.report.html import render_html
from lmassay.report.markdown import render_markdown

__all__ = [
    "ATTESTATION_FILE",
    "SCHEMA",
    "Attestation",
    "load_repair_record",
    "render_html",
    "render_markdown",
    "write_report",
]


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
    out_dir: str | Path,
    att: Attestation | Mapping[str, Any],
    repair: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir`` atomically; return their paths.

    Each file is written to a temporary file in the same folder and renamed, so a reader never sees
    a half-written report.  Both are rendered before either is written.
    """
    folder = Path(out_dir)
    doc = as_attestation(att)
    html = render_html(doc, repair)
    markdown = render_markdown(doc, repair)
    return {
        "html": atomic_write_text(folder / "report.html", html),
        "markdown": atomic_write_text(folder / "report.md", markdown),
    }
