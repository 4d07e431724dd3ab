"""The markdown summary of an attestation, printed on stdout after ``lmassay attest``.

It is meant to be read in a terminal (about 40 lines for ten categories) and is also valid
GitHub-flavoured markdown.  Everything comes from ``attestation.json``; a missing or null number is
shown as an em dash.  The formatting helpers here are shared with the HTML renderer so that both
reports show the same figures.

Escaping.  Every string that comes from the attestation or a repair record (category names, sample
ids, tokens and contexts, the models' top predictions, model names and paths, digests, warnings,
messages, repair fields) is attacker-controlled: a model's vocabulary and a probe file are chosen
by whoever made them.  Each such string goes through exactly one of three functions:

- :func:`markdown_text` for running text.  The string is put on one line (:func:`visible_text`:
  newlines, tabs and other control, line-separator and bidirectional characters are shown as
  ``↵``, ``\\x1b``, ``\\u202e``), then every character that can open markdown or HTML syntax gets
  a backslash, which CommonMark and GitHub render as the character itself: ``\\`` (first, so that
  the string's own backslashes cannot undo an escape), a backtick, ``*``, ``[``, ``]``, ``~``;
  ``<`` and ``&`` unless a space follows (raw HTML, autolinks and entities need a non-space after
  them, so ``(< 5)`` stays readable); ``_`` unless it is inside a word (``mean_kl`` stays as it
  is: ``_`` cannot open emphasis there).  A string that starts with a block marker (``#``, ``>``,
  ``-``, ``+``, ``=``, ``1.``, ``1)``) has that marker escaped too, and a string that starts a
  line is stripped of surrounding whitespace first (:func:`_line_text`), so that it cannot become
  a heading, a quote, a list, a rule or an indented code block.  Without ``[`` no link or image can be formed; without
  ``<`` no HTML.  (A GitHub viewer still turns a bare ``http://`` or ``www.`` address into a link,
  as it does in any text; ``javascript:`` is never linked.)
- :func:`markdown_cell` for a table cell: as :func:`markdown_text`, and ``|`` escaped too (a pipe
  is syntax only in a table row, and every line of a string-bearing table row is written here).
- :func:`markdown_code` for a code span (a token, its context): the text on one line, in a fence
  of one more backtick than its longest run of backticks, so nothing inside it is markup.  Code
  spans are not used in tables (GitHub splits a cell at ``|`` even inside one).

The HTML renderer does not use these: jinja2 autoescapes every value (see :mod:`.html`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

from lmassay.attest.document import (
    DEFAULT_SUITE_NOTE,
    KL_DIRECTION,
    Attestation,
    CategoryRow,
    Comparison,
    Evidence,
    EvidenceToken,
    ModelInfo,
    SelfProbeCategory,
    SelfProbeExcerpt,
    Summary,
    Verdict,
    as_attestation,
)
from lmassay.digests import Digest

MISSING = "—"
FLAG_MARK = "⚑"

VERDICT_TITLES: dict[str, str] = {
    "consistent": "CONSISTENT",
    "tampered": "TAMPERED",
    "different-model": "DIFFERENT MODEL",
    "scored-only": "SCORED ONLY",
}

#: The per-sample statistic tested -> its label with units.
STATISTICS: dict[str, str] = {
    "mean_kl": "mean KL (nats/token)",
    "delta_bpb": "Δ bits per byte (model − reference)",
    "bpb": "bits per byte (model)",
}

# How many evidence tokens (and evidence categories) the terminal summary shows.
_EVIDENCE_TOKENS = 3
_EVIDENCE_CATEGORIES = 5
_CONTEXT_BEFORE = 48
_CONTEXT_AFTER = 32
_TOP_PREDICTIONS = 3


# ----------------------------------------------------------------------------- formatting helpers


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (``bool`` and ``None`` are not numbers)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def fmt_num(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    """A number with ``digits`` significant digits; scientific below 0.001; ``—`` when missing.

    Integers are printed in full with thousands separators; floats of 1000 and more are rounded
    to an integer rather than shown in scientific notation.
    """
    if not is_number(value):
        return MISSING
    sign = "+" if signed else ""
    if isinstance(value, int):
        return f"{value:{sign},}"
    x = float(value)
    if x == 0:
        return "0"
    if abs(x) >= 10**digits:
        return f"{x:{sign},.0f}"
    rounded = float(f"{x:.{digits}g}")
    magnitude = abs(rounded)
    if magnitude < 1e-3:
        return f"{rounded:{sign}.{digits - 1}e}"
    if magnitude >= 10**digits:
        return f"{rounded:{sign},.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
    return f"{rounded:{sign}.{decimals}f}"


def fmt_p(value: Any) -> str:
    """A p- or q-value: two significant digits, scientific when below 0.001."""
    if not is_number(value):
        return MISSING
    x = float(value)
    if x == 0:
        return "0"
    if x < 1e-3:
        return f"{x:.1e}"
    return fmt_num(x, 2)


def fmt_param(value: Any) -> str:
    """A setting such as alpha or the noise floor: up to 3 significant digits, no trailing zeros."""
    return f"{float(value):.3g}" if is_number(value) else MISSING


def fmt_prob(value: Any) -> str:
    """A probability as a percentage: ``41%``, ``1.8%``, ``0.38%``."""
    if not is_number(value):
        return MISSING
    percent = 100 * float(value)
    if percent == 0:
        return "0%"
    if abs(percent) >= 10:
        return f"{percent:.0f}%"
    return f"{fmt_num(percent, 2)}%"


def fmt_ci(interval: Any, digits: int = 3) -> str:
    """``[lo, hi]`` for a two-number interval, else an empty string."""
    if (
        isinstance(interval, Sequence)
        and not isinstance(interval, str)
        and len(interval) == 2
        and all(is_number(v) for v in interval)
    ):
        return f"[{fmt_num(interval[0], digits)}, {fmt_num(interval[1], digits)}]"
    return ""


def fmt_with_ci(value: Any, interval: Any) -> str:
    """``0.800 [0.700, 0.900]``; the interval is left out when absent."""
    text = fmt_num(value)
    ci = fmt_ci(interval)
    return f"{text} {ci}" if ci and text != MISSING else text


def short_digest(digest: Any, length: int = 12) -> str:
    """``sha256:0123456789ab`` from a :class:`Digest`, ``{"algorithm", "value"}`` or a string."""
    if isinstance(digest, Digest):
        digest = digest.to_json()
    if isinstance(digest, Mapping):
        algorithm = str(digest.get("algorithm") or "")
        value = str(digest.get("value") or "")
        if not value:
            return MISSING
        return f"{algorithm}:{value[:length]}" if algorithm else value[:length]
    if isinstance(digest, str) and digest:
        algorithm, sep, value = digest.partition(":")
        return f"{algorithm}:{value[:length]}" if sep else digest[:length]
    return MISSING


def full_digest(digest: Any) -> str:
    """``sha256:<full hex>`` (or ``—``)."""
    if isinstance(digest, Digest):
        digest = digest.to_json()
    if isinstance(digest, Mapping):
        value = str(digest.get("value") or "")
        algorithm = str(digest.get("algorithm") or "")
        if not value:
            return MISSING
        return f"{algorithm}:{value}" if algorithm else value
    if isinstance(digest, str) and digest:
        return digest
    return MISSING


_CONTROL = {"\n": "↵", "\r": "␍", "\t": "⇥"}
# Characters that move the text or the cursor when shown: controls (C0 and C1, which include the
# terminal's escape sequences), line and paragraph separators, and bidirectional overrides.
_HIDDEN_CATEGORIES = {"Cc", "Zl", "Zp"}
_BIDI = {*"\u061c\u200e\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


def as_text(value: Any, default: str = "") -> str:
    """``str(value)``, or ``default`` for ``None``."""
    return default if value is None else str(value)


def visible_text(text: Any) -> str:
    """Text on one line: newlines and tabs shown as ``↵``, ``␍``, ``⇥``; other control, separator
    and bidirectional characters as ``\\xNN`` or ``\\uNNNN``."""
    out = []
    for char in "" if text is None else str(text):
        if char in _CONTROL:
            out.append(_CONTROL[char])
        elif unicodedata.category(char) in _HIDDEN_CATEGORIES or char in _BIDI:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def show_token(token: Any) -> str:
    """A token with its whitespace made visible (a space becomes ``␣``)."""
    text = visible_text(token).replace(" ", "␣")
    return text if text else "∅"


def clip_left(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, with ``…`` when cut."""
    return text if len(text) <= limit else "…" + text[-limit:]


