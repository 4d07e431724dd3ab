"""Per-category statistics and the verdict of an attestation.

Input is one :class:`SampleStatistic` per probe sample, already scored; :func:`analyse` turns them
into per-category figures, tests each category against the rest, and gives the verdict.

**Aggregation** is token- (or byte-) weighted, never a mean of per-sample means:

* ``ppl = exp(−Σ logprob / Σ n_tokens)`` over the samples of a category (or of all samples);
* ``bpb = −Σ logprob / (ln 2 · Σ n_bytes)`` (bits per UTF-8 byte); ``delta_bpb = bpb_model −
  bpb_reference``;
* ``mean_kl = Σ (per-token KL(reference ‖ model)) / Σ n_tokens`` in nats/token;
* ``tail_kl`` = the ``tail_quantile`` (default 95 %) quantile, linear interpolation as
  ``numpy.quantile``, of the per-token KL pooled over the category;
* ``top1_agreement`` = the fraction of the category's tokens whose argmax agrees.

**The tested per-sample statistic** (``Analysis.statistic``): with comparison ``"kl"`` the
sample's mean token KL (``"mean_kl"``); with ``"bpb"`` the sample's ``bpb_model − bpb_reference``
(``"delta_bpb"``); with ``"none"`` the sample's ``bpb_model`` (``"bpb"``), which is only
described: without a reference or baseline nothing is tested and the verdict is ``"scored-only"``.

**The level** of a category is the aggregate of the statistic: ``mean_kl`` (kl), ``delta_bpb``
(bpb) or ``bpb_model`` (none).

**Tests.** A category is tested when it has at least ``min_samples`` samples and at least two
categories have that many. Each tested category's per-sample statistics are compared with those of
*all* samples of the other categories (tested or not) by a one-sided Mann–Whitney U test
(``scipy.stats.mannwhitneyu``, ``alternative="greater"``, scipy's automatic method); ``auc = U /
(n1 · n2)`` estimates P(sample of the category > sample of the rest), ties counting one half. The
p-values of the tested categories are adjusted by Benjamini–Hochberg into q-values. ``effect =
level − median(levels of the other tested categories)``. A category is *flagged* when it is
tested, ``q ≤ alpha`` and ``effect > noise_floor``: significance alone is not enough, since with
many tokens a harmless difference (a re-save, a dtype cast) is significant too.

**Verdict.** ``baseline_level`` is the median level over the tested categories (when none can be
tested, over all categories, with a warning). The verdict is ``"different-model"`` when
``baseline_level > different_model_threshold`` (flags are still reported), else ``"tampered"`` if
any category is flagged, else ``"consistent"``; ``"scored-only"`` for comparison ``"none"``.

**Bootstrap intervals.** ``ppl_model_ci`` / ``ppl_reference_ci`` (perplexity, by the same
token-weighted ratio on each resample) and ``mean_kl_ci`` and ``tail_kl_ci`` are 95 % percentile intervals from
``n_bootstrap`` resamples of the category's *samples* with replacement (tokens of one sample stay
together, so correlation within a sample is respected). The generator is seeded with
``(config.seed, crc32(category name))``, so each category's interval is reproducible and does not
depend on the order of categories or of samples (samples are put in a canonical order first). The
tail quantile of every resample is computed exactly, without a cap or subsample: the pooled tokens
are sorted once and cut into blocks; a matrix product of the resample counts with per-sample
cumulative block counts locates the block holding the wanted rank, and only that block is
scanned. The cost is O(n_bootstrap · (n_samples · n_blocks + block size)) per category. Intervals
are ``None`` for a category of one sample.

Nothing is rounded; non-finite numbers become ``None`` in JSON.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as _sps

from lmassay.errors import InputError

__all__ = [
    "DEFAULT_DIFFERENT_MODEL",
    "DEFAULT_NOISE_FLOOR",
    "Analysis",
    "CategoryStats",
    "SampleStatistic",
    "StatsConfig",
    "analyse",
    "benjamini_hochberg",
]

Comparison = Literal["kl", "bpb", "none"]
FloatArray = npt.NDArray[np.float64]

# Effect sizes at or below the noise floor are not flagged however significant they are. Benign
# transformations of the same weights -- re-saving, a bf16/fp16 <-> fp32 cast, int8 weight
# quantisation -- move the per-token KL(reference || model) by well under 0.02 nats/token and the
# bits per byte by well under 0.02, and they move every category alike; a targeted edit that
# changes what the model says about a topic moves that topic far more.
DEFAULT_NOISE_FLOOR: dict[str, float] = {"kl": 0.02, "bpb": 0.02}  # nats/token ; bits/byte

# A median category level above this means the two models are not the same model at all (another
# checkpoint, another family), not a tampered copy: nats/token for kl, bits/byte for bpb.
DEFAULT_DIFFERENT_MODEL: dict[str, float] = {"kl": 0.5, "bpb": 0.3}

_STATISTIC: dict[str, str] = {"kl": "mean_kl", "bpb": "delta_bpb", "none": "bpb"}
_UNIT: dict[str, str] = {"kl": "nats/token", "bpb": "bits/byte", "none": "bits/byte"}
_CI_LEVEL = 0.95
_N_DISTRIBUTION = 21
_LN2 = math.log(2.0)
# Bound on the elements of one bootstrap work array (float64: 32 MiB).
_CHUNK_ELEMENTS = 1 << 22
# Blocks of the exact tail bootstrap: about sqrt(tokens / 8) (a speed trade-off, not a cap).
_BLOCKS_PER_TOKEN = 1.0 / 8.0


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


@dataclass(frozen=True)
class StatsConfig:
    """Settings of :func:`analyse`; ``None`` thresholds take the defaults for the comparison."""

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


@dataclass(frozen=True)
class CategoryStats:
    """Figures for one category, as in the schema's ``categories`` objects."""

    name: str
    n_samples: int
    n_tokens: int
    n_bytes: int
    ppl_model: float
    ppl_reference: float | None
    ppl_model_ci: tuple[float, float] | None
    ppl_reference_ci: tuple[float, float] | None
    bpb_model: float
    bpb_reference: float | None
    delta_bpb: float | None
    mean_kl: float | None
    mean_kl_ci: tuple[float, float] | None
    tail_kl: float | None
    tail_kl_ci: tuple[float, float] | None
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

    def to_json(self) -> dict[str, Any]:
        """Plain Python values; non-finite floats become ``None``, tuples become lists."""
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Analysis:
    """The result of :func:`analyse`: per-category figures, flags, verdict and totals."""

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

    def summary_json(self) -> dict[str, Any]:
        """The schema's ``summary`` object."""
        out: dict[str, Any] = {"statistic": self.statistic}
        for key in (
            "n_samples",
            "n_tokens",
            "n_bytes",
            "ppl_model",
            "ppl_reference",
            "bpb_model",
            "bpb_reference",
            "delta_bpb",
            "mean_kl",
        ):
            out[key] = _json_value(self.totals.get(key))
        out["baseline_level"] = _json_value(self.baseline_level)
        out["noise_floor"] = _json_value(self.noise_floor)
        out["different_model_threshold"] = _json_value(self.different_model_threshold)
        out["alpha"] = _json_value(self.alpha)
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


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def benjamini_hochberg(p_values: Sequence[float] | npt.NDArray[np.floating[Any]]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order.

    ``q_(i) = min_{j >= i} m · p_(j) / j`` over the p-values sorted ascending, capped at 1, so the
    q-values are monotone in the p-values. An empty input gives an empty array.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return np.zeros(0, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise InputError(
            f"p-values must be finite numbers in [0, 1], got {p.tolist()!r}",
            "pass the raw p-values of the tests",
        )
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1, dtype=np.float64)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m, dtype=np.float64)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def analyse(
    samples: Sequence[SampleStatistic],
    comparison: Comparison,
    config: StatsConfig = StatsConfig(),
) -> Analysis:
    """Per-category statistics, tests and the verdict (see the module docstring for the rules).

    Raises :class:`~lmassay.errors.InputError` when the samples or the settings cannot be used.
    """
    noise_floor, threshold = _validate(samples, comparison, config)
    groups = _group(samples, comparison)
    names = sorted(groups)
    tested, notes, warnings = _eligibility(groups, comparison, config.min_samples)

    described = {name: groups[name].describe(comparison, config, name) for name in names}
    levels = {name: described[name].level for name in names}
    per_sample = {name: groups[name].statistic(comparison) for name in names}
    results = _test_categories(per_sample, levels, tested)

    flagged: list[str] = []
    for name in tested:
        result = results[name]
        significant = result.q_value <= config.alpha
        if significant and noise_floor is not None and result.effect > noise_floor:
            flagged.append(name)
        elif significant:
            notes[name] = (
                f"significant (q = {result.q_value:.3g}) but the effect, {result.effect:.3g} "
                f"{_UNIT[comparison]}, is not above the noise floor of {noise_floor:g}: not flagged"
            )

    categories = []
    for name in names:
        found = results.get(name)
        categories.append(
            described[name].finish(
                p_value=found.p_value if found else None,
                q_value=found.q_value if found else None,
                effect=found.effect if found else None,
                auc=found.auc if found else None,
                tested=found is not None,
                flagged=name in flagged,
                note=notes[name],
            )
        )

    baseline: float | None = None
    if comparison == "none":
        verdict = "scored-only"
    else:
        if tested:
            baseline = float(np.median([levels[name] for name in tested]))
        else:
            baseline = float(np.median([levels[name] for name in names]))
            warnings.append(
                "no category could be tested: baseline_level is the median level over "
                f"{'the only category' if len(names) == 1 else f'all {len(names)} categories'}"
            )
        if threshold is not None and baseline > threshold:
            verdict = "different-model"
        elif flagged:
            verdict = "tampered"
        else:
            verdict = "consistent"

    below_floor = sum(
        1 for name in tested if results[name].q_value <= config.alpha and name not in flagged
    )
    message = _message(
        verdict,
        comparison,
        flagged,
        len(tested),
        below_floor,
        baseline,
        noise_floor,
        threshold,
        config.alpha,
    )
    return Analysis(
        comparison=comparison,
        statistic=_STATISTIC[comparison],
        categories=categories,
        flagged=flagged,
        verdict=verdict,
        baseline_level=baseline,
        noise_floor=noise_floor,
        different_model_threshold=threshold,
        alpha=config.alpha,
        warnings=warnings,
        totals=_totals(groups, names, comparison),
        message=message,
        unit=_UNIT[comparison],
    )


