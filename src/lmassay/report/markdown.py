"""The markdown summary of an attestation, printed on stdout after ``lmassay attest``.

It is meant to be read in a terminal (about 40 lines for ten categories) and is also valid
GitHub-flavoured markdown.  Everything comes from ``attestation.json``; a missing or null number is
shown as an em dash.  The formatting helpers here are shared with the HTML renderer so that both
reports show the same figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

MISSING = "—"
FLAG_MARK = "⚑"

VERDICT_TITLES: dict[str, str] = {
    "consistent": "CONSISTENT",
    "tampered": "TAMPERED",
    "different-model": "DIFFERENT MODEL",
    "scored-only": "SCORED ONLY",
}

#: The per-sample statistic tested -> (label with units, category field holding its value).
STATISTICS: dict[str, tuple[str, str]] = {
    "mean_kl": ("mean KL (nats/token)", "mean_kl"),
    "delta_bpb": ("Δ bits per byte (model − reference)", "delta_bpb"),
    "bpb": ("bits per byte (model)", "bpb_model"),
}

_DEFAULT_STATISTIC = {"kl": "mean_kl", "bpb": "delta_bpb", "none": "bpb"}

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
    """``sha256:0123456789ab`` from ``{"algorithm": ..., "value": ...}`` (or a plain string)."""
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


def as_text(value: Any, default: str = "") -> str:
    """``str(value)``, or ``default`` for ``None``."""
    return default if value is None else str(value)


def visible_text(text: Any) -> str:
    """Text on one line: newlines, tabs and other control characters made visible."""
    out = []
    for char in "" if text is None else str(text):
        if char in _CONTROL:
            out.append(_CONTROL[char])
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
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


def statistic_of(att: Mapping[str, Any]) -> str:
    """The statistic tested (``mean_kl``, ``delta_bpb`` or ``bpb``)."""
    summary = att.get("summary") or {}
    stat = summary.get("statistic")
    if isinstance(stat, str) and stat in STATISTICS:
        return stat
    return _DEFAULT_STATISTIC.get(str(att.get("comparison")), "mean_kl")


def top_tokens(entry: Mapping[str, Any], limit: int) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``limit`` largest-KL tokens of one evidence entry as ``(sample id, token)`` pairs.

    Ties are broken by sample id and position so that the order is deterministic.
    """
    found: list[tuple[str, Mapping[str, Any]]] = []
    for sample in entry.get("samples") or []:
        for token in sample.get("tokens") or []:
            found.append((as_text(sample.get("id")), token))

    def key(item: tuple[str, Mapping[str, Any]]) -> tuple[float, str, int]:
        sample_id, token = item
        kl = token.get("kl")
        position = token.get("position")
        return (
            -float(kl) if is_number(kl) else math.inf,
            sample_id,
            int(position) if is_number(position) else 0,
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


def _md(text: Any) -> str:
    """Inline markdown text on one line; ``<`` is escaped where it could open an HTML tag."""
    return re.sub(r"<(?=[A-Za-z/!?])", r"\\<", visible_text(text))


def _cell(text: Any) -> str:
    """Text for a table cell: as :func:`_md`, with ``|`` escaped."""
    return _md(text).replace("|", "\\|")


def _code(text: str) -> str:
    """A markdown code span that survives backticks inside ``text``."""
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


def _model_line(role: str, info: Any) -> str:
    if not isinstance(info, Mapping):
        return f"- {role}: none"
    details = [short_digest(info.get("digest"))]
    for key in ("dtype", "device"):
        if info.get(key):
            details.append(_md(info[key]))
    return f"- {role}: {_md(as_text(info.get('name'), MISSING))} ({', '.join(details)})"


def _headline(att: Mapping[str, Any]) -> list[str]:
    verdict = str(att.get("verdict", ""))
    title = VERDICT_TITLES.get(verdict, _md(verdict).upper() or MISSING)
    flagged = [str(name) for name in att.get("flagged") or []]
    if flagged:
        title += f" — flagged: {', '.join(_md(name) for name in flagged)}"
    elif verdict == "scored-only":
        title += " — model scored alone, no reference"
    elif verdict == "consistent":
        title += " — no category flagged"
    lines = [f"# lmassay: {title}"]
    message = (att.get("summary") or {}).get("message")
    if message:
        lines += ["", _md(message)]
    return lines


def _overview(att: Mapping[str, Any]) -> list[str]:
    summary = att.get("summary") or {}
    probes = att.get("probes") or {}
    comparison = str(att.get("comparison", MISSING))
    lines = [_model_line("model", att.get("model"))]
    if att.get("reference") is not None or comparison != "none":
        lines.append(_model_line("reference", att.get("reference")))
    if isinstance(probes, Mapping) and probes:
        n_categories = len(probes.get("categories") or att.get("categories") or [])
        lines.append(
            f"- probes: {_md(probes.get('path', MISSING))} ({short_digest(probes.get('digest'))}), "
            f"{fmt_num(probes.get('n_samples'))} samples in {n_categories} categories"
        )
    if comparison == "kl":
        how = _md(att.get("kl_direction") or "KL(reference || model), nats/token")
    elif comparison == "bpb":
        how = "bits per byte (no token-level KL: different tokenizers, a baseline run or --comparison bpb)"
    else:
        how = "model alone (bits per byte across categories; weak evidence)"
    lines.append(f"- comparison: {_md(comparison)}, {how}")
    overall = [
        f"{fmt_num(summary.get('n_samples'))} samples",
        f"{fmt_num(summary.get('n_tokens'))} tokens",
        f"{fmt_num(summary.get('n_bytes'))} bytes",
    ]
    if comparison == "none":
        overall.append(f"ppl {fmt_num(summary.get('ppl_model'))}")
    else:
        overall.append(
            f"ppl {fmt_num(summary.get('ppl_model'))} model vs "
            f"{fmt_num(summary.get('ppl_reference'))} reference"
        )
    if comparison == "kl":
        overall.append(f"mean KL {fmt_num(summary.get('mean_kl'))}")
    if comparison == "none":
        overall.append(f"bpb {fmt_num(summary.get('bpb_model'))}")
    else:
        overall.append(f"Δ bpb {fmt_num(summary.get('delta_bpb'), signed=True)}")
    lines.append(f"- overall: {', '.join(overall)}")
    return lines


def _flag_mark(category: Mapping[str, Any]) -> str:
    if category.get("flagged"):
        return FLAG_MARK
    if category.get("tested") is False:
        return "untested"
    return ""


Getter = Callable[[Mapping[str, Any]], str]


def _num(key: str, *, signed: bool = False) -> Getter:
    return lambda record: fmt_num(record.get(key), signed=signed)


def _blank(record: Mapping[str, Any]) -> str:
    return ""


#: Table columns by comparison: (header, value of a category, value of the "(all)" row).
_TABLE: dict[str, list[tuple[str, Getter, Getter]]] = {
    "kl": [
        ("ppl model", _num("ppl_model"), _num("ppl_model")),
        ("ppl ref", _num("ppl_reference"), _num("ppl_reference")),
        (
            "mean KL [95% CI]",
            lambda c: fmt_with_ci(c.get("mean_kl"), c.get("mean_kl_ci")),
            _num("mean_kl"),
        ),
        ("tail KL", _num("tail_kl"), _blank),
        ("Δ bpb", _num("delta_bpb", signed=True), _num("delta_bpb", signed=True)),
    ],
    "bpb": [
        ("ppl model", _num("ppl_model"), _num("ppl_model")),
        ("ppl ref", _num("ppl_reference"), _num("ppl_reference")),
        ("bpb model", _num("bpb_model"), _num("bpb_model")),
        ("bpb ref", _num("bpb_reference"), _num("bpb_reference")),
        ("Δ bpb", _num("delta_bpb", signed=True), _num("delta_bpb", signed=True)),
    ],
    "none": [
        ("ppl model", _num("ppl_model"), _num("ppl_model")),
        ("bpb", _num("bpb_model"), _num("bpb_model")),
    ],
}


def _category_table(att: Mapping[str, Any]) -> list[str]:
    columns = [
        ("samples", _num("n_samples"), _num("n_samples")),
        ("tokens", _num("n_tokens"), _num("n_tokens")),
        *_TABLE.get(str(att.get("comparison")), _TABLE["kl"]),
        ("q", lambda c: fmt_p(c.get("q_value")), _blank),
        ("effect", _num("effect", signed=True), _blank),
    ]
    summary = att.get("summary") or {}
    rows = [
        [_cell(as_text(c.get("name"), MISSING)), *(get(c) for _, get, _ in columns), _flag_mark(c)]
        for c in att.get("categories") or []
    ]
    rows.append(["(all)", *(total(summary) for _, _, total in columns), ""])
    headers = ["category", *(header for header, _, _ in columns), "flag"]
    return _table(headers, rows, right=set(range(1, len(headers) - 1)))


def _rule(att: Mapping[str, Any]) -> list[str]:
    summary = att.get("summary") or {}
    label = STATISTICS[statistic_of(att)][0]
    lines = [
        f"{FLAG_MARK} = flagged: one-sided Mann–Whitney U vs the other categories, "
        f"Benjamini–Hochberg q below alpha {fmt_param(summary.get('alpha'))}, and effect above "
        f"the noise floor {fmt_param(summary.get('noise_floor'))} (statistic: {label}; "
        f"baseline level {fmt_num(summary.get('baseline_level'))})."
    ]
    if att.get("verdict") == "different-model":
        lines.append(
            "Different model: the difference is large everywhere (different-model threshold "
            f"{fmt_param(summary.get('different_model_threshold'))}), so it is not localised "
            "tampering of one category."
        )
    return lines


def _warnings(att: Mapping[str, Any]) -> list[str]:
    warnings = [str(w) for w in att.get("warnings") or []]
    if not warnings:
        return []
    return ["**Warnings**", *(f"- {_md(w)}" for w in warnings)]


def _token_line(sample_id: str, token: Mapping[str, Any]) -> list[str]:
    before = clip_left(visible_text(token.get("context_before", "")), _CONTEXT_BEFORE)
    after = clip_right(visible_text(token.get("context_after", "")), _CONTEXT_AFTER)
    context = _code(f"{before}⟦{visible_text(token.get('token', ''))}⟧{after}")
    limit = _TOP_PREDICTIONS
    top_model = ", ".join(f"{t} {p}" for t, p in predictions(token.get("top_model"), limit))
    top_ref = ", ".join(f"{t} {p}" for t, p in predictions(token.get("top_reference"), limit))
    return [
        f"- KL {fmt_num(token.get('kl'))} {_code(show_token(token.get('token', '')))} "
        f"({_md(sample_id)}): {context}",
        f"  model top: {top_model or MISSING}; reference top: {top_ref or MISSING}",
    ]


def _evidence(att: Mapping[str, Any]) -> list[str]:
    entries: list[Mapping[str, Any]] = [e for e in att.get("evidence") or [] if e]
    if not entries:
        return []
    flagged = {str(name) for name in att.get("flagged") or []}
    lines: list[str] = []
    for entry in entries[:_EVIDENCE_CATEGORIES]:
        name = as_text(entry.get("category"), MISSING)
        if name in flagged:
            lines += ["", f"## Evidence: {_md(name)} (flagged)"]
        else:
            lines += ["", f"## Largest differences: {_md(name)} (not flagged)"]
        tokens = top_tokens(entry, _EVIDENCE_TOKENS if len(entries) == 1 else 2)
        if tokens:
            for sample_id, token in tokens:
                lines += _token_line(sample_id, token)
        else:
            samples = [as_text(s.get("id")) for s in entry.get("samples") or []]
            listed = ", ".join(_md(s) for s in samples[:5]) or MISSING
            lines.append(f"- no token-level evidence (no shared tokenizer); samples: {listed}")
    if len(entries) > _EVIDENCE_CATEGORIES:
        lines += ["", f"({len(entries) - _EVIDENCE_CATEGORIES} more categories in report.html)"]
    return lines


def render_markdown(att: Mapping[str, Any], repair: Mapping[str, Any] | None = None) -> str:
    """The markdown summary of an attestation (the text printed after ``lmassay attest``).

    Deterministic: the same attestation always gives the same text.  Null numbers show as ``—``.
    With ``repair`` (the content of ``repair.json``) a before/after section follows the headline.
    """
    from lmassay.report.repair_section import repair_markdown

    lines = [*_headline(att), ""]
    if repair:
        lines += [*repair_markdown(repair), ""]
    lines += [*_overview(att), "", *_category_table(att), "", *_rule(att)]
    warnings = _warnings(att)
    if warnings:
        lines += ["", *warnings]
    lines += _evidence(att)
    return "\n".join(line.rstrip() for line in lines) + "\n"
