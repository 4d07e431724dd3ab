"""Figures of the HTML report, drawn with matplotlib and returned as inline SVG text.

The figures are built with the object-oriented API (``matplotlib.figure.Figure``) and never touch
``pyplot``: no backend is selected, no global figure registry is filled, and nothing needs closing,
so rendering a report has no side effect on a caller's own plotting.  matplotlib is imported only
when a figure is drawn.  The SVG is deterministic (fixed hash salt, no date), text stays text
(``svg.fonttype: none``) to keep the files small, and the element ids of each figure get a prefix
so that several figures can share one HTML page.

Category names reach the figures only as tick labels: matplotlib's SVG writer escapes text and
attribute values, ``$`` is kept literal (no mathtext), and the id prefixes are applied inside tags
only, so a label is shown exactly as written and cannot add markup.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lmassay.attest.document import Attestation, CategoryRow, as_attestation
from lmassay.report.markdown import STATISTICS, is_number, statistic_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FLAGGED = "#c62828"
PASSED = "#1f4e79"
UNTESTED = "#9e9e9e"
REFERENCE = "#6b7280"
GRID = "#e5e7eb"

# Typed Any: matplotlib's stubs want a dict keyed by literal rc names.
_RC: Any = {
    "svg.fonttype": "none",
    "svg.hashsalt": "lmassay",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "xtick.color": "#374151",
    "ytick.color": "#374151",
    "legend.frameon": False,
}
_WIDTH_IN = 9.0
_LABEL_CHARS = 28
_ID = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')
_TAG = re.compile(r"<[^>]*>")  # text and attribute values are escaped: no ">" inside a tag


def _label(name: Any) -> str:
    """A category name as a tick label: one line, shortened, ``$`` kept literal (not mathtext)."""
    text = " ".join(str(name).split())
    text = text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")


def _height(n_rows: int) -> float:
    return 1.3 + 0.24 * max(n_rows, 1)


def _new_figure(n_rows: int) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(_WIDTH_IN, _height(n_rows)), layout="constrained")


def _to_svg(fig: Figure, prefix: str, title: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), with its ids prefixed."""
    buffer = io.StringIO()
    fig.savefig(
        buffer,
        format="svg",
        metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
    )
    fig.clear()
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # only inside tags, so that a label reading 'id="x"' is left as written
    text = _TAG.sub(
        lambda tag: _ID.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", tag.group(0)), text
    )
    escaped_title = title.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{escaped_title}" ', 1)


def _style_axes(ax: Axes, names: Sequence[str], flagged: Sequence[bool]) -> None:
    ax.set_yticks(range(len(names)), [_label(n) for n in names])
    ax.set_ylim(len(names) - 0.5, -0.5)  # first category at the top
    for tick, is_flagged in zip(ax.get_yticklabels(), flagged, strict=True):
        if is_flagged:
            tick.set_color(FLAGGED)
            tick.set_fontweight("bold")
    ax.grid(axis="x", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0)


def _use_log(values: Sequence[float]) -> bool:
    """Log scale when all values are positive and span more than a factor of 20."""
    positive = [v for v in values if v > 0]
    if not positive or len(positive) != len(values):
        return False
    return max(positive) / min(positive) > 20


def _color(category: CategoryRow) -> str:
    if category.flagged:
        return FLAGGED
    if category.tested is False:
        return UNTESTED
    return PASSED


def _style_rows(ax: Axes, categories: Sequence[CategoryRow]) -> None:
    _style_axes(ax, [c.name for c in categories], [bool(c.flagged) for c in categories])


Interval = tuple[float, float] | None


def _levels(att: Attestation) -> list[tuple[CategoryRow, float, Interval]]:
    """The categories with a level of the tested statistic: (row, level, interval around it)."""
    out: list[tuple[CategoryRow, float, Interval]] = []
    for c in att.categories:
        value, ci = statistic_value(c, att.statistic)
        if not is_number(value):
            continue
        interval = None
        if ci is not None and all(is_number(v) for v in ci):
            interval = (min(float(ci[0]), value), max(float(ci[1]), value))
        out.append((c, float(value), interval))
    return out