@dataclass(frozen=True)
class _TestResult:
    p_value: float
    q_value: float
    effect: float
    auc: float


def _eligibility(
    groups: dict[str, _Group], comparison: str, min_samples: int
) -> tuple[list[str], dict[str, str | None], list[str]]:
    """The categories to test (sorted), a note per category, and warnings."""
    names = sorted(groups)
    notes: dict[str, str | None] = dict.fromkeys(names)
    warnings: list[str] = []
    if comparison == "none":
        return [], notes, warnings
    enough = [name for name in names if groups[name].n >= min_samples]
    for name in names:
        n = groups[name].n
        if n < min_samples:
            warnings.append(
                f"category '{name}' has {_count(n, 'sample')} (< {min_samples}): not tested"
            )
            notes[name] = f"too few samples ({n} < {min_samples}): not tested"
    if len(enough) >= 2:
        return enough, notes, warnings
    if len(names) == 1:
        warnings.append(
            f"only one category ('{names[0]}'): nothing to compare it with, so nothing is "
            "tested; add probe categories"
        )
    else:
        warnings.append(
            f"only {len(enough)} of {len(names)} categories have at least {min_samples} "
            "samples: nothing is tested"
        )
    for name in enough:
        notes[name] = "no other category to compare with: not tested"
    return [], notes, warnings


