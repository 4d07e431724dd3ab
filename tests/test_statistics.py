"""Tests of lmassay.attest.statistics on synthetic samples whose answer is known."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import scipy.stats

import lmassay.attest.statistics as st
from lmassay.attest.statistics import (
    DEFAULT_DIFFERENT_MODEL,
    DEFAULT_NOISE_FLOOR,
    DIFFERENT_MODEL_RATIO,
    SampleStatistic,
    StatsConfig,
    analyse,
    benjamini_hochberg,
    bootstrap,
)
from lmassay.errors import InputError

CATEGORY_KEYS = [
    "name",
    "n_samples",
    "n_tokens",
    "n_bytes",
    "ppl_model",
    "ppl_reference",
    "ppl_model_ci",
    "ppl_reference_ci",
    "bpb_model",
    "bpb_reference",
    "delta_bpb",
    "mean_kl",
    "mean_kl_ci",
    "tail_kl",
    "tail_kl_ci",
    "top1_agreement",
    "level",
    "p_value",
    "q_value",
    "effect",
    "auc",
    "tested",
    "flagged",
    "note",
    "distribution",
    "sparse_p_value",
    "sparse_q_value",
    "sparse_effect",
    "n_outliers",
    "outlier_threshold",
    "reasons",
    "spread",
    "mean_floor",
    "n_answers",
    "answer_p_value",
    "answer_q_value",
    "answer_effect",
    "n_answer_outliers",
    "answer_threshold",
    "answer_spread",
    "answer_floor",
]
SUMMARY_KEYS = [
    "statistic",
    "n_samples",
    "n_tokens",
    "n_bytes",
    "ppl_model",
    "ppl_reference",
    "bpb_model",
    "bpb_reference",
    "delta_bpb",
    "mean_kl",
    "baseline_level",
    "noise_floor",
    "spread_multiple",
    "sparse_floor",
    "answer_floor",
    "different_model_threshold",
    "different_model_basis",
    "weight_change",
    "alpha",
    "message",
]
FAST = StatsConfig(n_bootstrap=200, n_permutations=199)
NAMES = [f"topic{i}" for i in range(8)]


def kl_samples(
    seed: int,
    shifts: dict[str, float] | None = None,
    names: Sequence[str] = NAMES,
    n_samples: int = 40,
    noise_scale: float = 0.005,
    base: float = 0.0,
) -> list[SampleStatistic]:
    """Per-token KL ~ base + Gamma(2, noise_scale) (+ the category's shift), 20-80 tokens."""
    rng = np.random.default_rng(seed)
    shifts = shifts or {}
    out: list[SampleStatistic] = []
    for name in names:
        for _ in range(n_samples):
            n_tokens = int(rng.integers(20, 81))
            kl = base + shifts.get(name, 0.0) + rng.gamma(2.0, noise_scale, size=n_tokens)
            lp_reference = float(-rng.uniform(1.5, 2.5) * n_tokens)
            out.append(
                SampleStatistic(
                    category=name,
                    n_tokens=n_tokens,
                    n_bytes=int(4 * n_tokens + rng.integers(0, 5)),
                    logprob_model=lp_reference - float(kl.sum()),
                    logprob_reference=lp_reference,
                    token_kl=kl,
                    token_top1_agree=rng.random(n_tokens) < 0.9,
                )
            )
    return out


def by_name(analysis: st.Analysis) -> dict[str, st.CategoryStats]:
    return {c.name: c for c in analysis.categories}


# ------------------------------------------------------------------------------------------------
# Verdicts
# ------------------------------------------------------------------------------------------------


def test_one_shifted_category_is_flagged() -> None:
    analysis = analyse(kl_samples(1, {"topic3": 0.2}), "kl", FAST)
    assert analysis.verdict == "tampered"
    assert analysis.flagged == ["topic3"]
    cats = by_name(analysis)
    shifted = cats["topic3"]
    assert shifted.tested and shifted.flagged
    assert shifted.auc == 1.0
    assert shifted.q_value is not None and shifted.q_value < 1e-6
    others = [cats[n].level for n in NAMES if n != "topic3"]
    assert shifted.effect == pytest.approx(shifted.level - float(np.median(others)), abs=1e-15)
    assert shifted.effect == pytest.approx(0.2, abs=0.01)
    assert analysis.baseline_level == pytest.approx(0.01, abs=0.003)
    assert all(not cats[n].flagged for n in NAMES if n != "topic3")
    assert "topic3" in analysis.message and "1 of 8" in analysis.message
    assert analysis.warnings == []


def test_equal_categories_rarely_flagged() -> None:
    """Under the null: no flags with the default floors; with none, BH keeps FDR low (the mean
    and the sparse tests together)."""
    any_significant = 0
    for seed in range(20):
        samples = kl_samples(100 + seed)
        quick = StatsConfig(n_bootstrap=20, n_permutations=199)
        analysis = analyse(samples, "kl", quick)
        assert analysis.verdict == "consistent"
        assert analysis.flagged == []
        assert all(c.tested for c in analysis.categories)
        no_floor = analyse(samples, "kl", replace(quick, noise_floor=0.0, sparse_floor=0.0))
        any_significant += bool(no_floor.flagged)
    assert any_significant <= 3  # expected about 1 in 20 at alpha = 0.05


def test_global_shift_is_a_different_model() -> None:
    # the reference's cross-entropy is 1.5-2.5 nats/token: the threshold is half of it, <= 1.25
    shift = DIFFERENT_MODEL_RATIO * 2.5 + 0.2
    analysis = analyse(kl_samples(2, base=shift), "kl", FAST)
    assert analysis.verdict == "different-model"
    assert analysis.flagged == []
    assert analysis.baseline_level is not None and analysis.baseline_level > shift
    assert "different model" in analysis.message
    summary = analysis.summary_json()
    assert summary["different_model_basis"] == "divergence"
    reference_nats = math.log(summary["ppl_reference"])
    assert summary["different_model_threshold"] == pytest.approx(
        DIFFERENT_MODEL_RATIO * reference_nats, rel=1e-12
    )


def test_the_different_model_threshold_is_relative_to_the_reference_uncertainty() -> None:
    """The same KL of 0.8 nats/token is another model for a reference unsure by 1 nat/token, and
    a drift for one unsure by 3 (an absolute threshold would call both alike)."""
    samples = kl_samples(5, base=0.8)
    sure = [replace(s, logprob_reference=-1.0 * s.n_tokens) for s in samples]
    unsure = [replace(s, logprob_reference=-3.0 * s.n_tokens) for s in samples]
    assert analyse(sure, "kl", FAST).verdict == "different-model"
    assert analyse(unsure, "kl", FAST).verdict == "consistent"


def test_the_weights_decide_the_different_model_call_when_comparable() -> None:
    drifted = kl_samples(6, base=2.0)  # far above any functional threshold
    assert analyse(drifted, "kl", FAST, weight_change=0.12).verdict == "consistent"
    quiet = kl_samples(6)  # functionally close, but independent weights
    independent = analyse(quiet, "kl", FAST, weight_change=1.41)
    assert independent.verdict == "different-model"
    assert "weights are independent" in independent.message
    assert independent.summary_json()["different_model_basis"] == "weights"
    assert independent.summary_json()["weight_change"] == 1.41


def test_different_model_still_reports_flags() -> None:
    analysis = analyse(kl_samples(3, {"topic5": 0.5}, base=1.5), "kl", FAST)
    assert analysis.verdict == "different-model"
    assert analysis.flagged == ["topic5"]


def test_shift_below_noise_floor_is_not_flagged() -> None:
    shift = DEFAULT_NOISE_FLOOR["kl"] / 2
    analysis = analyse(kl_samples(4, {"topic2": shift}, noise_scale=0.0005), "kl", FAST)
    cat = by_name(analysis)["topic2"]
    assert cat.q_value is not None and cat.q_value < 1e-6  # highly significant
    assert cat.effect == pytest.approx(shift, abs=1e-3)
    assert not cat.flagged
    assert cat.note is not None and "noise floor" in cat.note
    assert analysis.verdict == "consistent"
    # A lower floor flags it.
    lower = analyse(
        kl_samples(4, {"topic2": shift}, noise_scale=0.0005), "kl", replace(FAST, noise_floor=0.005)
    )
    assert lower.flagged == ["topic2"]


# Every category drifts by its own amount (continued training, or a tamperer who mixes clean text
# in): 0.04 ... 0.11 nats/token, 0.01 apart. The largest stands 0.04 above the others' median, twice
# the absolute floor, yet within 1.4 spreads of them (spread = 1.4826 × 0.02 = 0.030).
DRIFTS = {name: 0.04 + 0.01 * i for i, name in enumerate(NAMES)}


def test_a_drift_of_every_category_is_not_a_flag() -> None:
    samples = kl_samples(7, DRIFTS)
    analysis = analyse(samples, "kl", FAST)
    top = by_name(analysis)["topic7"]
    assert top.effect == pytest.approx(0.04, abs=0.004)
    assert top.spread == pytest.approx(1.4826 * 0.02, abs=0.004)
    assert top.mean_floor == pytest.approx(3.0 * top.spread, rel=1e-12)
    assert top.q_value is not None and top.q_value < 1e-6
    assert analysis.flagged == [] and analysis.verdict == "consistent"
    assert top.note is not None and "3 × the spread" in top.note
    assert analysis.summary_json()["spread_multiple"] == 3.0
    # The absolute floor alone would flag the drift's top categories.
    absolute = analyse(samples, "kl", replace(FAST, spread_multiple=0.0))
    assert "topic7" in absolute.flagged
    assert by_name(absolute)["topic7"].mean_floor == DEFAULT_NOISE_FLOOR["kl"]


def test_a_category_that_stands_clear_of_the_drift_is_flagged() -> None:
    """0.15 nats/token above the others' median: five spreads of the drift."""
    drifted = {**DRIFTS, "topic3": DRIFTS["topic3"] + 0.15}
    analysis = analyse(kl_samples(8, drifted), "kl", FAST)
    assert analysis.flagged == ["topic3"]
    assert "mean" in by_name(analysis)["topic3"].reasons
    assert analysis.verdict == "tampered"


def test_without_drift_the_absolute_floor_decides() -> None:
    """Categories alike (spread ≈ 0.001): the floor is the absolute 0.02 nats/token."""
    analysis = analyse(kl_samples(9, {"topic1": 0.03}, noise_scale=0.0005), "kl", FAST)
    assert analysis.flagged == ["topic1"]
    assert by_name(analysis)["topic1"].mean_floor == DEFAULT_NOISE_FLOOR["kl"]


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------


def test_order_of_samples_and_categories_does_not_matter() -> None:
    samples = kl_samples(5, {"topic1": 0.1})
    reference = analyse(samples, "kl", FAST).to_json()
    rng = np.random.default_rng(0)
    shuffled = [samples[i] for i in rng.permutation(len(samples))]
    assert analyse(shuffled, "kl", FAST).to_json() == reference
    assert analyse(samples[::-1], "kl", FAST).to_json() == reference


def test_same_seed_same_intervals_other_seed_close() -> None:
    samples = kl_samples(6)
    first = by_name(analyse(samples, "kl", FAST))
    again = by_name(analyse(samples, "kl", FAST))
    other = by_name(analyse(samples, "kl", replace(FAST, seed=1)))
    changed = 0
    for name in NAMES:
        assert first[name].mean_kl_ci == again[name].mean_kl_ci
        assert first[name].tail_kl_ci == again[name].tail_kl_ci
        a, b = first[name].mean_kl_ci, other[name].mean_kl_ci
        assert a is not None and b is not None
        width = a[1] - a[0]
        changed += a != b
        assert abs(a[0] - b[0]) < 0.25 * width and abs(a[1] - b[1]) < 0.25 * width
    assert changed == len(NAMES)


def test_to_json_is_plain_and_complete() -> None:
    analysis = analyse(kl_samples(7, {"topic0": 0.3}), "kl", FAST)
    data = analysis.to_json()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert list(data) == ["verdict", "flagged", "comparison", "summary", "categories", "warnings"]
    assert list(data["summary"]) == SUMMARY_KEYS
    assert data["summary"]["statistic"] == "mean_kl"
    assert data["summary"]["noise_floor"] == DEFAULT_NOISE_FLOOR["kl"]
    assert [c["name"] for c in data["categories"]] == sorted(NAMES)
    for cat in data["categories"]:
        assert list(cat) == CATEGORY_KEYS
        assert isinstance(cat["mean_kl_ci"], list) and len(cat["mean_kl_ci"]) == 2
        assert len(cat["distribution"]) == 21


# ------------------------------------------------------------------------------------------------
# Numbers against independent computations
# ------------------------------------------------------------------------------------------------


def test_token_weighted_figures_match_direct_computation() -> None:
    samples = kl_samples(8, {"topic4": 0.05})
    analysis = analyse(samples, "kl", FAST)
    for cat in analysis.categories:
        mine = [s for s in samples if s.category == cat.name]
        tokens = sum(s.n_tokens for s in mine)
        n_bytes = sum(s.n_bytes for s in mine)
        lp_m = sum(s.logprob_model for s in mine)
        lp_r = sum(s.logprob_reference or 0.0 for s in mine)
        pooled = np.concatenate([s.token_kl for s in mine if s.token_kl is not None])
        agree = np.concatenate([s.token_top1_agree for s in mine if s.token_top1_agree is not None])
        assert cat.n_samples == len(mine) and cat.n_tokens == tokens and cat.n_bytes == n_bytes
        assert cat.ppl_model == pytest.approx(math.exp(-lp_m / tokens), rel=1e-12)
        assert cat.ppl_reference == pytest.approx(math.exp(-lp_r / tokens), rel=1e-12)
        assert cat.bpb_model == pytest.approx(-lp_m / (math.log(2) * n_bytes), rel=1e-12)
        assert cat.delta_bpb == pytest.approx((lp_r - lp_m) / (math.log(2) * n_bytes), rel=1e-9)
        assert cat.mean_kl == pytest.approx(pooled.sum() / tokens, rel=1e-12)
        assert cat.level == cat.mean_kl
        assert cat.tail_kl == pytest.approx(np.quantile(pooled, 0.95), rel=1e-12)
        assert cat.top1_agreement == pytest.approx(agree.mean(), rel=1e-12)
        # Token-weighted, not a mean of per-sample means (lengths differ, so these differ).
        per_sample = [float(np.mean(s.token_kl)) for s in mine if s.token_kl is not None]
        assert sorted(per_sample)[0] == pytest.approx(cat.distribution[0], rel=1e-12)
        assert sorted(per_sample)[-1] == pytest.approx(cat.distribution[-1], rel=1e-12)
        assert list(cat.distribution) == sorted(cat.distribution)
        for estimate, ci in ((cat.mean_kl, cat.mean_kl_ci), (cat.tail_kl, cat.tail_kl_ci)):
            assert ci is not None and estimate is not None
            assert ci[0] <= estimate <= ci[1]
            assert ci[0] < ci[1]
    total_tokens = sum(s.n_tokens for s in samples)
    all_kl = sum(float(np.sum(s.token_kl)) for s in samples if s.token_kl is not None)
    assert analysis.totals["n_tokens"] == total_tokens
    assert analysis.totals["mean_kl"] == pytest.approx(all_kl / total_tokens, rel=1e-12)
    lp = sum(s.logprob_model for s in samples)
    assert analysis.totals["ppl_model"] == pytest.approx(math.exp(-lp / total_tokens), rel=1e-12)


def test_p_values_and_auc_match_scipy() -> None:
    samples = kl_samples(9, {"topic6": 0.004})
    analysis = analyse(samples, "kl", FAST)
    stat = {n: [] for n in NAMES}  # type: dict[str, list[float]]
    for s in samples:
        assert s.token_kl is not None
        stat[s.category].append(float(s.token_kl.sum()) / s.n_tokens)
    cats = by_name(analysis)
    ps = []
    for name in NAMES:
        rest = [v for other in NAMES if other != name for v in stat[other]]
        expected = scipy.stats.mannwhitneyu(stat[name], rest, alternative="greater")
        assert cats[name].p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert cats[name].auc == pytest.approx(expected.statistic / (40 * len(rest)), rel=1e-12)
        ps.append(expected.pvalue)
    # one Benjamini-Hochberg family: the mean test and the sparse test of every category
    sparse = [cats[name].sparse_p_value for name in NAMES]
    q = benjamini_hochberg(ps + sparse)
    for name, expected_q, expected_sparse_q in zip(NAMES, q[:8], q[8:], strict=True):
        assert cats[name].q_value == pytest.approx(expected_q, rel=1e-9)
        assert cats[name].sparse_q_value == pytest.approx(expected_sparse_q, rel=1e-9)


def test_tail_bootstrap_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every resample's tail quantile equals numpy.quantile of the pooled, repeated tokens."""
    monkeypatch.setattr(bootstrap, "_BLOCKS_PER_TOKEN", 1.0)  # small blocks: ranks cross edges
    scanned_rows: list[int] = []
    scan = bootstrap.Resampler._scan

    def spy(self: bootstrap.Resampler, counts: np.ndarray, *args: np.ndarray) -> object:
        scanned_rows.append(counts.shape[0])
        return scan(self, counts, *args)

    monkeypatch.setattr(bootstrap.Resampler, "_scan", spy)
    rng = np.random.default_rng(10)
    for _ in range(20):
        n = int(rng.integers(1, 15))
        tokens = [
            rng.gamma(1.0, 1.0, size=int(rng.integers(1, 30))).round(int(rng.integers(0, 3)))
            for _ in range(n)
        ]
        q = float(rng.uniform(0.05, 0.99))
        counts = bootstrap.resample_counts(rng, 40, n)
        assert np.all(counts.sum(axis=1) == n)
        means, tails = bootstrap.Resampler(tokens, q).replicates(counts)
        for row in range(counts.shape[0]):
            pooled = np.concatenate(
                [np.tile(t, int(c)) for t, c in zip(tokens, counts[row], strict=True)]
            )
            assert tails[row] == pytest.approx(np.quantile(pooled, q), abs=1e-12)
            assert means[row] == pytest.approx(pooled.mean(), rel=1e-12)
    assert any(rows < 40 for rows in scanned_rows)  # the second scan (rank in a later block) ran


def test_benjamini_hochberg_by_hand() -> None:
    # sorted p: 0.005, 0.01, 0.03, 0.04 -> 4p/rank: 0.02, 0.02, 0.04, 0.04 (already monotone)
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, 0.04, 0.02])
    # sorted p: 0.01, 0.02, 0.5 -> 0.03, 0.03, 0.5 ; running minimum from the top
    np.testing.assert_allclose(benjamini_hochberg([0.5, 0.02, 0.01]), [0.5, 0.03, 0.03])
    # 3·0.3/1 = 0.9 > 3·0.35/2 = 0.525: monotone by the running minimum
    np.testing.assert_allclose(benjamini_hochberg([0.3, 0.35, 0.9]), [0.525, 0.525, 0.9])
    np.testing.assert_allclose(benjamini_hochberg([1.0, 1.0]), [1.0, 1.0])
    assert benjamini_hochberg([]).shape == (0,)
    with pytest.raises(InputError):
        benjamini_hochberg([0.1, float("nan")])
    with pytest.raises(InputError):
        benjamini_hochberg([1.5])