def _draw_levels(ax: Axes, levels: Sequence[tuple[CategoryRow, float, Interval]]) -> None:
    """One point per category, with its interval, coloured and labelled by its flag."""
    drawn: set[str] = set()
    for y, (c, value, interval) in enumerate(levels):
        color = _color(c)
        kind = (
            "flagged"
            if color == FLAGGED
            else ("not tested" if color == UNTESTED else "not flagged")
        )
        xerr = None if interval is None else [[value - interval[0]], [interval[1] - value]]
        ax.errorbar(
            [value],
            [y],
            xerr=xerr,
            fmt="o",
            color=color,
            ecolor=color,
            elinewidth=1.4,
            capsize=2.5,
            markersize=5,
            label=None if kind in drawn else kind,
        )
        drawn.add(kind)


def statistic_plot(att: Attestation | Mapping[str, Any]) -> str | None:
    """Per-category level of the tested statistic with its 95% bootstrap interval.

    Flagged categories are red; the dashed line is the baseline level (median over tested
    categories) and the dotted line the baseline plus the noise floor, the smallest effect that is
    flagged.  Returns ``None`` when no category has a value.
    """
    import matplotlib

    doc = as_attestation(att)
    label = STATISTICS[doc.statistic]
    levels = _levels(doc)
    if not levels:
        return None
    extent = [v for _, v, _ in levels] + [v for _, _, iv in levels if iv for v in iv]
    baseline, noise = doc.summary.baseline_level, doc.summary.noise_floor
    threshold = float(baseline) + float(noise) if is_number(baseline) and is_number(noise) else None
    log = _use_log(extent + ([threshold] if threshold is not None else []))

    with matplotlib.rc_context(_RC):
        fig = _new_figure(len(levels))
        ax = fig.add_subplot()
        _draw_levels(ax, levels)
        if is_number(baseline):
            ax.axvline(
                float(baseline),
                color=REFERENCE,
                linestyle="--",
                linewidth=1,
                label="baseline level",
            )
        if threshold is not None:
            ax.axvline(
                threshold,
                color=FLAGGED,
                linestyle=":",
                linewidth=1.3,
                label="baseline + noise floor",
            )
        if doc.statistic == "delta_bpb":
            ax.axvline(0.0, color="#111827", linewidth=0.6)
        if log:
            ax.set_xscale("log")
        _style_rows(ax, [c for c, _, _ in levels])
        ax.set_xlabel(label + (" — log scale" if log else ""))
        interval_note = " with 95% bootstrap interval" if any(iv for _, _, iv in levels) else ""
        ax.set_title(f"Per-category {label}{interval_note}", loc="left")
        fig.legend(loc="outside lower center", ncol=5, fontsize=8, handlelength=1.6)
        return _to_svg(fig, "stat", f"Per-category {label}")


def _draw_perplexity_intervals(ax: Axes, categories: Sequence[CategoryRow]) -> None:
    """95% bootstrap intervals: the model's drawn above each row, the reference's below."""
    for y, c in enumerate(categories):
        for ci, offset, colour in (
            (c.ppl_model_ci, -0.2, _color(c)),
            (c.ppl_reference_ci, 0.2, REFERENCE),
        ):
            if ci is not None and all(is_number(v) for v in ci):
                ax.errorbar(
                    [(float(ci[0]) + float(ci[1])) / 2],
                    [y + offset],
                    xerr=[[(float(ci[1]) - float(ci[0])) / 2]],
                    fmt="none",
                    ecolor=colour,
                    elinewidth=1.0,
                    capsize=2,
                    zorder=2,
                )


def _draw_perplexities(
    ax: Axes, categories: Sequence[CategoryRow], model: list[float], reference: list[float | None]
) -> None:
    """Model points (filled, joined to the reference's) and reference points (hollow)."""
    for y, (c, m, r) in enumerate(zip(categories, model, reference, strict=True)):
        if r is not None:
            ax.plot([r, m], [y, y], color=GRID, linewidth=3, solid_capstyle="round", zorder=1)
        ax.plot(
            [m],
            [y],
            "o",
            color=_color(c),
            markersize=5.5,
            zorder=3,
            label="model" if y == 0 else None,
        )
    _draw_perplexity_intervals(ax, categories)
    ref_points = [(r, y) for y, r in enumerate(reference) if r is not None]
    if ref_points:
        ax.plot(
            [r for r, _ in ref_points],
            [y for _, y in ref_points],
            "o",
            markerfacecolor="white",
            markeredgecolor=REFERENCE,
            markeredgewidth=1.3,
            markersize=5.5,
            linestyle="none",
            zorder=2,
            label="reference",
        )


