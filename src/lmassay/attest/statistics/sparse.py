"""The sparse test: a few changed samples inside an otherwise unchanged category.

A tamper that edits five facts among forty, or plants a trigger in a handful of documents, barely
moves a category's mean KL; it leaves a few samples whose *largest* token divergences stand far
above anything the other categories show. This test looks for exactly that:

1. **Per-sample tail statistic** ``t_i``: the mean of the sample's ``k`` largest per-token
   KL(reference ‖ model) values (``k = TAIL_TOKENS``, fewer for shorter samples). A changed fact
   is a few tokens with divergences of nats; the top-``k`` mean sees them whatever the sample's
   length, and averaging ``k > 1`` tokens damps the single-token noise a ``max`` would carry.
2. **Per-sample p-values** against the rest: ``p_i = (1 + #{rest ≥ t_i}) / (1 + n_rest)``, the
   empirical upper-tail probability of ``t_i`` among all samples of the other categories.
3. **Higher criticism** over a category's p-values (Donoho & Jin, 2004):
   ``HC = max_i √n (i/n − p_(i)) / √(p_(i)(1 − p_(i)))`` over the smallest half of the sorted
   p-values. It is large when a few p-values are far smaller than uniform p-values would be — a
   sparse mixture — and stays near its null when the category is like the rest, however many
   samples it has. The ``HC+`` restriction to ``p_(i) ≥ 1/n`` is not applied: it discards exactly
   the strongest evidence (five changed facts give p-values of ``1/(1 + n_rest)``, below ``1/n``),
   and its purpose — taming the null's heavy tail from tiny p-values — is served here by the
   permutation calibration and by empirical p-values, which are never below ``1/(1 + n_rest)``.
4. **Calibration by permutation**: the category labels are shuffled ``n_permutations`` times
   (category sizes kept) and HC recomputed; ``p = (1 + #{HC_perm ≥ HC_obs}) / (1 +
   n_permutations)``. This makes no assumption about the distribution of ``t_i``, and the per-sample
   p-values' dependence (they share the pooled rest) is inside the null too.

The **outliers** of a category are its samples with ``t_i`` above every one of the rest's samples
but the top ``1 %`` (above the rest's 99th percentile), largest first; the **sparse effect** is the
median of their excess ``t_i − q99(rest)`` in nats (0 without outliers). :mod:`verdict` flags on
it only above its own floor, as the mean test flags only above the noise floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lmassay.attest.statistics.records import FloatArray

TAIL_TOKENS = 4
"""How many of a sample's largest per-token KL values its tail statistic averages."""
OUTLIER_QUANTILE = 0.99
"""A sample is an outlier when its tail statistic exceeds this quantile of the rest's."""


@dataclass(frozen=True)
class SparseTest:
    """The sparse test of one category: its HC, permutation p-value, outliers and effect."""

    hc: float
    p_value: float
    outliers: tuple[int, ...]
    """Indices (into the category's samples, in input order) of its outliers, largest first."""
    effect: float
    """Median excess of the outliers' tail statistic over the rest's 99th percentile (nats)."""
    threshold: float
    """The rest's 99th percentile of the tail statistic; the outliers lie above it."""


def tail_statistic(token_kl: FloatArray, k: int = TAIL_TOKENS) -> float:
    """The mean of the ``k`` largest values of ``token_kl`` (all of them when fewer; 0 if none)."""
    values = np.asarray(token_kl, dtype=np.float64)
    if values.size == 0:
        return 0.0
    top = values if values.size <= k else np.partition(values, values.size - k)[-k:]
    return float(top.mean())


def higher_criticism(p_values: FloatArray) -> float:
    """HC of ``p_values`` (see the module docstring); 0 when no p-value qualifies."""
    p = np.sort(np.asarray(p_values, dtype=np.float64))
    n = p.size
    if n == 0:
        return 0.0
    i = np.arange(1, n + 1, dtype=np.float64)
    keep = (i <= max(1, n // 2)) & (p < 1.0)
    if not keep.any():
        return 0.0
    pk, ik = p[keep], i[keep]
    return float(np.max(np.sqrt(n) * (ik / n - pk) / np.sqrt(pk * (1.0 - pk))))


def _tail_p_values(values: FloatArray, rest_sorted: FloatArray) -> FloatArray:
    """``(1 + #{rest ≥ v}) / (1 + n_rest)`` for each ``v`` of ``values``."""
    at_least = rest_sorted.size - np.searchsorted(rest_sorted, values, side="left")
    return ((1.0 + at_least) / (1.0 + rest_sorted.size)).astype(np.float64)


def _hc_of_each(values: FloatArray, labels: np.ndarray, names: Sequence[int]) -> FloatArray:
    """HC of each category code in ``names`` when the samples are labelled ``labels``."""
    out = np.empty(len(names), dtype=np.float64)
    for j, code in enumerate(names):
        mine = labels == code
        rest = np.sort(values[~mine])
        out[j] = higher_criticism(_tail_p_values(values[mine], rest))
    return out


def sparse_tests(
    tail: Mapping[str, FloatArray],
    tested: Sequence[str],
    *,
    n_permutations: int = 999,
    seed: int = 0,
) -> dict[str, SparseTest]:
    """The sparse test of each ``tested`` category, its tail statistics ``tail[name]`` against
    those of every other category's samples (tested or not). Deterministic given ``seed``."""
    names = list(tail)
    values = np.concatenate([np.asarray(tail[n], dtype=np.float64) for n in names])
    labels = np.concatenate([np.full(len(tail[n]), code) for code, n in enumerate(names)])
    codes = [names.index(n) for n in tested]
    observed = _hc_of_each(values, labels, codes)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(codes), dtype=np.int64)
    for _ in range(n_permutations):
        exceed += _hc_of_each(values, rng.permutation(labels), codes) >= observed - 1e-12
    results = {}
    for j, name in enumerate(tested):
        mine = np.asarray(tail[name], dtype=np.float64)
        rest = values[labels != codes[j]]
        cut = float(np.quantile(rest, OUTLIER_QUANTILE)) if rest.size else np.inf
        order = np.argsort(-mine, kind="stable")
        outliers = tuple(int(i) for i in order if mine[i] > cut)
        effect = float(np.median(mine[list(outliers)] - cut)) if outliers else 0.0
        results[name] = SparseTest(
            hc=float(observed[j]),
            p_value=float((1 + exceed[j]) / (1 + n_permutations)),
            outliers=outliers,
            effect=effect,
            threshold=cut,
        )
    return results
