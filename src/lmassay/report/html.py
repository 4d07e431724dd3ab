"""The HTML report: one self-contained page rendered from ``attestation.json``.

The page needs nothing outside itself: CSS is inline, figures are inline SVG, there is no script
and no external URL.  The template (``templates/report.html.j2``) is rendered by jinja2 with
autoescaping on, so every string that comes from the attestation (category names, tokens,
contexts, top predictions, model names, paths, digests, warnings, provenance, the repair record)
is escaped, in text and in attribute values alike; only the SVG figures, which matplotlib writes
with its own XML escaping (see :mod:`.plots`), are inserted as markup.  The page has no script
element and no embedded JSON: the resolved configuration is shown as escaped text in a ``<pre>``.
``tests/test_report_escaping.py`` poisons every string of an attestation and checks both reports.

This module turns the attestation into display-ready values (formatted numbers, table rows) so
that the template stays free of logic.
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

from lmassay.attest.document import (
    DEFAULT_SUITE_NOTE,
    KL_DIRECTION,
    Attestation,
    Comparison,
    ModelInfo,
    Provenance,
    Summary,
    as_attestation,
)
from lmassay.attest.document import EvidenceToken as TokenRecord
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
    self_probe_rows,
    short_digest,
    show_token,
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
    reasons: str = ""
    """The tests that flagged it, joined by "+": mean, sparse, answer."""


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

_COLUMNS: dict[Comparison, tuple[Column, ...]] = {
    Comparison.KL: (
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
    Comparison.BPB: (
        Column("ppl model", "ppl_model", hint="perplexity over the model's own tokens"),
        Column("ppl ref", "ppl_reference", hint="perplexity over the reference's own tokens"),
        Column("bpb model", "bpb_model", hint="bits per UTF-8 byte"),
        Column("bpb ref", "bpb_reference", hint="bits per UTF-8 byte"),
        Column("Δ bpb", "delta_bpb", hint="bits per byte, model − reference"),
        *_TEST_COLUMNS,
    ),
    Comparison.NONE: (
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


def _rows(att: Attestation, columns: Sequence[Column]) -> list[Row]:
    rows = []
    for c in att.categories:
        cells = [Cell(fmt_num(c.n_samples)), Cell(fmt_num(c.n_tokens))]
        cells += [
            Cell(_fmt_field(col.key, c.mean_kl), fmt_ci(c.mean_kl_ci))
            if col.key == "mean_kl"
            else Cell(_fmt_field(col.key, getattr(c, col.key)))
            for col in columns
        ]
        rows.append(
            Row(
                name=c.name,
                cells=cells,
                flagged=bool(c.flagged),
                tested=c.tested is not False,
                note=c.note or "",
                reasons="+".join(c.reasons),
            )
        )
    return rows


def _total_row(summary: Summary, columns: Sequence[Column]) -> list[Cell]:
    cells = [Cell(fmt_num(summary.n_samples)), Cell(fmt_num(summary.n_tokens))]
    for col in columns:
        value = getattr(summary, col.key, None)
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


def _evidence_token(token: TokenRecord) -> EvidenceToken:
    actual = as_text(token.token)
    before = token.context_before or ""
    after = token.context_after or ""
    return EvidenceToken(
        kl=fmt_num(token.kl),
        token=actual,
        before=before[-_CONTEXT_BEFORE:],
        after=after[:_CONTEXT_AFTER],
        clipped_before=len(before) > _CONTEXT_BEFORE,
        clipped_after=len(after) > _CONTEXT_AFTER,
        p_model=_probability(token.logprob_model),
        p_reference=_probability(token.logprob_reference),
        position=fmt_num(token.position),
        top_model=_predictions(token.top_model, actual),
        top_reference=_predictions(token.top_reference, actual),
    )


def _evidence(att: Attestation) -> list[EvidenceCategory]:
    out = []
    for entry in att.evidence:
        samples = [
            EvidenceSample(
                id=as_text(s.id, MISSING),
                mean_kl=fmt_num(s.mean_kl),
                max_kl=fmt_num(s.max_kl),
                n_tokens=fmt_num(s.n_tokens),
                tokens=[_evidence_token(t) for t in s.tokens[:_TOKENS_PER_SAMPLE]],
            )
            for s in entry.samples
        ]
        strongest = [
            (fmt_num(t.kl), show_token(t.token), sample_id) for sample_id, t in top_tokens(entry, 3)
        ]
        out.append(
            EvidenceCategory(entry.category, entry.category in att.flagged, samples, strongest)
        )
    return out


@dataclass
class SelfProbeExcerpt:
    id: str
    logratio: str
    n_tokens: str
    prompt: str
    continuation: str
    in_top: bool  # among the overall top excerpts


@dataclass
class SelfProbeCategory:
    name: str
    mean_kl: str  # the first pass: KL(reference ‖ model) on the probes
    logratio: str  # KL(model ‖ reference) on the model's own text
    logratio_se: str
    n_samples: str
    n_tokens: str
    flagged: bool
    excerpts: list[SelfProbeExcerpt]


def _self_probe(att: Attestation) -> dict[str, Any] | None:
    """The "What the model now says" section: per category both directions and its excerpts."""
    probe = att.self_probe
    if probe is None:
        return None
    top = {e.id for e in probe.top}
    categories = [
        SelfProbeCategory(
            name=row.name,
            mean_kl=fmt_num(first.mean_kl if first is not None else None),
            logratio=fmt_num(row.logratio, signed=True),
            logratio_se=fmt_num(row.logratio_se),
            n_samples=fmt_num(row.n_samples),
            n_tokens=fmt_num(row.n_tokens),
            flagged=row.name in att.flagged,
            excerpts=[
                SelfProbeExcerpt(
                    id=as_text(e.id, MISSING),
                    logratio=fmt_num(e.logratio, signed=True),
                    n_tokens=fmt_num(e.n_tokens),
                    prompt=as_text(e.prompt),
                    continuation=as_text(e.continuation),
                    in_top=e.id in top,
                )
                for e in row.top
            ],
        )
        for row, first in self_probe_rows(att)
    ]
    return {
        "n_samples": fmt_num(probe.n_samples),
        "n_per_category": fmt_num(probe.n_per_category),
        "new_tokens": fmt_num(probe.new_tokens),
        "prompt_tokens": fmt_num(probe.prompt_tokens),
        "temperature": fmt_param(probe.temperature),
        "seed": fmt_num(probe.seed),
        "n_empty": fmt_num(probe.n_empty),
        "logratio": fmt_num(probe.logratio, signed=True),
        "duration": fmt_num(probe.duration_s),
        "categories": categories,
    }


def _model_info(role: str, info: ModelInfo | None) -> dict[str, str] | None:
    if info is None:
        return None
    return {
        "role": role,
        "name": as_text(info.name, MISSING),
        "digest": full_digest(info.digest),
        "short": short_digest(info.digest),
        "tokenizer": full_digest(info.tokenizer_digest),
        "dtype": info.dtype or MISSING,
        "device": info.device or MISSING,
        "parameters": fmt_num(info.n_parameters),
        "max_length": fmt_num(info.max_length),
        "files": f"{len(info.files)} files" if info.files is not None else MISSING,
    }


def _key_figures(att: Attestation) -> list[tuple[str, str, str]]:
    """``(label, value, note)`` for the cards under the verdict."""
    summary, comparison, categories = att.summary, att.comparison, att.categories
    tested = sum(1 for c in categories if c.tested is not False)
    figures = [
        ("categories", f"{tested} / {len(categories)}", "tested / total"),
        ("samples", fmt_num(summary.n_samples), f"{fmt_num(summary.n_tokens)} tokens"),
        ("bytes", fmt_num(summary.n_bytes), "UTF-8"),
        ("perplexity", fmt_num(summary.ppl_model), "model, token-weighted"),
    ]
    if comparison is not Comparison.NONE:
        figures.append(("perplexity", fmt_num(summary.ppl_reference), "reference"))
    if comparison is Comparison.KL:
        figures.append(("mean KL", fmt_num(summary.mean_kl), "nats/token, all samples"))
    if comparison is Comparison.NONE:
        figures.append(("bits per byte", fmt_num(summary.bpb_model), "model"))
    else:
        figures.append(("Δ bpb", fmt_num(summary.delta_bpb, signed=True), "model − reference"))
    figures.append(
        (
            "noise floor",
            fmt_param(summary.noise_floor),
            f"above baseline {fmt_num(summary.baseline_level)}",
        )
    )
    figures.append(("alpha", fmt_param(summary.alpha), "Benjamini–Hochberg FDR"))
    return figures


def _provenance(prov: Provenance | None) -> dict[str, Any]:
    source, prov = prov, prov or Provenance()
    items = [
        ("tool", f"{prov.tool or 'lmassay'} {prov.version or MISSING}"),
        ("git commit", prov.git_commit or MISSING),
        ("python", prov.python or MISSING),
        ("platform", prov.platform or MISSING),
        ("seed", fmt_num(prov.seed)),
        ("started", prov.started or MISSING),
        ("finished", prov.finished or MISSING),
        ("duration", f"{fmt_num(prov.duration_s)} s"),
        ("throughput", f"{fmt_num(prov.throughput_tokens_per_s)} tokens/s"),
    ]
    return {
        "items": items,
        "libraries": sorted((str(k), str(v)) for k, v in prov.libraries.items()),
        "config": json.dumps(prov.config, indent=2, sort_keys=True, ensure_ascii=False)
        if source is not None and source.holds("config")
        else "",
    }


def _name(info: ModelInfo | None) -> str:
    return (info.name or MISSING) if info is not None else ""


def _probes(att: Attestation) -> dict[str, str] | None:
    probes = att.probes
    if probes is None or not probes.to_json():
        return None
    return {
        "path": (probes.path or MISSING)
        + (f" — {DEFAULT_SUITE_NOTE}" if probes.default_suite else ""),
        "format": probes.format or MISSING,
        "digest": full_digest(probes.digest),
        "n_samples": fmt_num(probes.n_samples),
        "n_categories": fmt_num(len(probes.categories)),
    }


def _settings(summary: Summary) -> dict[str, str]:
    """The test's settings, formatted for the text of the page."""
    baseline, noise = summary.baseline_level, summary.noise_floor
    threshold = float(baseline) + float(noise) if is_number(baseline) and is_number(noise) else None
    return {
        "message": summary.message or "",
        "alpha": fmt_param(summary.alpha),
        "noise_floor": fmt_param(noise),
        "baseline_level": fmt_num(baseline),
        "threshold": fmt_num(threshold),
        "different_model_threshold": fmt_param(summary.different_model_threshold),
    }


