"""The HTML report: one self-contained page rendered from ``attestation.json``.

The page needs nothing outside itself: CSS is inline, figures are inline SVG, there is no script
and no external URL.  The template (``templates/report.html.j2``) is rendered by jinja2 with
autoescaping on, so every string that comes from the attestation (category names, tokens,
contexts, model names) is escaped; only the SVG figures, which matplotlib writes with its own XML
escaping, are inserted as markup.  This module turns the attestation into display-ready values
(formatted numbers, table rows) so that the template stays free of logic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
from markupsafe import Markup

from lmassay.report.markdown import (
    MISSING,
    STATISTICS,
    VERDICT_TITLES,
    as_text,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_param,
    fmt_prob,
    full_digest,
    is_number,
    short_digest,
    show_token,
    statistic_of,
    top_tokens,
)
from lmassay.report.plots import render_plots
from lmassay.report.repair_section import repair_rows, repair_summary

_CONTEXT_BEFORE = 160
_CONTEXT_AFTER = 120
_TOP_PREDICTIONS = 5
_TOKENS_PER_SAMPLE = 8


@dataclass(frozen=True)
class Column:
    """One column of the category table."""

    header: str
    key: str
    hint: str = ""


@dataclass
class Cell:
    text: str
    sub: str = ""  # a second, smaller line (the interval under a mean)


@dataclass
class Row:
    name: str
    cells: list[Cell]
    flagged: bool
    tested: bool
    note: str


@dataclass
class Prediction:
    token: str
    probability: str
    actual: bool
    width: int  # probability in percent, for the bar behind it


@dataclass
class EvidenceToken:
    kl: str
    token: str
    before: str
    after: str
    clipped_before: bool
    clipped_after: bool
    p_model: str
    p_reference: str
    position: str
    top_model: list[Prediction]
    top_reference: list[Prediction]


@dataclass
class EvidenceSample:
    id: str
    mean_kl: str
    max_kl: str
    n_tokens: str
    tokens: list[EvidenceToken] = field(default_factory=list)


@dataclass
class EvidenceCategory:
    name: str
    flagged: bool
    samples: list[EvidenceSample]
    strongest: list[tuple[str, str, str]]  # (kl, token, sample id) of the largest-KL tokens


_TEST_COLUMNS: tuple[Column, ...] = (
    Column("p", "p_value", hint="one-sided Mann–Whitney U, category > rest"),
    Column("q", "q_value", hint="Benjamini–Hochberg adjusted p"),
    Column("effect", "effect", hint="level − median level of the other categories"),
    Column("AUC", "auc", hint="P(sample of this category > sample of the rest)"),
)

_COLUMNS: dict[str, tuple[Column, ...]] = {
    "kl": (
        Column("ppl model", "ppl_model", hint="token-weighted perplexity of the model"),
        Column("ppl ref", "ppl_reference", hint="token-weighted perplexity of the reference"),
        Column(
            "mean KL",
            "mean_kl",
            hint="token-weighted mean KL(reference ‖ model), nats/token, "
            "with its 95% bootstrap interval over samples",
        ),
        Column("tail KL", "tail_kl", hint="95th percentile of per-token KL"),
        Column("top-1 agree", "top1_agreement", hint="fraction of tokens whose argmax agrees"),
        Column("Δ bpb", "delta_bpb", hint="bits per byte, model − reference"),
        *_TEST_COLUMNS,
    ),
    "bpb": (
        Column("ppl model", "ppl_model", hint="perplexity over the model's own tokens"),
        Column("ppl ref", "ppl_reference", hint="perplexity over the reference's own tokens"),
        Column("bpb model", "bpb_model", hint="bits per UTF-8 byte"),
        Column("bpb ref", "bpb_reference", hint="bits per UTF-8 byte"),
        Column("Δ bpb", "delta_bpb", hint="bits per byte, model − reference"),
        *_TEST_COLUMNS,
    ),
    "none": (
        Column("bytes", "n_bytes"),
        Column("ppl model", "ppl_model", hint="token-weighted perplexity of the model"),
        Column("bpb model", "bpb_model", hint="bits per UTF-8 byte"),
        *_TEST_COLUMNS,
    ),
}

_SIGNED = {"delta_bpb", "effect"}
_PLOTS = ("statistic", "perplexity", "distribution")


def _fmt_field(key: str, value: Any) -> str:
    if key in ("p_value", "q_value"):
        return fmt_p(value)
    if key.endswith("_ci"):
        return fmt_ci(value) or MISSING
    if key in ("top1_agreement", "auc"):
        return fmt_num(value, 2)
    return fmt_num(value, signed=key in _SIGNED)


def _columns(att: Mapping[str, Any]) -> tuple[Column, ...]:
    return _COLUMNS.get(str(att.get("comparison")), _COLUMNS["kl"])


def _rows(att: Mapping[str, Any], columns: Sequence[Column]) -> list[Row]:
    rows = []
    for c in att.get("categories") or []:
        cells = [Cell(fmt_num(c.get("n_samples"))), Cell(fmt_num(c.get("n_tokens")))]
        cells += [
            Cell(_fmt_field(col.key, c.get(col.key)), fmt_ci(c.get(f"{col.key}_ci")))
            if col.key == "mean_kl"
            else Cell(_fmt_field(col.key, c.get(col.key)))
            for col in columns
        ]
        rows.append(
            Row(
                name=as_text(c.get("name"), MISSING),
                cells=cells,
                flagged=bool(c.get("flagged")),
                tested=c.get("tested") is not False,
                note=str(c.get("note") or ""),
            )
        )
    return rows


def _total_row(att: Mapping[str, Any], columns: Sequence[Column]) -> list[Cell]:
    summary = att.get("summary") or {}
    cells = [Cell(fmt_num(summary.get("n_samples"))), Cell(fmt_num(summary.get("n_tokens")))]
    for col in columns:
        value = summary.get(col.key) if col.key not in ("p_value", "q_value", "effect") else None
        cells.append(Cell(_fmt_field(col.key, value) if value is not None else ""))
    return cells


def _probability(logprob: Any) -> str:
    if not is_number(logprob):
        return MISSING
    return fmt_prob(math.exp(min(float(logprob), 0.0)))


def _predictions(pairs: Any, actual: str) -> list[Prediction]:
    out: list[Prediction] = []
    if not isinstance(pairs, Sequence) or isinstance(pairs, str):
        return out
    for pair in pairs[:_TOP_PREDICTIONS]:
        if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
            p = float(pair[1]) if is_number(pair[1]) else 0.0
            width = round(100 * min(max(p, 0.0), 1.0))
            out.append(
                Prediction(show_token(pair[0]), fmt_prob(pair[1]), str(pair[0]) == actual, width)
            )
    return out


def _evidence_token(token: Mapping[str, Any]) -> EvidenceToken:
    actual = as_text(token.get("token"))
    before = str(token.get("context_before") or "")
    after = str(token.get("context_after") or "")
    return EvidenceToken(
        kl=fmt_num(token.get("kl")),
        token=actual,
        before=before[-_CONTEXT_BEFORE:],
        after=after[:_CONTEXT_AFTER],
        clipped_before=len(before) > _CONTEXT_BEFORE,
        clipped_after=len(after) > _CONTEXT_AFTER,
        p_model=_probability(token.get("logprob_model")),
        p_reference=_probability(token.get("logprob_reference")),
        position=fmt_num(token.get("position")),
        top_model=_predictions(token.get("top_model"), actual),
        top_reference=_predictions(token.get("top_reference"), actual),
    )


def _evidence(att: Mapping[str, Any]) -> list[EvidenceCategory]:
    flagged = {str(name) for name in att.get("flagged") or []}
    out = []
    for entry in att.get("evidence") or []:
        name = as_text(entry.get("category"), MISSING)
        samples = [
            EvidenceSample(
                id=as_text(s.get("id"), MISSING),
                mean_kl=fmt_num(s.get("mean_kl")),
                max_kl=fmt_num(s.get("max_kl")),
                n_tokens=fmt_num(s.get("n_tokens")),
                tokens=[_evidence_token(t) for t in (s.get("tokens") or [])[:_TOKENS_PER_SAMPLE]],
            )
            for s in entry.get("samples") or []
        ]
        strongest = [
            (fmt_num(t.get("kl")), show_token(t.get("token", "")), sample_id)
            for sample_id, t in top_tokens(entry, 3)
        ]
        out.append(EvidenceCategory(name, name in flagged, samples, strongest))
    return out


def _model_info(role: str, info: Any) -> dict[str, str] | None:
    if not isinstance(info, Mapping):
        return None
    files = info.get("files")
    return {
        "role": role,
        "name": as_text(info.get("name"), MISSING),
        "digest": full_digest(info.get("digest")),
        "short": short_digest(info.get("digest")),
        "tokenizer": full_digest(info.get("tokenizer_digest")),
        "dtype": str(info.get("dtype") or MISSING),
        "device": str(info.get("device") or MISSING),
        "parameters": fmt_num(info.get("n_parameters")),
        "max_length": fmt_num(info.get("max_length")),
        "files": f"{len(files)} files" if isinstance(files, Sequence) else MISSING,
    }


def _key_figures(att: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(label, value, note)`` for the cards under the verdict."""
    summary = att.get("summary") or {}
    comparison = att.get("comparison")
    categories = att.get("categories") or []
    tested = sum(1 for c in categories if c.get("tested") is not False)
    figures = [
        ("categories", f"{tested} / {len(categories)}", "tested / total"),
        (
            "samples",
            fmt_num(summary.get("n_samples")),
            f"{fmt_num(summary.get('n_tokens'))} tokens",
        ),
        ("bytes", fmt_num(summary.get("n_bytes")), "UTF-8"),
        ("perplexity", fmt_num(summary.get("ppl_model")), "model, token-weighted"),
    ]
    if comparison != "none":
        figures.append(("perplexity", fmt_num(summary.get("ppl_reference")), "reference"))
    if comparison == "kl":
        figures.append(("mean KL", fmt_num(summary.get("mean_kl")), "nats/token, all samples"))
    if comparison == "none":
        figures.append(("bits per byte", fmt_num(summary.get("bpb_model")), "model"))
    else:
        figures.append(
            ("Δ bpb", fmt_num(summary.get("delta_bpb"), signed=True), "model − reference")
        )
    figures.append(
        (
            "noise floor",
            fmt_param(summary.get("noise_floor")),
            f"above baseline {fmt_num(summary.get('baseline_level'))}",
        )
    )
    figures.append(("alpha", fmt_param(summary.get("alpha")), "Benjamini–Hochberg FDR"))
    return figures


