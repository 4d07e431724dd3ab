"""The tests: each category against the rest, one-sided, with a false-discovery correction.

A category is tested when it has at least ``min_samples`` samples and at least two categories have
that many. Each tested category's per-sample statistics are compared with those of *all* samples
of the other categories (tested or not) by a one-sided Mann–Whitney U test
(``scipy.stats.mannwhitneyu``, ``alternative="greater"``, scipy's automatic method); ``auc = U /
(n1 · n2)`` estimates P(sample of the category > sample of the rest), ties counting one half. The
p-values of the tested categories are adjusted by Benjamini–Hochberg into q-values. ``effect =
level − median(levels of the other tested categories)``; ``spread = 1.4826 · median(|level −
median|)`` over those same other levels (a robust standard deviation: what the categories the
tampering did not single out vary by), against which :mod:`verdict` weighs the effect.

Given the per-sample figures of the sparse test (``tail``) and of the answer test (``answers``:
the answer drops of samples that state an answer), the same permutation-calibrated sparse test
(:mod:`sparse`) runs on each; the answer test on the tested categories with at least
:data:`MIN_ANSWERS` answers, against every other category's answers, when two or more categories
have that many. All p-values of all tests form one Benjamini–Hochberg family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as _sps

from lmassay.attest.statistics.records import MIN_ANSWERS, FloatArray
from lmassay.attest.statistics.sparse import SparseTest, sparse_tests
from lmassay.errors import InputError

MAD_TO_SD = 1.4826
"""The median absolute deviation of a normal sample times this estimates its standard deviation."""


@dataclass(frozen=True)
class CategoryTest:
    """The tests of one category against the rest: the mean test and the sparse test."""

    p_value: float
    q_value: float
    effect: float
    auc: float
    spread: float = 0.0
    sparse: SparseTest | None = None
    sparse_q_value: float | None = None
    answer: SparseTest | None = None
    """The answer test: the sparse test on the category's answer drops."""
    answer_q_value: float | None = None
    answer_spread: float | None = None
    """1.4826 × MAD of the other categories' answer drops."""


@dataclass(frozen=True)
class Eligibility:
    """Which categories are tested (sorted), a note per category, and warnings."""

    tested: list[str]
    notes: dict[str, str | None]
    warnings: list[str]


def benjamini_hochberg(p_values: Sequence[float] | npt.NDArray[np.floating[Any]]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order.

    ``q_(i) = min_{j >= i} m · p_(j) / j`` over the p-values sorted ascending, capped at 1, so the
    q-values are monotone in the p-values (``scipy.stats.false_discovery_control``, method
    ``"bh"``). An empty input gives an empty array.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return np.zeros(0, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise InputError(
            f"p-values must be finite numbers in [0, 1], got {p.tolist()!r}",
            "pass the raw p-values of the tests",
        )
    return np.asarray(_sps.false_discovery_control(p, method="bh"), dtype=np.float64)


def eligibility(sizes: Mapping[str, int], comparison: str, min_samples: int) -> Eligibility:
    """The categories to test given each category's number of samples (see the module docstring)."""
    names = sorted(sizes)
    notes: dict[str, str | None] = dict.fromkeys(names)
    warnings: list[str] = []
    if comparison == "none":
        return Eligibility([], notes, warnings)
    enough = [name for name in names if sizes[name] >= min_samples]
    for name in names:
        if sizes[name] < min_samples:
            warnings.append(
                f"category '{name}' has {count(sizes[name], 'sample')} (< {min_samples}): "
                "not tested"
            )
            notes[name] = f"too few samples ({sizes[name]} < {min_samples}): not tested"
    if len(enough) >= 2:
        return Eligibility(enough, notes, warnings)
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
    return Eligibility([], notes, warnings)


def compare_with_rest(
    per_sample: Mapping[str, FloatArray],
    levels: Mapping[str, float],
    tested: Sequence[str],
    *,
    tail: Mapping[str, FloatArray] | None = None,
    answers: Mapping[str, FloatArray] | None = None,
    n_permutations: int = 0,
    seed: int = 0,
) -> dict[str, CategoryTest]:
    """Mann–Whitney U of each tested category against all other samples and, given ``tail`` /
    ``answers`` and ``n_permutations > 0``, the sparse test / the answer test; BH across all of
    them (see the module docstring)."""
    raw: dict[str, tuple[float, float, float, float]] = {}
    for name in tested:
        x = per_sample[name]
        rest = np.concatenate([values for other, values in per_sample.items() if other != name])
        mwu = _sps.mannwhitneyu(x, rest, alternative="greater")
        p = float(mwu.pvalue)
        # scipy returns p = 1 when every value ties; a NaN would mean no evidence either.
        p = p if math.isfinite(p) else 1.0
        auc = float(mwu.statistic) / (x.size * rest.size)
        others = np.asarray([levels[o] for o in tested if o != name], dtype=np.float64)
        raw[name] = (p, auc, levels[name] - float(np.median(others)), robust_spread(others))
    sparse = (
        sparse_tests(tail, tested, n_permutations=n_permutations, seed=seed)
        if tail is not None and n_permutations > 0 and tested
        else {}
    )
    answer, answer_spread = _answer_tests(answers, tested, n_permutations, seed)
    family = (
        [raw[name][0] for name in tested]
        + [sparse[name].p_value for name in sparse]
        + [answer[name].p_value for name in answer]
    )
    q_values = benjamini_hochberg(family)
    q_mean = dict(zip(tested, q_values[: len(tested)], strict=True))
    q_sparse = dict(zip(sparse, q_values[len(tested) : len(tested) + len(sparse)], strict=True))
    q_answer = dict(zip(answer, q_values[len(tested) + len(sparse) :], strict=True))
    return {
        name: CategoryTest(
            p_value=raw[name][0],
            q_value=float(q_mean[name]),
            effect=raw[name][2],
            auc=raw[name][1],
            spread=raw[name][3],
            sparse=sparse.get(name),
            sparse_q_value=float(q_sparse[name]) if name in q_sparse else None,
            answer=answer.get(name),
            answer_q_value=float(q_answer[name]) if name in q_answer else None,
            answer_spread=answer_spread.get(name),
        )
        for name in tested
    }


def _answer_tests(
    answers: Mapping[str, FloatArray] | None,
    tested: Sequence[str],
    n_permutations: int,
    seed: int,
) -> tuple[dict[str, SparseTest], dict[str, float]]:
    """The answer test of each tested category with enough answers, and its rest's spread."""
    if answers is None or n_permutations <= 0:
        return {}, {}
    present = {name: values for name, values in answers.items() if values.size > 0}
    eligible = [name for name in tested if name in present and present[name].size >= MIN_ANSWERS]
    if len(eligible) < 2:
        return {}, {}
    results = sparse_tests(present, eligible, n_permutations=n_permutations, seed=seed)
    spreads = {}
    for name in eligible:
        spreads[name] = robust_spread(
            np.concatenate([v for other, v in present.items() if other != name])
        )
    return results, spreads


def robust_spread(values: FloatArray) -> float:
    """``1.4826 × median(|x − median(x)|)``: a standard deviation that outliers do not move."""
    return MAD_TO_SD * float(np.median(np.abs(values - np.median(values))))


def count(n: int, noun: str) -> str:
    """``"1 sample"``, ``"2 samples"``, ``"3 categories"``."""
    return (
        f"{n} {noun}" if n == 1 else f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"
    )
