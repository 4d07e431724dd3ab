"""The records of the statistics: one scored sample in, per-category figures and the analysis out.

Also the settings (:class:`StatsConfig`), the rule they resolve to for one comparison
(:class:`FlagRule`), the default thresholds and the two helpers every part shares: a JSON value
that turns non-finite floats into ``None`` and an ``exp`` that overflows to ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Comparison = Literal["kl", "bpb", "none"]
FloatArray = npt.NDArray[np.float64]
Interval = tuple[float, float]

# Effect sizes at or below the noise floor are not flagged however significant they are. Benign
# transformations of the same weights -- re-saving, a bf16/fp16 <-> fp32 cast, int8 weight
# quantisation -- move the per-token KL(reference || model) by well under 0.02 nats/token and the
# bits per byte by well under 0.02, and they move every category alike; a targeted edit that
# changes what the model says about a topic moves that topic far more.
DEFAULT_NOISE_FLOOR: dict[str, float] = {"kl": 0.02, "bpb": 0.02}  # nats/token ; bits/byte

# ... and, above that absolute minimum, a category's effect must exceed this multiple of the spread
# between the other tested categories' levels (1.4826 × their median absolute deviation, a robust
# standard deviation). Continued training, or a careful tamperer who mixes clean text in, moves
# every category a little and by different amounts; an effect is then only an effect when it stands
# clear of that spread. Measured (benchmarks/detection.py, test size seeds 0-2 and demo size seed
# 0): benign continued training leaves effects of at most 3.4 spreads (all under the absolute
# floor); the true category of a tamper found by the mean test, 3.4 to 48 (median 11); the mean
# test's false flags in untampered categories of tampered variants, 1.3, 2.5 and 4.4.
DEFAULT_SPREAD_MULTIPLE = 3.0

# The sparse test (:mod:`~lmassay.attest.statistics.sparse`) flags only when its outliers stand
# clear of the rest: the median excess of the outliers' tail statistic over the rest's 99th
# percentile must exceed this. kl: nats/token averaged over a sample's 4 largest token KLs (a
# changed fact is several nats on a few tokens); bpb: bits/byte of a sample's Δbpb.
DEFAULT_SPARSE_FLOOR: dict[str, float] = {"kl": 0.1, "bpb": 0.02}

# ... and only when it has at least this many outliers: a sparse change is several samples. One or
# two samples above the others' 99th percentile are what a category's own heavy tail gives (on the
# real-text world, 60 probes a category, a slant of another category left 2 such samples in
# hacker-lore, 0.15 nats above, significant by the permutation test; a bf16 cast left 4, at
# 0.0001). Five edited facts gave 13 (test-size world).
MIN_OUTLIERS = 3

# The answer test (lmassay.attest.answers: samples that name their answer, e.g. fact probes) flags
# only when its outliers' median excess drop over the rest's 99th percentile exceeds the larger of
# this absolute floor (nats: the answer made e^0.5 ≈ 1.65 times less likely than the rest's 99th
# percentile allows) and ANSWER_SPREAD_MULTIPLE × the spread (1.4826 × MAD) of the rest's drops,
# and with at least MIN_OUTLIERS outliers. Any fine-tune moves the answers of facts a small
# reference barely knows by nats, in every category: the relative part keeps those from flagging.
# Measured (benchmarks/detection.py attestations, test size seeds 0-2 and demo size seed 0;
# docs/detection.md): untampered categories with 3 or more outliers reached 1.4 spreads or
# 0.22 nats (never both); the true categories of demo-size tampers 2.3-3.5 spreads and 0.85-1.36
# nats.
DEFAULT_ANSWER_FLOOR = 0.5
ANSWER_SPREAD_MULTIPLE = 2.0
MIN_ANSWERS = 5
"""A category is in the answer test when it has at least this many samples with an answer
(and another category has as many)."""

# A median category level above this means the two models are not the same model at all (another
# checkpoint, another family), not a tampered copy: bits/byte for bpb. For kl the default is
# relative (DIFFERENT_MODEL_RATIO); this absolute figure is used only when the reference's own
# cross-entropy is unknown. When the weights of both can be compared (same architecture, local
# safetensors), they decide instead (lmassay.attest.weight_relation).
DEFAULT_DIFFERENT_MODEL: dict[str, float] = {"kl": 0.5, "bpb": 0.3}

# With comparison kl: a median category KL(reference || model) above this share of the
# reference's own per-token cross-entropy on the probes (its uncertainty, ln ppl_reference) means
# another model. Two models that disagree by half of what the reference is unsure about are not
# one model; an absolute 0.5 nats would mean one thing on text of perplexity 2 and another on 30.
DIFFERENT_MODEL_RATIO = 0.5

# The median relative change ‖W_model − W_reference‖ / ‖W_reference‖ over tensors above which two
# same-architecture checkpoints are independent models (lmassay.attest.weight_relation): between
# the zoo's fine-tunes (≈ 0.12) and independent weights (≈ 1.4); a change of half the norm of the
# median tensor is a rewrite, not a modification.
INDEPENDENT_WEIGHTS = 0.5

STATISTIC: dict[str, str] = {"kl": "mean_kl", "bpb": "delta_bpb", "none": "bpb"}
"""The per-sample statistic tested, by comparison."""
UNIT: dict[str, str] = {"kl": "nats/token", "bpb": "bits/byte", "none": "bits/byte"}
LN2 = math.log(2.0)


@dataclass(frozen=True)
class SampleStatistic:
    """One probe sample, already scored.

    ``logprob_*`` are sums of natural-log probabilities of the scored tokens; ``token_kl`` holds the
    per-token KL(reference ‖ model) in nats and ``token_top1_agree`` whether the argmax of the two
    models agrees, one entry per scored token (only with comparison ``"kl"``).
    """

    category: str
    n_tokens: int
    n_bytes: int
    logprob_model: float
    logprob_reference: float | None
    token_kl: np.ndarray | None = None
    token_top1_agree: np.ndarray | None = None
    n_tokens_reference: int | None = None
    """Tokens of the sample under the reference's tokenizer when it differs (None: same as n_tokens)."""
    answer_drop: float | None = None
    """log p_reference − log p_model of the sample's stated answer (:mod:`lmassay.attest.answers`);
    None when it names none."""


