"""Per-sample figures to per-category and overall figures, token- (or byte-) weighted.

Never a mean of per-sample means:

* ``ppl = exp(−Σ logprob / Σ n_tokens)`` over the samples of a category (or of all samples);
* ``bpb = −Σ logprob / (ln 2 · Σ n_bytes)`` (bits per UTF-8 byte); ``delta_bpb = bpb_model −
  bpb_reference``;
* ``mean_kl = Σ (per-token KL(reference ‖ model)) / Σ n_tokens`` in nats/token;
* ``tail_kl`` = the ``tail_quantile`` (default 95 %) quantile, linear interpolation as
  ``numpy.quantile``, of the per-token KL pooled over the category;
* ``top1_agreement`` = the fraction of the category's tokens whose argmax agrees.

**The per-sample statistic** (:meth:`CategoryArrays.statistic`): with comparison ``"kl"`` the
sample's mean token KL; with ``"bpb"`` the sample's ``bpb_model − bpb_reference``; with ``"none"``
the sample's ``bpb_model``. **The level** of a category is the aggregate of the statistic:
``mean_kl`` (kl), ``delta_bpb`` (bpb) or ``bpb_model`` (none).

Sums are taken with :func:`math.fsum` over the samples in a canonical order, so the figures do not
depend on the order of the input. Nothing is rounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmassay.attest.statistics.bootstrap import kl_intervals, perplexity_intervals
from lmassay.attest.statistics.records import (
    LN2,
    CategoryStats,
    FloatArray,
    Interval,
    SampleStatistic,
    StatsConfig,
    safe_exp,
)
from lmassay.attest.statistics.sparse import tail_statistic

_N_DISTRIBUTION = 21


def _canonical_key(sample: SampleStatistic) -> tuple[Any, ...]:
    """A total order on samples by content, so results do not depend on the input order."""
    return (
        sample.n_tokens,
        sample.n_bytes,
        float(sample.logprob_model),
        float(sample.logprob_reference) if sample.logprob_reference is not None else 0.0,
        np.asarray(sample.token_kl, dtype=np.float64).tobytes()
        if sample.token_kl is not None
        else b"",
        np.asarray(sample.token_top1_agree, dtype=np.bool_).tobytes()
        if sample.token_top1_agree is not None
        else b"",
        (sample.answer_drop is None, sample.answer_drop or 0.0),
    )


class CategoryArrays:
    """The samples of one category in a canonical order, as arrays."""

    def __init__(self, samples: list[SampleStatistic], comparison: str) -> None:
        ordered = sorted(samples, key=_canonical_key)
        self.n = len(ordered)
        self.n_tokens = np.array([s.n_tokens for s in ordered], dtype=np.int64)
        self.n_tokens_reference = np.array(
            [s.n_tokens_reference or s.n_tokens for s in ordered], dtype=np.int64
        )
        self.n_bytes = np.array([s.n_bytes for s in ordered], dtype=np.int64)
        self.lp_model = np.array([float(s.logprob_model) for s in ordered], dtype=np.float64)
        self.lp_reference = (
            np.array([float(s.logprob_reference or 0.0) for s in ordered], dtype=np.float64)
            if ordered[0].logprob_reference is not None
            else None
        )
        self.answer_drop = np.array(
            [s.answer_drop for s in ordered if s.answer_drop is not None], dtype=np.float64
        )
        """The drops of the samples that state an answer (:mod:`lmassay.attest.answers`)."""
        self.token_kl: list[FloatArray] | None = None
        self.kl_sum: FloatArray | None = None
        self.top1: int | None = None
        if comparison == "kl":
            self.token_kl = [np.asarray(s.token_kl, dtype=np.float64) for s in ordered]
            self.kl_sum = np.array([k.sum() for k in self.token_kl], dtype=np.float64)
            if ordered[0].token_top1_agree is not None:
                self.top1 = sum(
                    int(np.count_nonzero(np.asarray(s.token_top1_agree))) for s in ordered
                )

    def statistic(self, comparison: str) -> FloatArray:
        """The per-sample statistic tested (see the module docstring)."""
        bpb_model = -self.lp_model / (LN2 * self.n_bytes)
        if comparison == "kl" and self.kl_sum is not None:
            return self.kl_sum / self.n_tokens
        if comparison == "bpb" and self.lp_reference is not None:
            return bpb_model - (-self.lp_reference / (LN2 * self.n_bytes))
        return bpb_model

    def tail(self, comparison: str) -> FloatArray:
        """The per-sample statistic of the sparse test: with comparison ``"kl"`` the mean of the
        sample's largest token KLs (:func:`~lmassay.attest.statistics.sparse.tail_statistic`),
        else the per-sample statistic itself."""
        if comparison == "kl" and self.token_kl is not None:
            return np.array([tail_statistic(k) for k in self.token_kl], dtype=np.float64)
        return self.statistic(comparison)


def group_samples(samples: Sequence[SampleStatistic], comparison: str) -> dict[str, CategoryArrays]:
    """The samples by category, each category's in a canonical order."""
    by_name: dict[str, list[SampleStatistic]] = {}
    for sample in samples:
        by_name.setdefault(sample.category, []).append(sample)
    return {name: CategoryArrays(members, comparison) for name, members in by_name.items()}