def perplexity_plot(att: Attestation | Mapping[str, Any]) -> str | None:
    """Token-weighted perplexity per category: model (filled) and reference (hollow), joined."""
    import matplotlib

    categories = [c for c in as_attestation(att).categories if is_number(c.ppl_model)]
    if not categories:
        return None
    model = [float(c.ppl_model) for c in categories if c.ppl_model is not None]
    reference = [float(c.ppl_reference) if is_number(c.ppl_reference) else None for c in categories]
    has_reference = any(r is not None for r in reference)
    log = _use_log(model + [r for r in reference if r is not None])

    with matplotlib.rc_context(_RC):
        fig = _new_figure(len(categories))
        ax = fig.add_subplot()
        _draw_perplexities(ax, categories, model, reference)
        if log:
            ax.set_xscale("log")
        _style_rows(ax, categories)
        ax.set_xlabel(
            "perplexity, token-weighted, with 95% bootstrap intervals"
            + (" — log scale" if log else "")
        )
        title = (
            "Perplexity per category: model vs reference"
            if has_reference
            else "Perplexity per category (model only)"
        )
        ax.set_title(title, loc="left")
        fig.legend(loc="outside lower center", ncol=2, fontsize=8, handlelength=1.2)
        return _to_svg(fig, "ppl", title)


def distribution_plot(att: Attestation | Mapping[str, Any]) -> str | None:
    """Per-sample statistic per category from its 21 quantiles: 5–95% whiskers, 25–75% box, median.

    The minimum and maximum are small ticks at the whisker ends' outside.
    """
    import matplotlib

    doc = as_attestation(att)
    label = STATISTICS[doc.statistic]
    rows = [
        (c, [float(v) for v in c.distribution])
        for c in doc.categories
        if c.distribution is not None
        and len(c.distribution) == 21
        and all(is_number(v) for v in c.distribution)
    ]
    if not rows:
        return None
    log = _use_log([v for _, q in rows for v in q])

    with matplotlib.rc_context(_RC):
        fig = _new_figure(len(rows))
        ax = fig.add_subplot()
        for y, (c, q) in enumerate(rows):
            color = _color(c)
            ax.hlines(y, q[1], q[19], color=color, linewidth=1.2, zorder=2)
            ax.barh(
                y,
                q[15] - q[5],
                left=q[5],
                height=0.55,
                color=color,
                alpha=0.22,
                edgecolor=color,
                linewidth=1,
                zorder=3,
            )
            ax.vlines(q[10], y - 0.3, y + 0.3, color=color, linewidth=2, zorder=4)
            ax.plot([q[0], q[20]], [y, y], "|", color=color, markersize=5, zorder=2, alpha=0.7)
        if doc.statistic == "delta_bpb":
            ax.axvline(0.0, color="#111827", linewidth=0.6)
        if log:
            ax.set_xscale("log")
        _style_rows(ax, [c for c, _ in rows])
        ax.set_xlabel(f"per-sample {label}" + (" — log scale" if log else ""))
        ax.set_title(
            "Distribution over samples (box 25–75%, whiskers 5–95%, | min and max)", loc="left"
        )
        return _to_svg(fig, "dist", f"Distribution of the per-sample {label}")


def render_plots(att: Attestation | Mapping[str, Any]) -> dict[str, str]:
    """All figures that have data, keyed ``statistic``, ``perplexity`` and ``distribution``."""
    doc = as_attestation(att)
    figures = {
        "statistic": statistic_plot(doc),
        "perplexity": perplexity_plot(doc),
        "distribution": distribution_plot(doc),
    }
    return {key: svg for key, svg in figures.items() if svg is not None}


__all__ = ["distribution_plot", "perplexity_plot", "render_plots", "statistic_plot"]