@dataclass(frozen=True)
class StatsConfig:
    """Settings of :func:`~lmassay.attest.statistics.analyse`; ``None`` thresholds take the
    defaults for the comparison."""

    alpha: float = 0.05
    """Benjamini–Hochberg false-discovery level, in (0, 1)."""
    noise_floor: float | None = None
    """Smallest effect that can be flagged, in units of the statistic (>= 0)."""
    different_model_threshold: float | None = None
    """Median category level above which the verdict is "different-model" (> 0)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the confidence intervals (>= 1)."""
    seed: int = 0
    """Seed of the bootstrap (>= 0)."""
    min_samples: int = 5
    """Categories with fewer samples are described but not tested (>= 2)."""
    tail_quantile: float = 0.95
    """Quantile of the per-token KL reported as tail_kl, in (0, 1)."""
    sparse_floor: float | None = None
    """Smallest sparse effect that can be flagged, in units of the tail statistic (>= 0)."""
    n_permutations: int = 999
    """Label permutations calibrating the sparse test (>= 19; 0 turns the sparse test off)."""
    spread_multiple: float = DEFAULT_SPREAD_MULTIPLE
    """The mean test flags only an effect above this many spreads between the other categories'
    levels (and above ``noise_floor``); 0 leaves the absolute floor alone (>= 0)."""
    answer_floor: float | None = None
    """Smallest answer-test effect that can be flagged, in nats (>= 0); the effect must also
    exceed :data:`ANSWER_SPREAD_MULTIPLE` × the spread of the other categories' answer drops."""


@dataclass(frozen=True)
class FlagRule:
    """The flagging rule of one analysis: the comparison and its resolved thresholds.

    ``noise_floor`` and ``different_model_threshold`` are ``None`` for comparison ``"none"``,
    where nothing is tested.
    """

    comparison: Comparison
    alpha: float
    noise_floor: float | None
    different_model_threshold: float | None
    sparse_floor: float | None = None
    spread_multiple: float = 0.0
    answer_floor: float | None = None

    def answer_floor_for(self, spread: float) -> float | None:
        """The floor of the answer test for a category whose rest's answer drops spread by
        ``spread``: the larger of ``answer_floor`` and ``ANSWER_SPREAD_MULTIPLE × spread``."""
        if self.answer_floor is None:
            return None
        return max(self.answer_floor, ANSWER_SPREAD_MULTIPLE * spread)

    def mean_floor(self, spread: float) -> float | None:
        """The floor of the mean test for a category whose other categories' levels spread by
        ``spread``: the larger of the noise floor and ``spread_multiple × spread``."""
        if self.noise_floor is None:
            return None
        return max(self.noise_floor, self.spread_multiple * spread)

    @property
    def unit(self) -> str:
        return UNIT[self.comparison]

    @classmethod
    def resolve(
        cls, comparison: Comparison, config: StatsConfig, reference_nats: float | None = None
    ) -> FlagRule:
        """The thresholds of ``config``, or the defaults of the comparison where they are unset;
        ``reference_nats`` (the reference's cross-entropy per token) makes the kl default
        different-model threshold relative (:data:`DIFFERENT_MODEL_RATIO`)."""
        if comparison == "none":
            return cls(comparison, config.alpha, None, None, spread_multiple=config.spread_multiple)
        floor = config.noise_floor
        threshold = config.different_model_threshold
        if threshold is None and comparison == "kl" and reference_nats is not None:
            threshold = DIFFERENT_MODEL_RATIO * reference_nats
        sparse = config.sparse_floor
        answer = DEFAULT_ANSWER_FLOOR if config.answer_floor is None else config.answer_floor
        return cls(
            comparison,
            config.alpha,
            float(DEFAULT_NOISE_FLOOR[comparison] if floor is None else floor),
            float(DEFAULT_DIFFERENT_MODEL[comparison] if threshold is None else threshold),
            float(DEFAULT_SPARSE_FLOOR[comparison] if sparse is None else sparse),
            float(config.spread_multiple),
            float(answer) if comparison == "kl" else None,
        )