def clip_right(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, with ``…`` when cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def statistic_value(row: CategoryRow, stat: str) -> tuple[float | None, tuple[float, float] | None]:
    """A category's level of the statistic ``stat`` and its 95% interval (if there is one)."""
    if stat == "mean_kl":
        return row.mean_kl, row.mean_kl_ci
    if stat == "delta_bpb":
        return row.delta_bpb, None
    return row.bpb_model, None


def top_tokens(entry: Evidence, limit: int) -> list[tuple[str, EvidenceToken]]:
    """The ``limit`` largest-KL tokens of one evidence entry as ``(sample id, token)`` pairs.

    Ties are broken by sample id and position so that the order is deterministic.
    """
    found = [(as_text(sample.id), token) for sample in entry.samples for token in sample.tokens]

    def key(item: tuple[str, EvidenceToken]) -> tuple[float, str, int]:
        sample_id, token = item
        return (
            -float(token.kl) if is_number(token.kl) else math.inf,
            sample_id,
            token.position if token.position is not None else 0,
        )

    return sorted(found, key=key)[:limit]


def predictions(pairs: Any, limit: int) -> list[tuple[str, str]]:
    """``[(shown token, probability text)]`` from a ``[[token, p], ...]`` list."""
    out: list[tuple[str, str]] = []
    if not isinstance(pairs, Sequence) or isinstance(pairs, str):
        return out
    for pair in pairs[:limit]:
        if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
            out.append((show_token(pair[0]), fmt_prob(pair[1])))
    return out


# ----------------------------------------------------------------------------- markdown pieces


# Characters that open markdown or HTML syntax anywhere in a line (see the module docstring).
_INLINE = re.compile(r"[\\`*\[\]~]|[<&](?! )|_(?![^\W_])|(?<![^\W_])_")
# Block markers at the start of a line: heading, quote, list, setext or thematic rule, ordered list.
_BLOCK = re.compile(r"( *)(?:([#>+=-])|(\d+)([.)])(?= |$))")


def markdown_text(text: Any) -> str:
    """``text`` as literal markdown on one line: see "Escaping" in the module docstring."""
    escaped = _INLINE.sub(lambda m: "\\" + m.group(0), visible_text(text))
    block = _BLOCK.match(escaped)
    if block is None:
        return escaped
    indent, marker, number, delimiter = block.groups()
    start = f"{indent}\\{marker}" if marker else f"{indent}{number}\\{delimiter}"
    return start + escaped[block.end() :]


def markdown_cell(text: Any) -> str:
    """``text`` for a table cell: as :func:`markdown_text`, with ``|`` escaped as well."""
    return markdown_text(text).replace("|", "\\|")


def _line_text(text: Any) -> str:
    """``text`` for the start of a line: stripped of surrounding whitespace, then escaped."""
    return markdown_text(as_text(text).strip())


def markdown_code(text: Any) -> str:
    """A markdown code span of ``text`` on one line that survives backticks inside it."""
    text = visible_text(text)
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """A GitHub table padded so that it also lines up in a terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (width + 1) + ":" if i in right else "-" * (width + 2)
        for i, width in enumerate(widths)
    ]
    return [line(headers), "|" + "|".join(rule) + "|", *(line(row) for row in rows)]


def _model_line(role: str, info: ModelInfo | None) -> str:
    if info is None:
        return f"- {role}: none"
    details = [markdown_text(short_digest(info.digest))]
    details += [markdown_text(value) for value in (info.dtype, info.device) if value]
    return f"- {role}: {markdown_text(as_text(info.name, MISSING))} ({', '.join(details)})"


def _headline(att: Attestation) -> list[str]:
    title = VERDICT_TITLES[att.verdict.value]
    if att.flagged:
        title += f" — flagged: {', '.join(markdown_text(name) for name in att.flagged)}"
    elif att.verdict is Verdict.SCORED_ONLY:
        title += " — model scored alone, no reference"
    elif att.verdict is Verdict.CONSISTENT:
        title += " — no category flagged"
    lines = [f"# lmassay: {title}"]
    if att.summary.message:
        lines += ["", _line_text(att.summary.message)]
    return lines


_HOW = {
    Comparison.BPB: "bits per byte (no token-level KL: different tokenizers, a baseline run or "
    "--comparison bpb)",
    Comparison.NONE: "model alone (bits per byte across categories; weak evidence)",
}


def _overall(summary: Summary, comparison: Comparison) -> str:
    overall = [
        f"{fmt_num(summary.n_samples)} samples",
        f"{fmt_num(summary.n_tokens)} tokens",
        f"{fmt_num(summary.n_bytes)} bytes",
    ]
    if comparison is Comparison.NONE:
        overall.append(f"ppl {fmt_num(summary.ppl_model)}")
    else:
        overall.append(
            f"ppl {fmt_num(summary.ppl_model)} model vs {fmt_num(summary.ppl_reference)} reference"
        )
    if comparison is Comparison.KL:
        overall.append(f"mean KL {fmt_num(summary.mean_kl)}")
    if comparison is Comparison.NONE:
        overall.append(f"bpb {fmt_num(summary.bpb_model)}")
    else:
        overall.append(f"Δ bpb {fmt_num(summary.delta_bpb, signed=True)}")
    return f"- overall: {', '.join(overall)}"


def _overview(att: Attestation) -> list[str]:
    probes, comparison = att.probes, att.comparison
    lines = [_model_line("model", att.model)]
    if att.reference is not None or comparison is not Comparison.NONE:
        lines.append(_model_line("reference", att.reference))
    if probes is not None and probes.to_json():
        n_categories = len(probes.categories or att.categories)
        lines.append(
            f"- probes: {markdown_text(as_text(probes.path, MISSING))} "
            f"({markdown_text(short_digest(probes.digest))}), "
            f"{fmt_num(probes.n_samples)} samples in {n_categories} categories"
            + (f"; {DEFAULT_SUITE_NOTE}" if probes.default_suite else "")
        )
    how = _HOW.get(comparison) or markdown_text(att.kl_direction or KL_DIRECTION)
    lines.append(f"- comparison: {markdown_text(comparison.value)}, {how}")
    lines.append(_overall(att.summary, comparison))
    return lines


def _flag_mark(category: CategoryRow) -> str:
    if category.flagged:
        reasons = markdown_cell("+".join(category.reasons))
        return f"{FLAG_MARK} {reasons}" if category.reasons else FLAG_MARK
    if category.tested is False:
        return "untested"
    return ""


Getter = Callable[[Any], str]


def _num(key: str, *, signed: bool = False) -> Getter:
    """The field ``key`` of a category row (or of the summary, for the "(all)" row), formatted."""
    return lambda record: fmt_num(getattr(record, key, None), signed=signed)


def _blank(record: Any) -> str:
    return ""


#: Table columns by comparison: (header, value of a category, value of the "(all)" row).
_TABLE: dict[Comparison, list[tuple[str, Getter, Getter]]] = {
    Comparison.KL: [
        ("ppl model", _num("ppl_model"), _num("ppl_model")),
        ("ppl ref", _num("ppl_reference"), _num("ppl_reference")),
        ("mean KL [95% CI]", lambda c: fmt_with_ci(c.mean_kl, c.mean_kl_ci), _num("mean_kl")),
        ("tail KL", _num("tail_kl"), _blank),
        ("Δ bpb", _num("delta_bpb", signed=True), _num("delta_bpb", signed=True)),
    ],
    Comparison.BPB: [
        ("ppl model", _num("ppl_model"), _num("ppl_model")),
        ("ppl ref", _num("ppl_reference"), _num("ppl_reference")),
        ("bpb model", _num("bpb_model"), _num("bpb_model")),
        ("bpb ref", _num("bpb_reference"), _num("bpb_reference")),
        ("Δ bpb", _num("delta_bpb", signed=True), _num("delta_bpb", signed=True)),
    ],
    Comparison.NONE: [
        ("ppl model", _num("ppl_model"), _num("ppl_model")),
        ("bpb", _num("bpb_model"), _num("bpb_model")),
    ],
}


def _category_table(att: Attestation) -> list[str]:
    columns = [
        ("samples", _num("n_samples"), _num("n_samples")),
        ("tokens", _num("n_tokens"), _num("n_tokens")),
        *_TABLE[att.comparison],
        ("q", lambda c: fmt_p(c.q_value), _blank),
        ("effect", _num("effect", signed=True), _blank),
    ]
    rows = [
        [markdown_cell(c.name), *(get(c) for _, get, _ in columns), _flag_mark(c)]
        for c in att.categories
    ]
    rows.append(["(all)", *(total(att.summary) for _, _, total in columns), ""])
    headers = ["category", *(header for header, _, _ in columns), "flag"]
    return _table(headers, rows, right=set(range(1, len(headers) - 1)))


def _rule(att: Attestation) -> list[str]:
    summary = att.summary
    lines = [
        f"{FLAG_MARK} = flagged, with the tests that flagged it: mean (one-sided Mann–Whitney "
        f"U vs the other categories, Benjamini–Hochberg q below alpha {fmt_param(summary.alpha)}, "
        f"and effect above its floor: the noise floor {fmt_param(summary.noise_floor)} or a "
        "multiple of the other categories' spread), sparse (a few samples' largest token "
        "divergences), answer (stated answers made less likely) (statistic: "
        f"{STATISTICS[att.statistic]}; baseline level {fmt_num(summary.baseline_level)})."
    ]
    if att.verdict is Verdict.DIFFERENT_MODEL:
        lines.append(
            "Different model: the difference is large everywhere (different-model threshold "
            f"{fmt_param(summary.different_model_threshold)}), so it is not localised "
            "tampering of one category."
        )
    return lines


def _warnings(att: Attestation) -> list[str]:
    if not att.warnings:
        return []
    return ["**Warnings**", *(f"- {_line_text(w)}" for w in att.warnings)]


def _token_line(sample_id: str, token: EvidenceToken) -> list[str]:
    before = clip_left(visible_text(token.context_before), _CONTEXT_BEFORE)
    after = clip_right(visible_text(token.context_after), _CONTEXT_AFTER)
    context = markdown_code(f"{before}⟦{visible_text(token.token)}⟧{after}")
    limit = _TOP_PREDICTIONS
    top_model = ", ".join(f"{markdown_text(t)} {p}" for t, p in predictions(token.top_model, limit))
    top_ref = ", ".join(
        f"{markdown_text(t)} {p}" for t, p in predictions(token.top_reference, limit)
    )
    return [
        f"- KL {fmt_num(token.kl)} {markdown_code(show_token(token.token))} "
        f"({markdown_text(sample_id)}): {context}",
        f"  model top: {top_model or MISSING}; reference top: {top_ref or MISSING}",
    ]


def _evidence(att: Attestation) -> list[str]:
    entries = att.evidence
    lines: list[str] = []
    for entry in entries[:_EVIDENCE_CATEGORIES]:
        name = entry.category
        if name in att.flagged:
            lines += ["", f"## Evidence: {markdown_text(name)} (flagged)"]
        else:
            lines += ["", f"## Largest differences: {markdown_text(name)} (not flagged)"]
        tokens = top_tokens(entry, _EVIDENCE_TOKENS if len(entries) == 1 else 2)
        for sample_id, token in tokens:
            lines += _token_line(sample_id, token)
        if not tokens:
            samples = [as_text(s.id) for s in entry.samples]
            listed = ", ".join(markdown_text(s) for s in samples[:5]) or MISSING
            lines.append(f"- no token-level evidence (no shared tokenizer); samples: {listed}")
    if len(entries) > _EVIDENCE_CATEGORIES:
        lines += ["", f"({len(entries) - _EVIDENCE_CATEGORIES} more categories in report.html)"]
    return lines


_SELF_PROBE_PROMPT = 40
_SELF_PROBE_TEXT = 160


def self_probe_rows(att: Attestation) -> list[tuple[SelfProbeCategory, CategoryRow | None]]:
    """The self-probe categories, largest log-ratio first, each with its first-pass row."""
    if att.self_probe is None:
        return []
    first = {c.name: c for c in att.categories}
    rows = sorted(
        att.self_probe.categories,
        key=lambda c: (-(c.logratio if is_number(c.logratio) else -math.inf), c.name),
    )
    return [(row, first.get(row.name)) for row in rows]


def _self_probe(att: Attestation) -> list[str]:
    """The section "What the model now says": both KL directions per category, top excerpts."""
    probe = att.self_probe
    if probe is None:
        return []
    lines = [
        "",
        "## What the model now says",
        f"{fmt_num(probe.n_samples)} continuations ({fmt_num(probe.n_per_category)} per category, "
        f"at most {fmt_num(probe.new_tokens)} tokens, temperature {fmt_param(probe.temperature)}) "
        "sampled from the model and scored by both models. Log-ratio = log p model − log p "
        "reference per token, which estimates KL(model ‖ reference) on the model's own text; "
        "the verdict above is the first pass's.",
        "",
    ]
    table = [
        [
            markdown_cell(row.name),
            fmt_num(first.mean_kl if first is not None else None),
            fmt_num(row.logratio, signed=True),
            fmt_num(row.logratio_se),
            fmt_num(row.n_samples),
        ]
        for row, first in self_probe_rows(att)
    ]
    headers = ["category", "KL(ref‖model) probes", "KL(model‖ref) own text", "± se", "samples"]
    lines += _table(headers, table, {1, 2, 3, 4})
    by_category: dict[str, list[SelfProbeExcerpt]] = {}
    for excerpt in probe.top:
        by_category.setdefault(as_text(excerpt.category), []).append(excerpt)
    for name, excerpts in by_category.items():
        lines += ["", f"**{markdown_text(name)}**"]
        for excerpt in excerpts:
            prompt = clip_left(visible_text(excerpt.prompt), _SELF_PROBE_PROMPT)
            text = clip_right(visible_text(excerpt.continuation), _SELF_PROBE_TEXT)
            lines.append(
                f"- {fmt_num(excerpt.logratio, signed=True)} nats/token "
                f"({markdown_text(excerpt.id)}): {markdown_code(f'{prompt}⟦{text}⟧')}"
            )
    return lines


def render_markdown(
    att: Attestation | Mapping[str, Any], repair: Mapping[str, Any] | None = None
) -> str:
    """The markdown summary of an attestation (the text printed after ``lmassay attest``).

    ``att`` is the typed document or its parsed JSON.  Deterministic: the same attestation always
    gives the same text.  Null numbers show as ``—``.  With ``repair`` (the content of
    ``repair.json``) a before/after section follows the headline.
    """
    from lmassay.report.repair_section import repair_markdown

    doc = as_attestation(att)
    lines = [*_headline(doc), ""]
    if repair:
        lines += [*repair_markdown(repair), ""]
    lines += [*_overview(doc), "", *_category_table(doc), "", *_rule(doc)]
    warnings = _warnings(doc)
    if warnings:
        lines += ["", *warnings]
    lines += _evidence(doc)
    lines += _self_probe(doc)
    return "\n".join(line.rstrip() for line in lines) + "\n"
