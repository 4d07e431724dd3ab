"""The before/after section that a repair adds to the report of its new attestation.

Both renderers take the rows from :func:`repair_rows`, built from ``repair.json`` alone.  The rows
and the summary hold plain text; each renderer escapes it (markdown through
:func:`~lmassay.report.markdown.markdown_text`, HTML by jinja2's autoescaping), since every string
of a repair record is as untrusted as the attestation it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmassay.report.markdown import fmt_num, markdown_cell, markdown_code, markdown_text


@dataclass(frozen=True)
class RepairRow:
    name: str
    role: str  # "repaired" or "collateral"
    level_before: str
    level_after: str
    level_change: str
    effect_after: str
    ppl_before: str
    ppl_after: str
    ppl_change: str
    status: str  # "flagged" | "flagged before" | "not flagged"
    bad: bool  # still above the floor (repaired) or newly flagged (collateral)


def _status(row: Mapping[str, Any]) -> str:
    if row.get("flagged_after"):
        return "flagged"
    return "was flagged, now not" if row.get("flagged_before") else "not flagged"


def repair_rows(record: Mapping[str, Any]) -> list[RepairRow]:
    """One row per category: repaired categories first, then the others by name."""
    outcome = record.get("outcome") or {}
    still = set(outcome.get("still_above_floor") or [])
    newly = set(outcome.get("newly_flagged") or [])
    rows = sorted(
        outcome.get("categories") or [], key=lambda r: (r.get("role") != "repaired", r.get("name"))
    )
    return [
        RepairRow(
            name=str(r.get("name")),
            role=str(r.get("role")),
            level_before=fmt_num(r.get("level_before"), 4),
            level_after=fmt_num(r.get("level_after"), 4),
            level_change=fmt_num(r.get("level_change"), 4, signed=True),
            effect_after=fmt_num(r.get("effect_after"), 4, signed=True),
            ppl_before=fmt_num(r.get("ppl_model_before"), 3),
            ppl_after=fmt_num(r.get("ppl_model_after"), 3),
            ppl_change=fmt_num(r.get("ppl_model_change"), 3, signed=True),
            status=_status(r),
            bad=r.get("name") in still or r.get("name") in newly,
        )
        for r in rows
    ]


def repair_summary(record: Mapping[str, Any]) -> dict[str, str]:
    """The headline facts of a repair as display strings."""
    outcome = record.get("outcome") or {}
    training = record.get("training") or {}
    steps = training.get("steps_run")
    early = (
        " (stopped early: every held-out group within the stop gap)"
        if training.get("stopped_early")
        else ""
    )
    notes = []
    if training.get("restored_best"):
        notes.append(
            f"kept the weights of step {training.get('best_step')}, the best held-out check"
        )
    if sampled := (record.get("data") or {}).get("n_sampled_from_reference"):
        notes.append(f"{sampled} anchor texts sampled from the reference")
    return {
        "message": str(outcome.get("message") or ""),
        "success": "yes" if outcome.get("success") else "no",
        "mode": str(record.get("mode")),
        "method": str(record.get("method")),
        "categories": ", ".join(str(name) for name in record.get("categories") or []),
        "statistic": str(outcome.get("statistic") or ""),
        "noise_floor": f"{floor:g}"
        if isinstance(floor := outcome.get("noise_floor"), int | float)
        else "—",
        "verdicts": f"{outcome.get('verdict_before')} → {outcome.get('verdict_after')}",
        "steps": f"{steps} of {training.get('steps')}{early}" if steps is not None else "—",
        "seconds": fmt_num(training.get("seconds"), 1),
        "before": str((record.get("attestation_before") or {}).get("path") or ""),
        "notes": "; ".join(notes),
    }


def repair_markdown(record: Mapping[str, Any]) -> list[str]:
    """The markdown lines of the section (every string of the record escaped)."""
    raw = repair_summary(record)
    s = {key: markdown_text(value) for key, value in raw.items()}
    message = markdown_text(raw["message"].strip())
    lines = [
        "## Before and after repair",
        "",
        *([f"**{message}**", ""] if message else []),
        f"Mode {markdown_code(raw['mode'])}, method {markdown_code(raw['method'])}, repaired: "
        f"{s['categories']}; verdict {s['verdicts']}; {s['steps']} steps in {s['seconds']} s. "
        f"Statistic {s['statistic']}; noise floor {s['noise_floor']}. "
        f"Before: {markdown_code(raw['before'])}."
        + (f" Training: {s['notes']}." if raw["notes"] else ""),
        "",
        "| category | role | level before | after | change | effect after | ppl before | ppl after | Δ ppl | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in repair_rows(record):
        mark = " ⚠" if r.bad else ""
        lines.append(
            f"| {markdown_cell(r.name)} | {markdown_cell(r.role)} | {r.level_before} | "
            f"{r.level_after} | {r.level_change} | {r.effect_after} | {r.ppl_before} | "
            f"{r.ppl_after} | {r.ppl_change} | {r.status}{mark} |"
        )
    return lines
