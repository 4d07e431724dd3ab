"""The analysis of one attestation: validate → group → describe → test → flag → judge."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from lmassay.attest.statistics.aggregation import describe, group_samples, totals
from lmassay.attest.statistics.records import (
    INDEPENDENT_WEIGHTS,
    STATISTIC,
    Analysis,
    CategoryStats,
    Comparison,
    FlagRule,
    SampleStatistic,
    StatsConfig,
)
from lmassay.attest.statistics.significance import CategoryTest, compare_with_rest, eligibility
from lmassay.attest.statistics.validation import validate
from lmassay.attest.statistics.verdict import flag, judge


def analyse(
    samples: Sequence[SampleStatistic],
    comparison: Comparison,
    config: StatsConfig = StatsConfig(),
    *,
    weight_change: float | None = None,
) -> Analysis:
    """Per-category statistics, tests and the verdict (see :mod:`lmassay.attest.statistics`).

    ``weight_change``: the median relative change of the model's tensors against the
    reference's (:mod:`lmassay.attest.weight_relation`), when it could be measured; above
    :data:`INDEPENDENT_WEIGHTS` the weights are independent, and it decides the different-model
    call. Raises :class:`~lmassay.errors.InputError` when the samples or the
    settings cannot be used.
    """
    validate(samples, comparison, config)
    groups = group_samples(samples, comparison)
    overall = totals(groups, comparison)
    ppl_reference = overall.get("ppl_reference")
    reference_nats = math.log(ppl_reference) if ppl_reference else None
    rule = FlagRule.resolve(comparison, config, reference_nats)
    names = sorted(groups)
    eligible = eligibility({n: g.n for n, g in groups.items()}, comparison, config.min_samples)
    described = {name: describe(groups[name], comparison, config, name) for name in names}
    levels = {name: described[name].level for name in names}
    per_sample = {name: groups[name].statistic(comparison) for name in names}
    results = compare_with_rest(
        per_sample,
        levels,
        eligible.tested,
        tail={name: groups[name].tail(comparison) for name in names},
        answers={name: groups[name].answer_drop for name in names} if comparison == "kl" else None,
        n_permutations=config.n_permutations,
        seed=config.seed,
    )
    flags = flag(results, eligible.tested, rule)
    notes = {**eligible.notes, **flags.within_floor}
    categories = [
        _tested(described[name], results.get(name), flags.reasons.get(name, ()), notes[name], rule)
        for name in names
    ]
    if comparison == "kl":
        categories = [
            replace(c, n_answers=int(groups[c.name].answer_drop.size)) for c in categories
        ]
    independent = None if weight_change is None else weight_change > INDEPENDENT_WEIGHTS
    verdict = judge(rule, levels, eligible.tested, flags, independent)
    return Analysis(
        comparison=comparison,
        statistic=STATISTIC[comparison],
        categories=categories,
        flagged=flags.flagged,
        verdict=verdict.verdict,
        baseline_level=verdict.baseline_level,
        noise_floor=rule.noise_floor,
        sparse_floor=rule.sparse_floor,
        answer_floor=rule.answer_floor,
        weight_change=weight_change,
        different_model_basis=None
        if comparison == "none"
        else ("weights" if weight_change is not None else "divergence"),
        different_model_threshold=rule.different_model_threshold,
        spread_multiple=None if comparison == "none" else rule.spread_multiple,
        alpha=config.alpha,
        warnings=eligible.warnings + verdict.warnings,
        totals=overall,
        message=verdict.message,
        unit=rule.unit,
    )


def _tested(
    described: CategoryStats,
    result: CategoryTest | None,
    reasons: tuple[str, ...],
    note: str | None,
    rule: FlagRule,
) -> CategoryStats:
    """A category's figures with the outcome of its tests (none when it was not tested)."""
    if result is None:
        return replace(described, note=note)
    sparse, answer = result.sparse, result.answer
    answer_spread = result.answer_spread
    return replace(
        described,
        p_value=result.p_value,
        q_value=result.q_value,
        effect=result.effect,
        auc=result.auc,
        spread=result.spread,
        mean_floor=rule.mean_floor(result.spread),
        tested=True,
        flagged=bool(reasons),
        note=note,
        reasons=reasons,
        sparse_p_value=sparse.p_value if sparse else None,
        sparse_q_value=result.sparse_q_value,
        sparse_effect=sparse.effect if sparse else None,
        n_outliers=len(sparse.outliers) if sparse else None,
        outlier_threshold=sparse.threshold if sparse else None,
        answer_p_value=answer.p_value if answer else None,
        answer_q_value=result.answer_q_value,
        answer_effect=answer.effect if answer else None,
        n_answer_outliers=len(answer.outliers) if answer else None,
        answer_threshold=answer.threshold if answer else None,
        answer_spread=answer_spread,
        answer_floor=rule.answer_floor_for(answer_spread) if answer_spread is not None else None,
    )
