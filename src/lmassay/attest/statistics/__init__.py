"""Per-category statistics and the verdict of an attestation.

Input is one :class:`SampleStatistic` per probe sample, already scored; :func:`analyse` turns them
into per-category figures, tests each category against the rest, and gives the verdict. The parts,
in the order :func:`analyse` runs them:

* :mod:`~lmassay.attest.statistics.validation` checks the settings and the samples, once;
* :mod:`~lmassay.attest.statistics.aggregation` turns per-sample figures into per-category and
  overall ones, token- (or byte-) weighted, never a mean of per-sample means
  (``ppl = exp(−Σ logprob / Σ n_tokens)``, ``bpb = −Σ logprob / (ln 2 · Σ n_bytes)``,
  ``mean_kl = Σ token KL / Σ n_tokens``, ``tail_kl`` a quantile of the pooled token KL), and
  defines the per-sample statistic tested and a category's *level*;
* :mod:`~lmassay.attest.statistics.bootstrap` gives 95 % intervals by resampling samples;
* :mod:`~lmassay.attest.statistics.significance` tests each category against the rest (one-sided
  Mann–Whitney U) and adjusts the p-values by Benjamini–Hochberg;
* :mod:`~lmassay.attest.statistics.verdict` flags a category when it is significant *and* its
  effect is above the noise floor, and calls the verdict: ``"different-model"``, ``"tampered"``,
  ``"consistent"`` or ``"scored-only"``.

:mod:`~lmassay.attest.statistics.records` holds the records in and out (:class:`SampleStatistic`,
:class:`StatsConfig`, :class:`CategoryStats`, :class:`Analysis`) and the default thresholds.
Nothing is rounded; non-finite numbers become ``None`` in JSON.
"""

from lmassay.attest.statistics.analysis import analyse
from lmassay.attest.statistics.records import (
    DEFAULT_DIFFERENT_MODEL,
    DEFAULT_NOISE_FLOOR,
    DEFAULT_SPARSE_FLOOR,
    DIFFERENT_MODEL_RATIO,
    INDEPENDENT_WEIGHTS,
    Analysis,
    CategoryStats,
    SampleStatistic,
    StatsConfig,
)
from lmassay.attest.statistics.significance import benjamini_hochberg

__all__ = [
    "DEFAULT_DIFFERENT_MODEL",
    "DEFAULT_NOISE_FLOOR",
    "DEFAULT_SPARSE_FLOOR",
    "DIFFERENT_MODEL_RATIO",
    "INDEPENDENT_WEIGHTS",
    "Analysis",
    "CategoryStats",
    "SampleStatistic",
    "StatsConfig",
    "analyse",
    "benjamini_hochberg",
]