def describe(
    group: CategoryArrays, comparison: str, config: StatsConfig, name: str
) -> CategoryStats:
    """The descriptive figures of a category, untested (no p-value, not flagged, no note)."""
    n_tokens = int(group.n_tokens.sum())
    n_bytes = int(group.n_bytes.sum())
    lp_model = math.fsum(group.lp_model.tolist())
    bpb_model = -lp_model / (LN2 * n_bytes)
    ppl_reference = bpb_reference = delta_bpb = None
    if group.lp_reference is not None:
        lp_reference = math.fsum(group.lp_reference.tolist())
        ppl_reference = safe_exp(-lp_reference / int(group.n_tokens_reference.sum()))
        bpb_reference = -lp_reference / (LN2 * n_bytes)
        delta_bpb = bpb_model - bpb_reference
    ppl_model_ci, ppl_reference_ci = _perplexity_intervals(group, config, name)
    kl = _kl_figures(group, config, name)
    level = {"kl": kl["mean_kl"], "bpb": delta_bpb}.get(comparison, bpb_model)
    quantiles = np.quantile(group.statistic(comparison), np.linspace(0.0, 1.0, _N_DISTRIBUTION))
    return CategoryStats(
        name=name,
        n_samples=group.n,
        n_tokens=n_tokens,
        n_bytes=n_bytes,
        ppl_model=safe_exp(-lp_model / n_tokens),
        ppl_reference=ppl_reference,
        ppl_model_ci=ppl_model_ci,
        ppl_reference_ci=ppl_reference_ci,
        bpb_model=bpb_model,
        bpb_reference=bpb_reference,
        delta_bpb=delta_bpb,
        **kl,
        level=float(level if level is not None else math.nan),
        p_value=None,
        q_value=None,
        effect=None,
        auc=None,
        tested=False,
        flagged=False,
        note=None,
        distribution=tuple(float(v) for v in quantiles),
    )


def _perplexity_intervals(
    group: CategoryArrays, config: StatsConfig, name: str
) -> tuple[Interval | None, Interval | None]:
    """Bootstrap intervals of the model's (and the reference's) perplexity; None for one sample."""
    if group.n < 2:
        return None, None
    columns = [(group.lp_model, group.n_tokens.astype(np.float64))]
    if group.lp_reference is not None:
        columns.append((group.lp_reference, group.n_tokens_reference.astype(np.float64)))
    intervals = perplexity_intervals(columns, config.n_bootstrap, config.seed, name)
    return intervals[0], intervals[1] if len(intervals) > 1 else None


def _kl_figures(group: CategoryArrays, config: StatsConfig, name: str) -> dict[str, Any]:
    """``mean_kl``, ``tail_kl``, their intervals and ``top1_agreement`` (None without KL)."""
    figures: dict[str, Any] = dict.fromkeys(
        ("mean_kl", "mean_kl_ci", "tail_kl", "tail_kl_ci", "top1_agreement")
    )
    if group.token_kl is None or group.kl_sum is None:
        return figures
    n_tokens = int(group.n_tokens.sum())
    figures["mean_kl"] = math.fsum(group.kl_sum.tolist()) / n_tokens
    figures["tail_kl"] = float(np.quantile(np.concatenate(group.token_kl), config.tail_quantile))
    if group.top1 is not None:
        figures["top1_agreement"] = group.top1 / n_tokens
    if group.n >= 2:
        figures["mean_kl_ci"], figures["tail_kl_ci"] = kl_intervals(
            group.token_kl, config.tail_quantile, config.n_bootstrap, config.seed, name
        )
    return figures


def totals(groups: dict[str, CategoryArrays], comparison: str) -> dict[str, Any]:
    """The summary figures over all samples, token- and byte-weighted like a category's."""
    names = sorted(groups)
    n_tokens = sum(int(groups[name].n_tokens.sum()) for name in names)
    n_bytes = sum(int(groups[name].n_bytes.sum()) for name in names)
    lp_model = math.fsum(v for name in names for v in groups[name].lp_model.tolist())
    bpb_model = -lp_model / (LN2 * n_bytes)
    out: dict[str, Any] = {
        "n_samples": sum(groups[name].n for name in names),
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "ppl_model": safe_exp(-lp_model / n_tokens),
        "ppl_reference": None,
        "bpb_model": bpb_model,
        "bpb_reference": None,
        "delta_bpb": None,
        "mean_kl": None,
    }
    references = [groups[name].lp_reference for name in names]
    if all(ref is not None for ref in references):
        lp_reference = math.fsum(v for ref in references if ref is not None for v in ref.tolist())
        bpb_reference = -lp_reference / (LN2 * n_bytes)
        n_tokens_reference = sum(int(groups[name].n_tokens_reference.sum()) for name in names)
        out["ppl_reference"] = safe_exp(-lp_reference / n_tokens_reference)
        out["bpb_reference"] = bpb_reference
        out["delta_bpb"] = bpb_model - bpb_reference
    if comparison == "kl":
        kl_total = math.fsum(v for name in names for v in np.asarray(groups[name].kl_sum).tolist())
        out["mean_kl"] = kl_total / n_tokens
    return out