def _plain_bh(p: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg by its definition: q_i = min over p_j >= p_i of m·p_j / rank_j, <= 1."""
    m = len(p)
    ranked = sorted(p)
    rank = {value: m - ranked[::-1].index(value) for value in ranked}  # highest rank of ties
    return [min(1.0, min(m * pj / rank[pj] for pj in p if pj >= pi)) for pi in p]


def test_benjamini_hochberg_equals_the_plain_computation() -> None:
    rng = np.random.default_rng(11)
    for size in (1, 2, 7, 50, 200):
        p = rng.uniform(0, 1, size) ** 3
        q = benjamini_hochberg(p)
        np.testing.assert_allclose(q, _plain_bh(p.tolist()), rtol=1e-12, atol=0)
        assert np.all(np.diff(q[np.argsort(p)]) >= 0) and np.all(q <= 1)
    for edge in ([0.0, 0.0], [1.0], [0.2, 0.2, 0.2], [0.0, 1.0, 0.5, 0.5], [1e-300, 1.0]):
        np.testing.assert_allclose(benjamini_hochberg(edge), _plain_bh(edge), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------
# bpb and none
# ------------------------------------------------------------------------------------------------


def bpb_samples(
    seed: int, worse: dict[str, float], with_reference: bool = True
) -> list[SampleStatistic]:
    """Model log-probs equal the reference's, but worse by ``worse[c]`` bits per byte in c."""
    rng = np.random.default_rng(seed)
    out = []
    for name in ["code", "cooking", "history", "law", "maths", "sport"]:
        for _ in range(20):
            n_tokens = int(rng.integers(10, 60))
            n_bytes = int(n_tokens * rng.uniform(3.0, 5.0))
            lp_ref = float(-rng.uniform(1.0, 3.0) * n_tokens)
            noise = float(rng.normal(0.0, 0.002))
            lp_model = lp_ref - (worse.get(name, 0.0) + noise) * math.log(2) * n_bytes
            out.append(
                SampleStatistic(
                    name, n_tokens, n_bytes, lp_model, lp_ref if with_reference else None
                )
            )
    return out


def test_bpb_comparison_flags_the_worse_category() -> None:
    samples = bpb_samples(12, {"cooking": 0.25})
    analysis = analyse(samples, "bpb", FAST)
    assert analysis.statistic == "delta_bpb"
    assert analysis.verdict == "tampered" and analysis.flagged == ["cooking"]
    cooking = by_name(analysis)["cooking"]
    mine = [s for s in samples if s.category == "cooking"]
    expected = sum((s.logprob_reference or 0.0) - s.logprob_model for s in mine) / (
        math.log(2) * sum(s.n_bytes for s in mine)
    )
    assert cooking.delta_bpb == pytest.approx(expected, rel=1e-12)
    assert cooking.delta_bpb == pytest.approx(0.25, abs=0.002)
    assert cooking.level == cooking.delta_bpb
    assert cooking.mean_kl is None and cooking.mean_kl_ci is None and cooking.tail_kl is None
    assert cooking.top1_agreement is None
    assert analysis.noise_floor == DEFAULT_NOISE_FLOOR["bpb"]
    assert analysis.to_json()["summary"]["mean_kl"] is None


def test_bpb_global_shift_is_a_different_model() -> None:
    shift = DEFAULT_DIFFERENT_MODEL["bpb"] + 0.1
    worse = dict.fromkeys(["code", "cooking", "history", "law", "maths", "sport"], shift)
    assert analyse(bpb_samples(13, worse), "bpb", FAST).verdict == "different-model"


def test_none_is_scored_only() -> None:
    samples = bpb_samples(14, {"cooking": 0.25}, with_reference=False)
    analysis = analyse(samples, "none", FAST)
    assert analysis.verdict == "scored-only"
    assert analysis.statistic == "bpb"
    assert analysis.flagged == [] and analysis.baseline_level is None
    assert analysis.noise_floor is None and analysis.different_model_threshold is None
    assert "cannot show tampering" in analysis.message
    for cat in analysis.categories:
        assert not cat.tested and not cat.flagged
        assert (
            cat.p_value is None and cat.q_value is None and cat.effect is None and cat.auc is None
        )
        assert cat.ppl_reference is None and cat.delta_bpb is None
        assert cat.level == cat.bpb_model
    summary = analysis.summary_json()
    assert summary["ppl_reference"] is None and summary["baseline_level"] is None
    json.dumps(analysis.to_json(), allow_nan=False)


# ------------------------------------------------------------------------------------------------
# Too few samples, invalid input
# ------------------------------------------------------------------------------------------------


def test_too_few_samples_is_warned_not_tested() -> None:
    samples = kl_samples(15, {"topic3": 0.2}) + kl_samples(16, names=["tiny"], n_samples=3)
    analysis = analyse(samples, "kl", FAST)
    tiny = by_name(analysis)["tiny"]
    assert not tiny.tested and tiny.p_value is None and tiny.q_value is None
    assert tiny.note == "too few samples (3 < 5): not tested"
    assert "category 'tiny' has 3 samples (< 5): not tested" in analysis.warnings
    assert tiny.mean_kl_ci is not None  # still described
    assert analysis.flagged == ["topic3"]


def test_single_category_is_not_tested() -> None:
    analysis = analyse(kl_samples(17, names=["only"]), "kl", FAST)
    assert analysis.verdict == "consistent"
    assert not analysis.categories[0].tested
    assert any("only one category" in w for w in analysis.warnings)
    assert analysis.baseline_level == analysis.categories[0].level


def test_single_sample_and_all_small_categories() -> None:
    samples = kl_samples(18, n_samples=1, names=["a", "b", "c"])
    analysis = analyse(samples, "kl", FAST)
    assert analysis.verdict == "consistent"
    assert all(not c.tested and c.mean_kl_ci is None for c in analysis.categories)
    assert any("nothing is tested" in w for w in analysis.warnings)
    json.dumps(analysis.to_json(), allow_nan=False)


def test_identical_values_give_no_evidence() -> None:
    samples = [
        SampleStatistic(f"c{i}", 4, 10, -8.0, -8.0, np.zeros(4), np.ones(4, dtype=bool))
        for i in range(3)
        for _ in range(6)
    ]
    analysis = analyse(samples, "kl", FAST)
    assert analysis.verdict == "consistent"
    assert all(c.p_value == 1.0 and c.auc == 0.5 for c in analysis.categories)


def _good() -> SampleStatistic:
    return SampleStatistic("a", 3, 9, -3.0, -2.5, np.full(3, 0.1), np.ones(3, dtype=bool))


@pytest.mark.parametrize(
    ("samples", "comparison", "config"),
    [
        ([], "kl", StatsConfig()),
        ([replace(_good(), token_kl=None)], "kl", StatsConfig()),
        ([replace(_good(), token_kl=np.zeros(2))], "kl", StatsConfig()),
        ([replace(_good(), token_kl=np.array([0.1, np.nan, 0.1]))], "kl", StatsConfig()),
        ([replace(_good(), token_top1_agree=np.array([1, 2, 0]))], "kl", StatsConfig()),
        ([_good(), replace(_good(), token_top1_agree=None)], "kl", StatsConfig()),
        ([replace(_good(), n_tokens=0, token_kl=np.zeros(0))], "kl", StatsConfig()),
        ([replace(_good(), n_bytes=0)], "bpb", StatsConfig()),
        ([replace(_good(), logprob_model=float("nan"))], "bpb", StatsConfig()),
        ([replace(_good(), logprob_reference=None)], "bpb", StatsConfig()),
        ([_good(), replace(_good(), logprob_reference=None)], "none", StatsConfig()),
        ([replace(_good(), category="")], "none", StatsConfig()),
        ([_good()], "ppl", StatsConfig()),
        ([_good()], "kl", StatsConfig(alpha=0.0)),
        ([_good()], "kl", StatsConfig(alpha=1.5)),
        ([_good()], "kl", StatsConfig(n_bootstrap=0)),
        ([_good()], "kl", StatsConfig(seed=-1)),
        ([_good()], "kl", StatsConfig(min_samples=1)),
        ([_good()], "kl", StatsConfig(tail_quantile=1.0)),
        ([_good()], "kl", StatsConfig(noise_floor=-0.1)),
        ([_good()], "kl", StatsConfig(different_model_threshold=float("inf"))),
    ],
)
def test_invalid_input_raises(
    samples: list[SampleStatistic], comparison: str, config: StatsConfig
) -> None:
    with pytest.raises(InputError) as info:
        analyse(samples, comparison, config)  # type: ignore[arg-type]
    assert info.value.what and info.value.fix


def test_valid_minimal_input() -> None:
    analysis = analyse([_good()], "kl", FAST)
    assert analysis.categories[0].n_tokens == 3
    assert analysis.categories[0].mean_kl == pytest.approx(0.1)


def test_perplexity_intervals_contain_the_estimate_and_collapse_without_spread() -> None:
    rng = np.random.default_rng(3)
    samples = [
        SampleStatistic("a", int(t), 4 * int(t), -1.5 * t * rng.uniform(0.8, 1.2), -1.4 * t, None)
        for t in rng.integers(20, 60, size=30)
    ]
    cat = analyse(samples, "bpb", FAST).categories[0]
    assert cat.ppl_model_ci is not None and cat.ppl_reference_ci is not None
    assert cat.ppl_model_ci[0] < cat.ppl_model < cat.ppl_model_ci[1]
    # every sample has the same reference log-prob per token: every resample gives the same value
    assert cat.ppl_reference_ci[0] == pytest.approx(cat.ppl_reference, rel=1e-12)
    assert cat.ppl_reference_ci[1] == pytest.approx(cat.ppl_reference, rel=1e-12)


def _with_changed_tokens(samples, category: str, n_changed: int, nats: float = 3.0):
    """``samples`` with two tokens of the first ``n_changed`` samples of ``category`` raised by
    ``nats`` (a changed fact), the summed log-probs kept consistent with the KL."""
    out, done = [], 0
    for s in samples:
        if s.category == category and done < n_changed and s.token_kl is not None:
            kl = s.token_kl.copy()
            kl[5:7] += nats
            s = replace(s, token_kl=kl, logprob_model=s.logprob_model - 2 * nats)
            done += 1
        out.append(s)
    return out


def test_a_few_changed_samples_are_flagged_by_the_sparse_test_alone() -> None:
    samples = _with_changed_tokens(kl_samples(11), "topic3", n_changed=5)
    analysis = analyse(samples, "kl", StatsConfig(n_bootstrap=200))  # 999 permutations
    cat = by_name(analysis)["topic3"]
    assert analysis.flagged == ["topic3"] and cat.reasons == ("sparse",)
    assert cat.n_outliers is not None and cat.n_outliers >= 5
    assert (
        cat.effect is not None and cat.effect < DEFAULT_NOISE_FLOOR["kl"]
    )  # the mean barely moves
    assert "a few of its samples" in analysis.message


def test_fewer_than_three_outliers_are_not_a_sparse_change() -> None:
    """The rule itself: a significant sparse test with a large effect but two outliers."""
    from lmassay.attest.statistics.sparse import SparseTest
    from lmassay.attest.statistics.verdict import flag

    rule = st.records.FlagRule.resolve("kl", StatsConfig())
    two = SparseTest(hc=9.0, p_value=0.001, outliers=(4, 7), effect=1.5, threshold=1.0)
    three = replace(two, outliers=(4, 7, 9))
    for sparse, flagged in ((two, []), (three, ["a"])):
        assert flag({"a": result_with(sparse)}, ["a"], rule).flagged == flagged
    assert (
        "only 2 samples stand out" in flag({"a": result_with(two)}, ["a"], rule).within_floor["a"]
    )


def result_with(sparse):
    """A category whose mean test is quiet and whose sparse test is significant."""
    return st.significance.CategoryTest(
        p_value=0.5, q_value=0.9, effect=0.0, auc=0.5, sparse=sparse, sparse_q_value=0.002
    )