def _test_categories(
    per_sample: dict[str, FloatArray], levels: dict[str, float], tested: list[str]
) -> dict[str, _TestResult]:
    """Mann–Whitney U of each tested category against all other samples; BH across them."""
    raw: dict[str, tuple[float, float, float]] = {}
    for name in tested:
        x = per_sample[name]
        rest = np.concatenate([values for other, values in per_sample.items() if other != name])
        mwu = _sps.mannwhitneyu(x, rest, alternative="greater")
        p = float(mwu.pvalue)
        # scipy returns p = 1 when every value ties; a NaN would mean no evidence either.
        p = p if math.isfinite(p) else 1.0
        auc = float(mwu.statistic) / (x.size * rest.size)
        effect = levels[name] - float(np.median([levels[o] for o in tested if o != name]))
        raw[name] = (p, auc, effect)
    q_values = benjamini_hochberg([raw[name][0] for name in tested])
    return {
        name: _TestResult(
            p_value=raw[name][0], q_value=float(q), effect=raw[name][2], auc=raw[name][1]
        )
        for name, q in zip(tested, q_values, strict=True)
    }


# --------------------------------------------------------------------------------------------
# Validation (all input checks live here)
# --------------------------------------------------------------------------------------------


def _validate(
    samples: Sequence[SampleStatistic], comparison: str, config: StatsConfig
) -> tuple[float | None, float | None]:
    """Check the settings and every sample; return the resolved (noise floor, threshold)."""
    _validate_config(comparison, config)
    _validate_samples(samples, comparison)
    if comparison == "none":
        return None, None
    floor = DEFAULT_NOISE_FLOOR[comparison] if config.noise_floor is None else config.noise_floor
    threshold = (
        DEFAULT_DIFFERENT_MODEL[comparison]
        if config.different_model_threshold is None
        else config.different_model_threshold
    )
    return float(floor), float(threshold)


