"""The analysis of one attestation: validate → group → describe → test → flag → judge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lmassay.attest.statistics.aggregation import describe, group_samples, totals
from lmassay.attest.statistics.records import (
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
) -> Analysis:
    """Per-category statistics, tests and the verdict (see :mod:`lmassay.attest.statistics`).

    Raises :class:`~lmassay.errors.InputError` when the samples or the settings cannot be used.
    """
    validate(samples, comparison, config)
    rule = FlagRule.resolve(comparison, config)
    groups = group_samples(samples, comparison)
    names = sorted(groups)
    eligible = eligibility({n: g.n for n, g in groups.items()}, comparison, config.min_samples)
    described = {name: describe(groups[name], comparison, config, name) for name in names}
    levels = {name: described[name].level for name in names}
    per_sample = {name: groups[name].statistic(comparison) for name in names}
    results = compare_with_rest(per_sample, levels, eligible.tested)
    flags = flag(results, eligible.tested, rule)
    notes = {**eligible.notes, **flags.within_floor}
    categories = [
        _tested(described[name], results.get(name), name in flags.flagged, notes[name])
        for name in names
    ]
    verdict = judge(rule, levels, eligible.tested, flags)
    return Analysis(
        comparison=comparison,
        statistic=STATISTIC[comparison],
        categories=categories,
        flagged=flags.flagged,
        verdict=verdict.verdict,
        baseline_level=verdict.baseline_level,
        noise_floor=rule.noise_floor,
        different_model_threshold=rule.different_model_threshold,
        alpha=config.alpha,
        warnings=eligible.warnings + verdict.warnings,
        totals=totals(groups, comparison),
        message=verdict.message,
        unit=rule.unit,
    )


def _tested(
    described: CategoryStats, result: CategoryTest | None, flagged: bool, note: str | None
) -> CategoryStats:
    """A category's figures with the outcome of its test (none when it was not tested)."""
    if result is None:
        return replace(described, note=note)
    return replace(
        described,
        p_value=result.p_value,
        q_value=result.q_value,
        effect=result.effect,
        auc=result.auc,
        tested=True,
        flagged=flagged,
        note=note,
    )
