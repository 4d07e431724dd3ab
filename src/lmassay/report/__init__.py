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
    "rerender_report",
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


def rerender_report(run: str | Path) -> tuple[Attestation, dict[str, Any] | None, dict[str, Path]]:
    """Re-render the reports of the run folder ``run`` (or of its attestation.json) from the JSON.

    The folder is locked meanwhile (:func:`lmassay.output_folder.locked`), so an ``attest`` run
    replacing it cannot mix its files with these. Returns the attestation, the repair record
    (``repair.json`` of a repair's report folder, if any) and the paths written.
    """
    from lmassay.output_folder import locked

    given = Path(run)
    folder = given if given.is_dir() else given.parent
    if not folder.is_dir():
        Attestation.read(given)  # names the missing run; nothing is created for it
    with locked(folder, flag="run folder"):
        att = Attestation.read(given)
        repair = load_repair_record(folder)
        return att, repair, write_report(folder, att, repair)


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