@dataclass(frozen=True)
class CategoryStats:
    """Figures for one category, as in the schema's ``categories`` objects."""

    name: str
    n_samples: int
    n_tokens: int
    n_bytes: int
    ppl_model: float
    ppl_reference: float | None
    ppl_model_ci: Interval | None
    ppl_reference_ci: Interval | None
    bpb_model: float
    bpb_reference: float | None
    delta_bpb: float | None
    mean_kl: float | None
    mean_kl_ci: Interval | None
    tail_kl: float | None
    tail_kl_ci: Interval | None
    top1_agreement: float | None
    level: float
    p_value: float | None
    q_value: float | None
    effect: float | None
    auc: float | None
    tested: bool
    flagged: bool
    note: str | None
    distribution: tuple[float, ...]
    sparse_p_value: float | None = None
    """Permutation p-value of the sparse test (higher criticism of per-sample tail p-values)."""
    sparse_q_value: float | None = None
    sparse_effect: float | None = None
    """Median excess of the outliers' tail statistic over the rest's 99th percentile."""
    n_outliers: int | None = None
    outlier_threshold: float | None = None
    """The rest's 99th percentile of the tail statistic: samples above it are the outliers."""
    reasons: tuple[str, ...] = ()
    """Why the category is flagged: ``"mean"`` (its level), ``"sparse"`` (a few samples),
    ``"answer"`` (the answers it states)."""
    spread: float | None = None
    """1.4826 × the median absolute deviation of the other tested categories' levels."""
    mean_floor: float | None = None
    """The floor its effect had to exceed: max(noise_floor, spread_multiple × spread)."""
    n_answers: int | None = None
    """Samples with a stated answer whose drop was measured (comparison kl)."""
    answer_p_value: float | None = None
    """Permutation p-value of the answer test (higher criticism of per-answer drop p-values)."""
    answer_q_value: float | None = None
    answer_effect: float | None = None
    """Median excess of its outlier answers' drop over the rest's 99th percentile (nats)."""
    n_answer_outliers: int | None = None
    answer_threshold: float | None = None
    """The rest's 99th percentile of the answer drop: answers above it are the outliers."""
    answer_spread: float | None = None
    """1.4826 × the median absolute deviation of the other categories' answer drops."""
    answer_floor: float | None = None
    """The floor its answer effect had to exceed: max(answer_floor, 2 × answer_spread)."""

    def to_json(self) -> dict[str, Any]:
        """Plain Python values; non-finite floats become ``None``, tuples become lists."""
        return {f.name: json_value(getattr(self, f.name)) for f in fields(self)}


_SUMMARY_TOTALS = (
    "n_samples",
    "n_tokens",
    "n_bytes",
    "ppl_model",
    "ppl_reference",
    "bpb_model",
    "bpb_reference",
    "delta_bpb",
    "mean_kl",
)


@dataclass(frozen=True)
class Analysis:
    """The result of :func:`~lmassay.attest.statistics.analyse`: per-category figures, flags,
    verdict and totals."""

    comparison: str
    statistic: str
    categories: list[CategoryStats]
    flagged: list[str]
    verdict: str
    baseline_level: float | None
    noise_floor: float | None
    different_model_threshold: float | None
    alpha: float
    warnings: list[str]
    totals: dict[str, Any]
    message: str
    unit: str = field(default="")
    sparse_floor: float | None = None
    answer_floor: float | None = None
    weight_change: float | None = None
    different_model_basis: str | None = None
    spread_multiple: float | None = None

    def summary_json(self) -> dict[str, Any]:
        """The schema's ``summary`` object."""
        out: dict[str, Any] = {"statistic": self.statistic}
        for key in _SUMMARY_TOTALS:
            out[key] = json_value(self.totals.get(key))
        out["baseline_level"] = json_value(self.baseline_level)
        out["noise_floor"] = json_value(self.noise_floor)
        out["spread_multiple"] = json_value(self.spread_multiple)
        out["sparse_floor"] = json_value(self.sparse_floor)
        out["answer_floor"] = json_value(self.answer_floor)
        out["different_model_threshold"] = json_value(self.different_model_threshold)
        out["different_model_basis"] = self.different_model_basis
        out["weight_change"] = json_value(self.weight_change)
        out["alpha"] = json_value(self.alpha)
        out["message"] = self.message
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "flagged": list(self.flagged),
            "comparison": self.comparison,
            "summary": self.summary_json(),
            "categories": [c.to_json() for c in self.categories],
            "warnings": list(self.warnings),
        }


def safe_exp(x: float) -> float:
    """``exp(x)``, or ``inf`` when it overflows (reported as ``null``)."""
    return math.exp(x) if x < 709.0 else math.inf


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars become Python ones, non-finite floats ``None``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (tuple, list)):
        return [json_value(v) for v in value]
    return value