def _provenance(att: Mapping[str, Any]) -> dict[str, Any]:
    prov = att.get("provenance") or {}
    if not isinstance(prov, Mapping):
        prov = {}
    items = [
        ("tool", f"{prov.get('tool', 'lmassay')} {prov.get('version', MISSING)}"),
        ("git commit", str(prov.get("git_commit") or MISSING)),
        ("python", str(prov.get("python") or MISSING)),
        ("platform", str(prov.get("platform") or MISSING)),
        ("seed", fmt_num(prov.get("seed"))),
        ("started", str(prov.get("started") or MISSING)),
        ("finished", str(prov.get("finished") or MISSING)),
        ("duration", f"{fmt_num(prov.get('duration_s'))} s"),
        ("throughput", f"{fmt_num(prov.get('throughput_tokens_per_s'))} tokens/s"),
    ]
    libraries = prov.get("libraries") or {}
    config = prov.get("config")
    return {
        "items": items,
        "libraries": sorted((str(k), str(v)) for k, v in libraries.items())
        if isinstance(libraries, Mapping)
        else [],
        "config": json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False)
        if config is not None
        else "",
    }


def _name(info: Any) -> str:
    return str(info.get("name") or MISSING) if isinstance(info, Mapping) else ""


def _context(att: Mapping[str, Any]) -> dict[str, Any]:
    summary = att.get("summary") or {}
    verdict = str(att.get("verdict", ""))
    columns = _columns(att)
    probes = att.get("probes") if isinstance(att.get("probes"), Mapping) else {}
    plots = render_plots(att)
    evidence = _evidence(att)
    baseline, noise = summary.get("baseline_level"), summary.get("noise_floor")
    threshold = float(baseline) + float(noise) if is_number(baseline) and is_number(noise) else None
    return {
        "schema": str(att.get("schema", "")),
        "message": str(summary.get("message") or ""),
        "model_name": _name(att.get("model")) or MISSING,
        "reference_name": _name(att.get("reference")),
        "alpha": fmt_param(summary.get("alpha")),
        "noise_floor": fmt_param(summary.get("noise_floor")),
        "baseline_level": fmt_num(baseline),
        "threshold": fmt_num(threshold),
        "different_model_threshold": fmt_param(summary.get("different_model_threshold")),
        "verdict": verdict,
        "verdict_slug": verdict if verdict in VERDICT_TITLES else "unknown",
        "verdict_title": VERDICT_TITLES.get(verdict, verdict.upper()),
        "flagged": [str(name) for name in att.get("flagged") or []],
        "comparison": str(att.get("comparison", "")),
        "kl_direction": str(att.get("kl_direction") or "KL(reference || model), nats/token"),
        "statistic_label": STATISTICS[statistic_of(att)][0],
        "key_figures": _key_figures(att),
        "warnings": [str(w) for w in att.get("warnings") or []],
        "columns": columns,
        "rows": _rows(att, columns),
        "total": _total_row(att, columns),
        "plots": {key: Markup(plots[key]) if key in plots else None for key in _PLOTS},
        "has_plots": bool(plots),
        "evidence": evidence,
        "evidence_has_tokens": any(s.tokens for e in evidence for s in e.samples),
        "models": [
            m
            for m in (
                _model_info("model", att.get("model")),
                _model_info("reference", att.get("reference")),
            )
            if m is not None
        ],
        "probes": {
            "path": str(probes.get("path") or MISSING),
            "format": str(probes.get("format") or MISSING),
            "digest": full_digest(probes.get("digest")),
            "n_samples": fmt_num(probes.get("n_samples")),
            "n_categories": fmt_num(len(probes.get("categories") or {})),
        }
        if probes
        else None,
        "provenance": _provenance(att),
        "created": str(att.get("created") or ""),
        "tool_version": str((att.get("provenance") or {}).get("version") or ""),
    }


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("lmassay.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(att: Mapping[str, Any], repair: Mapping[str, Any] | None = None) -> str:
    """One self-contained HTML page (inline CSS and SVG; no script, no external URL).

    With ``repair`` (the content of ``repair.json``) the page has a before/after section.
    """
    template = _environment().get_template("report.html.j2")
    section = {"summary": repair_summary(repair), "rows": repair_rows(repair)} if repair else None
    return template.render(**_context(att), repair=section)
