"""The sparse test on data with a known answer: a few changed samples are found, a null is not."""

from __future__ import annotations

import numpy as np
import pytest

from lmassay.attest.statistics.sparse import (
    higher_criticism,
    sparse_tests,
    tail_statistic,
)


def test_tail_statistic_is_the_mean_of_the_k_largest():
    assert tail_statistic(np.array([0.1, 5.0, 0.2, 3.0, 0.0, 1.0]), k=2) == pytest.approx(4.0)
    assert tail_statistic(np.array([0.5, 1.5]), k=4) == pytest.approx(1.0)
    assert tail_statistic(np.array([])) == 0.0


def test_higher_criticism_by_hand():
    # n = 4: the smallest half (i = 1, 2): p_(1) = 0.01, p_(2) = 0.5
    p = np.array([0.9, 0.01, 0.5, 0.7])
    hc1 = np.sqrt(4) * (1 / 4 - 0.01) / np.sqrt(0.01 * 0.99)
    hc2 = np.sqrt(4) * (2 / 4 - 0.5) / np.sqrt(0.5 * 0.5)
    assert higher_criticism(p) == pytest.approx(max(hc1, hc2))
    assert higher_criticism(np.array([])) == 0.0


def _categories(rng, n_categories=8, n=40, changed=None, shift=3.0, n_changed=5):
    """Tail statistics of ``n`` samples per category, the same gamma law everywhere except
    ``n_changed`` samples of category ``changed``, shifted up by ``shift``."""
    tail = {}
    for c in range(n_categories):
        values = rng.gamma(2.0, 0.3, size=n)
        if c == changed:
            values[:n_changed] += shift
        tail[f"c{c}"] = values
    return tail


def test_five_changed_samples_among_forty_are_found_and_named():
    rng = np.random.default_rng(0)
    tail = _categories(rng, changed=3)
    results = sparse_tests(tail, sorted(tail), n_permutations=199, seed=0)
    assert results["c3"].p_value <= 0.01
    assert set(results["c3"].outliers) == {0, 1, 2, 3, 4}
    assert results["c3"].effect > 1.0
    others = [r.p_value for name, r in results.items() if name != "c3"]
    assert min(others) > 0.01


def test_two_changed_tokens_in_five_samples_escape_the_mean_test_but_not_this_one():
    """Token-level data: 8 categories x 40 samples x 60 tokens of small KL; in 5 samples of c3,
    two tokens (a changed fact) diverge by 3 nats. The per-sample means barely move (the
    category-mean test does not see it); the tail statistics do."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    tokens = {f"c{c}": rng.gamma(1.0, 0.05, size=(40, 60)) for c in range(8)}
    tokens["c3"][:5, 10:12] += 3.0
    means = {k: v.mean(axis=1) for k, v in tokens.items()}
    rest = np.concatenate([v for k, v in means.items() if k != "c3"])
    assert mannwhitneyu(means["c3"], rest, alternative="greater").pvalue > 0.05
    tail = {k: np.array([tail_statistic(row) for row in v]) for k, v in tokens.items()}
    result = sparse_tests(tail, sorted(tail), n_permutations=199, seed=0)["c3"]
    assert result.p_value <= 0.01 and set(result.outliers[:5]) == {0, 1, 2, 3, 4}  # largest first


def test_the_null_is_calibrated():
    """Categories drawn from one law: p-values are near-uniform, false flags at alpha stay near
    alpha (50 worlds x 5 categories, 49 permutations each)."""
    rng = np.random.default_rng(2)
    p_values = []
    for world in range(50):
        tail = _categories(rng, n_categories=5, n=30)
        results = sparse_tests(tail, sorted(tail), n_permutations=49, seed=world)
        p_values += [r.p_value for r in results.values()]
    p = np.array(p_values)
    assert np.mean(p <= 0.06) <= 0.1  # 250 tests: binomial(250, 0.06) / 250 stays below ~0.095
    assert 0.35 < np.median(p) < 0.65


def test_deterministic_given_the_seed():
    rng = np.random.default_rng(3)
    tail = _categories(rng, changed=1)
    first = sparse_tests(tail, sorted(tail), n_permutations=99, seed=7)
    assert first == sparse_tests(tail, sorted(tail), n_permutations=99, seed=7)