def _validate_config(comparison: str, config: StatsConfig) -> None:
    if comparison not in _STATISTIC:
        raise InputError(
            f"comparison must be 'kl', 'bpb' or 'none', got {comparison!r}",
            "use 'kl' (same tokenizer), 'bpb' (different tokenizers or a baseline) or 'none'",
        )
    if not (_is_finite_number(config.alpha) and 0.0 < config.alpha < 1.0):
        raise InputError(
            f"alpha must be in (0, 1), got {config.alpha!r}",
            "choose a false-discovery level such as 0.05",
        )
    if not (_is_finite_number(config.tail_quantile) and 0.0 < config.tail_quantile < 1.0):
        raise InputError(
            f"tail_quantile must be in (0, 1), got {config.tail_quantile!r}",
            "choose a quantile such as 0.95",
        )
    if not _is_int(config.n_bootstrap) or config.n_bootstrap < 1:
        raise InputError(
            f"n_bootstrap must be a whole number >= 1, got {config.n_bootstrap!r}",
            "use e.g. 1000 bootstrap resamples",
        )
    if not _is_int(config.seed) or config.seed < 0:
        raise InputError(
            f"seed must be a whole number >= 0, got {config.seed!r}", "use e.g. seed 0"
        )
    if not _is_int(config.min_samples) or config.min_samples < 2:
        raise InputError(
            f"min_samples must be a whole number >= 2, got {config.min_samples!r}",
            "use e.g. 5 samples per category",
        )
    if config.noise_floor is not None and not (
        _is_finite_number(config.noise_floor) and config.noise_floor >= 0.0
    ):
        raise InputError(
            f"noise_floor must be a finite number >= 0, got {config.noise_floor!r}",
            "leave it unset for the default of the comparison",
        )
    if config.different_model_threshold is not None and not (
        _is_finite_number(config.different_model_threshold)
        and config.different_model_threshold > 0.0
    ):
        raise InputError(
            "different_model_threshold must be a finite number > 0, got "
            f"{config.different_model_threshold!r}",
            "leave it unset for the default of the comparison",
        )


def _validate_samples(samples: Sequence[SampleStatistic], comparison: str) -> None:
    if len(samples) == 0:
        raise InputError("no samples to analyse", "score at least one probe sample")

    n_with_reference = 0
    n_with_top1 = 0
    for index, sample in enumerate(samples):
        where = f"sample {index} (category {getattr(sample, 'category', '?')!r})"
        if not isinstance(sample, SampleStatistic):
            raise InputError(
                f"sample {index} is a {type(sample).__name__}, not a SampleStatistic",
                "pass SampleStatistic objects",
            )
        if not isinstance(sample.category, str) or not sample.category:
            raise InputError(f"{where} has no category name", "give every sample a category")
        if not _is_int(sample.n_tokens) or sample.n_tokens < 1:
            raise InputError(
                f"{where} has n_tokens = {sample.n_tokens!r}",
                "every sample needs at least one scored token; drop empty samples",
            )
        if not _is_int(sample.n_bytes) or sample.n_bytes < 1:
            raise InputError(
                f"{where} has n_bytes = {sample.n_bytes!r}",
                "every sample needs at least one byte of text; drop empty samples",
            )
        if not _is_finite_number(sample.logprob_model):
            raise InputError(
                f"{where} has logprob_model = {sample.logprob_model!r}",
                "log-probabilities must be finite numbers",
            )
        if sample.logprob_reference is not None:
            if not _is_finite_number(sample.logprob_reference):
                raise InputError(
                    f"{where} has logprob_reference = {sample.logprob_reference!r}",
                    "log-probabilities must be finite numbers",
                )
            n_with_reference += 1
        elif comparison in ("kl", "bpb"):
            raise InputError(
                f"{where} has no logprob_reference but comparison is {comparison!r}",
                "score every sample with the reference, or use comparison 'none'",
            )
        if comparison == "kl":
            if sample.token_kl is None:
                raise InputError(
                    f"{where} has no token_kl but comparison is 'kl'",
                    "compute the per-token KL for every sample, or use comparison 'bpb'",
                )
            kl = np.asarray(sample.token_kl)
            if kl.shape != (sample.n_tokens,) or not np.issubdtype(kl.dtype, np.number):
                raise InputError(
                    f"{where} has token_kl of shape {kl.shape} and dtype {kl.dtype}, expected "
                    f"{sample.n_tokens} numbers (one per scored token)",
                    "pass one KL value per scored token",
                )
            if not np.all(np.isfinite(kl)):
                raise InputError(
                    f"{where} has non-finite per-token KL", "per-token KL must be finite"
                )
            if sample.token_top1_agree is not None:
                agree = np.asarray(sample.token_top1_agree)
                if agree.shape != (sample.n_tokens,) or not (
                    agree.dtype == np.bool_
                    or (
                        np.issubdtype(agree.dtype, np.number)
                        and np.all((agree == 0) | (agree == 1))
                    )
                ):
                    raise InputError(
                        f"{where} has token_top1_agree of shape {agree.shape} and dtype "
                        f"{agree.dtype}, expected {sample.n_tokens} booleans",
                        "pass one boolean per scored token",
                    )
                n_with_top1 += 1
    if 0 < n_with_reference < len(samples):
        raise InputError(
            f"{n_with_reference} of {len(samples)} samples have logprob_reference",
            "score all samples with the reference or none of them",
        )
    if comparison == "kl" and 0 < n_with_top1 < len(samples):
        raise InputError(
            f"{n_with_top1} of {len(samples)} samples have token_top1_agree",
            "give top-1 agreement for all samples or for none",
        )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
    )