def _context(att: Attestation) -> dict[str, Any]:
    verdict = att.verdict.value
    columns = _COLUMNS[att.comparison]
    plots = render_plots(att)
    evidence = _evidence(att)
    return {
        "schema": att.schema,
        **_settings(att.summary),
        "model_name": _name(att.model) or MISSING,
        "reference_name": _name(att.reference),
        "verdict": verdict,
        "verdict_slug": verdict,
        "verdict_title": VERDICT_TITLES[verdict],
        "flagged": list(att.flagged),
        "comparison": att.comparison.value,
        "kl_direction": att.kl_direction or KL_DIRECTION,
        "statistic_label": STATISTICS[att.statistic],
        "key_figures": _key_figures(att),
        "warnings": list(att.warnings),
        "columns": columns,
        "rows": _rows(att, columns),
        "total": _total_row(att.summary, columns),
        "plots": {key: Markup(plots[key]) if key in plots else None for key in _PLOTS},
        "has_plots": bool(plots),
        "evidence": evidence,
        "evidence_has_tokens": any(s.tokens for e in evidence for s in e.samples),
        "self_probe": _self_probe(att),
        "models": [
            m
            for m in (_model_info("model", att.model), _model_info("reference", att.reference))
            if m is not None
        ],
        "probes": _probes(att),
        "provenance": _provenance(att.provenance),
        "created": att.created or "",
        "tool_version": (att.provenance.version if att.provenance else None) or "",
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


def render_html(
    att: Attestation | Mapping[str, Any], repair: Mapping[str, Any] | None = None
) -> str:
    """One self-contained HTML page (inline CSS and SVG; no script, no external URL).

    ``att`` is the typed document or its parsed JSON.  With ``repair`` (the content of ``repair.json``) the page has a before/after section.
    """
    template = _environment().get_template("report.html.j2")
    section = {"summary": repair_summary(repair), "rows": repair_rows(repair)} if repair else None
    return template.render(**_context(as_attestation(att)), repair=section)