# --------------------------------------------------------------------------------------------
# One category
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Described:
    """Descriptive figures of a category, before the tests."""

    base: dict[str, Any]
    level: float

    def finish(self, **tested: Any) -> CategoryStats:
        return CategoryStats(**self.base, level=self.level, **tested)


class _Group:
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
        self.has_reference = ordered[0].logprob_reference is not None
        self.lp_reference = (
            np.array([float(s.logprob_reference or 0.0) for s in ordered], dtype=np.float64)
            if self.has_reference
            else None
        )
        self.token_kl: list[FloatArray] | None = None
        self.kl_sum: FloatArray | None = None
        self.top1: int | None = None
        if comparison == "kl":
            self.token_kl = [np.asarray(s.token_kl, dtype=np.float64) for s in ordered]
            self.kl_sum = np.array([k.sum() for k in self.token_kl], dtype=np.float64)
            if ordered[0].token_top1_agree is not None:
                self.top1 = int(
                    sum(int(np.count_nonzero(np.asarray(s.token_top1_agree))) for s in ordered)
                )

    def statistic(self, comparison: str) -> FloatArray:
        """The per-sample statistic tested (see the module docstring)."""
        bpb_model = -self.lp_model / (_LN2 * self.n_bytes)
        if comparison == "kl" and self.kl_sum is not None:
            return self.kl_sum / self.n_tokens
        if comparison == "bpb" and self.lp_reference is not None:
            return bpb_model - (-self.lp_reference / (_LN2 * self.n_bytes))
        return bpb_model

    def describe(self, comparison: str, config: StatsConfig, name: str) -> _Described:
        n_tokens = int(self.n_tokens.sum())
        n_bytes = int(self.n_bytes.sum())
        lp_model = math.fsum(self.lp_model.tolist())
        ppl_model = _safe_exp(-lp_model / n_tokens)
        bpb_model = -lp_model / (_LN2 * n_bytes)
        ppl_reference = bpb_reference = delta_bpb = None
        if self.lp_reference is not None:
            lp_reference = math.fsum(self.lp_reference.tolist())
            ppl_reference = _safe_exp(-lp_reference / int(self.n_tokens_reference.sum()))
            bpb_reference = -lp_reference / (_LN2 * n_bytes)
            delta_bpb = bpb_model - bpb_reference

        ppl_model_ci, ppl_reference_ci = self._perplexity_intervals(config, name)
        mean_kl = tail_kl = top1 = None
        mean_kl_ci = tail_kl_ci = None
        if self.token_kl is not None and self.kl_sum is not None:
            mean_kl = math.fsum(self.kl_sum.tolist()) / n_tokens
            pooled = np.concatenate(self.token_kl)
            tail_kl = float(np.quantile(pooled, config.tail_quantile))
            if self.top1 is not None:
                top1 = self.top1 / n_tokens
            if self.n >= 2:
                mean_kl_ci, tail_kl_ci = self._bootstrap(config, name)

        if comparison == "kl":
            level = mean_kl
        elif comparison == "bpb":
            level = delta_bpb
        else:
            level = bpb_model
        stat = self.statistic(comparison)
        distribution = tuple(
            float(v) for v in np.quantile(stat, np.linspace(0.0, 1.0, _N_DISTRIBUTION))
        )
        base = {
            "name": name,
            "n_samples": self.n,
            "n_tokens": n_tokens,
            "n_bytes": n_bytes,
            "ppl_model": ppl_model,
            "ppl_reference": ppl_reference,
            "ppl_model_ci": ppl_model_ci,
            "ppl_reference_ci": ppl_reference_ci,
            "bpb_model": bpb_model,
            "bpb_reference": bpb_reference,
            "delta_bpb": delta_bpb,
            "mean_kl": mean_kl,
            "mean_kl_ci": mean_kl_ci,
            "tail_kl": tail_kl,
            "tail_kl_ci": tail_kl_ci,
            "top1_agreement": top1,
            "distribution": distribution,
        }
        return _Described(base=base, level=float(level if level is not None else math.nan))

    def _perplexity_intervals(
        self, config: StatsConfig, name: str
    ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """95 % percentile intervals of the token-weighted perplexities over resamples of samples.

        Each resample's perplexity is ``exp(−Σ c_i·logprob_i / Σ c_i·T_i)``; the generator is
        seeded with ``(seed, crc32(name), 1)``, a stream apart from the KL intervals'.
        """
        if self.n < 2:
            return None, None
        rng = np.random.default_rng([config.seed, zlib.crc32(name.encode("utf-8")), 1])
        columns = [self.lp_model, self.n_tokens.astype(np.float64)]
        if self.lp_reference is not None:
            columns += [self.lp_reference, self.n_tokens_reference.astype(np.float64)]
        design = np.stack(columns, axis=1)  # (n, 2 or 4)
        rows = max(1, min(config.n_bootstrap, _CHUNK_ELEMENTS // self.n))
        sums = []
        done = 0
        while done < config.n_bootstrap:
            b = min(rows, config.n_bootstrap - done)
            sums.append(_resample_counts(rng, b, self.n) @ design)  # (b, 2 or 4)
            done += b
        totals = np.concatenate(sums)
        lo, hi = (1.0 - _CI_LEVEL) / 2.0, 1.0 - (1.0 - _CI_LEVEL) / 2.0

        def interval(logprob: FloatArray, tokens: FloatArray) -> tuple[float, float]:
            q = np.quantile(-logprob / tokens, [lo, hi])
            return _safe_exp(float(q[0])), _safe_exp(float(q[1]))

        model_ci = interval(totals[:, 0], totals[:, 1])
        reference_ci = (
            interval(totals[:, 2], totals[:, 3]) if self.lp_reference is not None else None
        )
        return model_ci, reference_ci

    def _bootstrap(
        self, config: StatsConfig, name: str
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """Percentile intervals of mean_kl and tail_kl over resamples of the samples."""
        if self.token_kl is None or self.kl_sum is None:  # pragma: no cover - guarded by caller
            raise ValueError("bootstrap needs per-token KL")
        rng = np.random.default_rng([config.seed, zlib.crc32(name.encode("utf-8"))])
        resampler = _Resampler(self.token_kl, config.tail_quantile)
        n = self.n
        rows = max(1, min(config.n_bootstrap, _CHUNK_ELEMENTS // max(n, resampler.block)))
        mean_reps: list[FloatArray] = []
        tail_reps: list[FloatArray] = []
        done = 0
        while done < config.n_bootstrap:
            b = min(rows, config.n_bootstrap - done)
            means, tails = resampler.replicates(_resample_counts(rng, b, n))
            mean_reps.append(means)
            tail_reps.append(tails)
            done += b
        lo, hi = (1.0 - _CI_LEVEL) / 2.0, 1.0 - (1.0 - _CI_LEVEL) / 2.0
        m = np.quantile(np.concatenate(mean_reps), [lo, hi])
        t = np.quantile(np.concatenate(tail_reps), [lo, hi])
        return (float(m[0]), float(m[1])), (float(t[0]), float(t[1]))


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
    )


def _group(samples: Sequence[SampleStatistic], comparison: str) -> dict[str, _Group]:
    by_name: dict[str, list[SampleStatistic]] = {}
    for sample in samples:
        by_name.setdefault(sample.category, []).append(sample)
    return {name: _Group(members, comparison) for name, members in by_name.items()}


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def _resample_counts(rng: np.random.Generator, rows: int, n: int) -> FloatArray:
    """How often each of ``n`` samples is drawn in each of ``rows`` resamples of size ``n``."""
    dtype = np.int32 if rows * n < 2**31 else np.int64
    draws = rng.integers(0, n, size=(rows, n), dtype=dtype)  # (rows, n) sample indices
    draws += (np.arange(rows, dtype=dtype) * n)[:, None]  # row r counts into [r·n, (r+1)·n)
    return np.bincount(draws.reshape(-1), minlength=rows * n).reshape(rows, n).astype(np.float64)


class _Resampler:
    """Token-weighted mean KL and exact tail quantile of weighted resamples of the samples.

    A resample that draws sample ``i`` ``c_i`` times has mean KL ``Σ c_i·KL_i / Σ c_i·T_i`` and
    pools every token of sample ``i`` ``c_i`` times; its tail is ``numpy.quantile`` (linear) of
    that multiset, computed exactly. The tokens are sorted once and cut into blocks of ``block``
    sorted positions; ``cum[i, k]`` (the first columns of ``design``) counts the tokens of sample
    ``i`` before block ``k``, so ``counts @ cum`` gives each resample's cumulative weight at every block boundary. The block
    holding the wanted rank is found from those, and only that block is scanned.
    """

    def __init__(self, token_kl: list[FloatArray], q: float) -> None:
        self.q = q
        n = len(token_kl)
        lengths = np.array([k.size for k in token_kl], dtype=np.int64)
        pooled = np.concatenate(token_kl)
        order = np.argsort(pooled)
        total = pooled.size
        n_blocks = int(np.clip(round(math.sqrt(total * _BLOCKS_PER_TOKEN)), 1, 1024))
        n_blocks = max(1, min(n_blocks, _CHUNK_ELEMENTS // max(n, 1)))
        self.block = math.ceil(total / n_blocks)
        self.n_blocks = math.ceil(total / self.block)
        padded = self.n_blocks * self.block
        # Padding sits after the last real token; it is never reached before the wanted rank, so
        # its value and owner (sample 0) do not matter.
        self.values = np.full(padded, np.inf, dtype=np.float64)  # (K·G,) sorted token KL
        self.values[:total] = pooled[order]
        owner = np.zeros(padded, dtype=np.intp)  # (K·G,) sample of each sorted token
        owner[:total] = np.repeat(np.arange(n), lengths)[order]
        self.owner = owner.reshape(self.n_blocks, self.block)  # (K, G)
        block_of = np.arange(total) // self.block
        per_block = np.bincount(
            owner[:total] * self.n_blocks + block_of, minlength=n * self.n_blocks
        ).reshape(n, self.n_blocks)
        # One matrix product gives all per-resample sums: [cum | Σ KL | tokens], (n, K+3).
        self.design = np.zeros((n, self.n_blocks + 3), dtype=np.float64)
        np.cumsum(per_block, axis=1, out=self.design[:, 1 : self.n_blocks + 1])
        self.design[:, -2] = [k.sum() for k in token_kl]
        self.design[:, -1] = lengths
        # A resample's weight within one block is at most n · (longest sample); int32 is exact
        # (and twice as fast to scan) below 2**31.
        self.count_dtype = np.int32 if n * int(lengths.max()) < 2**31 else np.int64

    def replicates(self, counts: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean KL and ``q`` quantile of each resample; ``counts`` is (B, n) draws per sample."""
        sums = counts @ self.design  # (B, K+3)
        means: FloatArray = sums[:, -2] / sums[:, -1]
        at_edges = sums[:, : self.n_blocks + 1]  # (B, K+1) cumulative weight before each block
        total = at_edges[:, -1]
        h = self.q * (total - 1.0)
        lower = np.floor(h)
        upper = np.minimum(lower + 1.0, total - 1.0)
        small = counts.astype(self.count_dtype)  # (B, n) for the cheap in-block scan
        start, target, within = self._scan(small, at_edges, lower)
        v_lower = self.values[start + np.argmax(within > target[:, None], axis=1)]
        target_upper = target + (upper - lower).astype(np.int64)
        past_upper = within > target_upper[:, None]  # (B, G)
        v_upper = self.values[start + np.argmax(past_upper, axis=1)]
        missing = ~past_upper[:, -1]
        if np.any(missing):  # rank lower + 1 lies in a later block
            start2, target2, within2 = self._scan(small[missing], at_edges[missing], upper[missing])
            v_upper[missing] = self.values[start2 + np.argmax(within2 > target2[:, None], axis=1)]
        tails: FloatArray = v_lower + (h - lower) * (v_upper - v_lower)
        return means, tails

    def _scan(
        self, counts: npt.NDArray[np.integer[Any]], at_edges: FloatArray, rank: FloatArray
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.integer[Any]]]:
        """Locate 0-based ``rank`` of each resample: the start of its block, the rank within the
        block, and the running weight through the block (the rank is at the first position where
        the running weight exceeds the rank within the block)."""
        block = np.count_nonzero(at_edges[:, :-1] <= rank[:, None], axis=1) - 1  # (B,)
        weights = np.take_along_axis(counts, self.owner[block], axis=1)  # (B, G)
        within = np.cumsum(weights, axis=1, dtype=self.count_dtype)  # (B, G)
        base = np.take_along_axis(at_edges, block[:, None], axis=1)[:, 0]  # (B,)
        target = (rank - base).astype(np.int64)
        return block * self.block, target, within


# --------------------------------------------------------------------------------------------
# Totals, message, JSON
# --------------------------------------------------------------------------------------------


def _totals(groups: dict[str, _Group], names: list[str], comparison: str) -> dict[str, Any]:
    n_samples = sum(groups[name].n for name in names)
    n_tokens = sum(int(groups[name].n_tokens.sum()) for name in names)
    n_bytes = sum(int(groups[name].n_bytes.sum()) for name in names)
    lp_model = math.fsum(v for name in names for v in groups[name].lp_model.tolist())
    bpb_model = -lp_model / (_LN2 * n_bytes)
    totals: dict[str, Any] = {
        "n_samples": n_samples,
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "ppl_model": _safe_exp(-lp_model / n_tokens),
        "ppl_reference": None,
        "bpb_model": bpb_model,
        "bpb_reference": None,
        "delta_bpb": None,
        "mean_kl": None,
    }
    references = [groups[name].lp_reference for name in names]
    if all(ref is not None for ref in references):
        lp_reference = math.fsum(v for ref in references if ref is not None for v in ref.tolist())
        bpb_reference = -lp_reference / (_LN2 * n_bytes)
        n_tokens_reference = sum(int(groups[name].n_tokens_reference.sum()) for name in names)
        totals["ppl_reference"] = _safe_exp(-lp_reference / n_tokens_reference)
        totals["bpb_reference"] = bpb_reference
        totals["delta_bpb"] = bpb_model - bpb_reference
    if comparison == "kl":
        kl_total = math.fsum(v for name in names for v in np.asarray(groups[name].kl_sum).tolist())
        totals["mean_kl"] = kl_total / n_tokens
    return totals


def _message(
    verdict: str,
    comparison: str,
    flagged: list[str],
    n_tested: int,
    below_floor: int,
    baseline: float | None,
    noise_floor: float | None,
    threshold: float | None,
    alpha: float,
) -> str:
    unit = _UNIT[comparison]
    what = "KL(reference ‖ model)" if comparison == "kl" else "the difference in bits per byte"
    if verdict == "scored-only":
        return (
            "Only the model was scored, without a reference or baseline: perplexity alone cannot "
            "show tampering, so nothing was tested."
        )
    if verdict == "different-model":
        stand = "stands" if len(flagged) == 1 else "stand"
        also = f"; {_count(len(flagged), 'category')} also {stand} out: " if flagged else ""
        also += ", ".join(flagged)
        return (
            f"The median category level of {what} is {baseline:.3g} {unit}, above the "
            f"different-model threshold of {threshold:g}: this is a different model, not a "
            f"modified copy of the reference{also}."
        )
    if verdict == "tampered":
        return (
            f"{len(flagged)} of {n_tested} tested categories "
            f"{'differs' if len(flagged) == 1 else 'differ'} from the rest by more than "
            f"the noise floor of {noise_floor:g} {unit} at a false-discovery rate of {alpha:g}: "
            f"{', '.join(flagged)}."
        )
    if n_tested == 0:
        return (
            "No category could be tested (too few categories or samples), and the median level "
            f"of {what}, {baseline:.3g} {unit}, is below the different-model threshold of "
            f"{threshold:g}."
        )
    small = (
        f" ({_count(below_floor, 'category')} significant but within the noise floor)"
        if below_floor
        else ""
    )
    return (
        f"None of the {n_tested} tested categories differs from the rest by more than the noise "
        f"floor of {noise_floor:g} {unit} at a false-discovery rate of {alpha:g}{small}: the "
        "model is consistent with the reference."
    )


def _count(n: int, noun: str) -> str:
    return (
        f"{n} {noun}" if n == 1 else f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"
    )


def _safe_exp(x: float) -> float:
    """``exp(x)``, or ``inf`` when it overflows (reported as ``null``)."""
    return math.exp(x) if x < 709.0 else math.inf


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    return value
