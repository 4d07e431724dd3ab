"""The flagging rule, the verdict and its one-sentence message.

A category is *flagged* for a reason when one of its tests passes with its own floor:

* ``"mean"``: the mean test's ``q ≤ alpha`` and ``effect > max(noise_floor, spread_multiple ×
  spread)``, ``spread`` being what the other tested categories' levels vary by
  (:mod:`significance`): an absolute floor for near-identical models, and a relative one where
  every category drifts;
* ``"sparse"``: the sparse test's ``q ≤ alpha``, ``sparse effect > sparse_floor`` and at least
  :data:`MIN_OUTLIERS` outlier samples;
* ``"answer"``: the answer test's ``q ≤ alpha``, ``answer effect > max(answer_floor,
  ANSWER_SPREAD_MULTIPLE × answer spread)`` and at least :data:`MIN_OUTLIERS` outlier answers.

Significance alone is not enough, since with many tokens a harmless difference (a re-save, a dtype
cast) is significant too.

``baseline_level`` is the median level over the tested categories (when none can be tested, over
all categories, with a warning). The verdict is ``"different-model"`` (flags are still reported)
when the weights say so — given ``independent_weights`` (both checkpoints comparable, see
:mod:`lmassay.attest.weight_relation`), it alone decides — or, without it, when ``baseline_level >
different_model_threshold``; else ``"tampered"`` if any category is flagged, else
``"consistent"``; ``"scored-only"`` for comparison ``"none"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lmassay.attest.statistics.records import MIN_OUTLIERS, FlagRule
from lmassay.attest.statistics.significance import CategoryTest, count


@dataclass(frozen=True)
class Flags:
    """The flagged categories (in test order) with their reasons, and a note for each significant
    one not flagged."""

    flagged: list[str]
    within_floor: dict[str, str]
    reasons: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Verdict:
    """The verdict, the baseline level it rests on, its message and any warning it adds."""

    verdict: str
    baseline_level: float | None
    message: str
    warnings: list[str]


def flag(results: Mapping[str, CategoryTest], tested: Sequence[str], rule: FlagRule) -> Flags:
    """Apply the flagging rule to the tested categories (see the module docstring)."""
    flagged: list[str] = []
    within_floor: dict[str, str] = {}
    reasons: dict[str, tuple[str, ...]] = {}
    for name in tested:
        result, why, small = results[name], [], []
        if result.q_value <= rule.alpha:
            floor = rule.mean_floor(result.spread)
            if floor is not None and result.effect > floor:
                why.append("mean")
            elif floor is not None and rule.noise_floor is not None and floor > rule.noise_floor:
                small.append(
                    f"the mean test is significant (q = {result.q_value:.3g}) but its effect, "
                    f"{result.effect:.3g} {rule.unit}, is not above {rule.spread_multiple:g} × "
                    f"the spread of the other categories ({result.spread:.3g})"
                )
            else:
                small.append(
                    f"the mean test is significant (q = {result.q_value:.3g}) but its effect, "
                    f"{result.effect:.3g} {rule.unit}, is not above the noise floor of "
                    f"{rule.noise_floor:g}"
                )
        sparse, q_sparse = result.sparse, result.sparse_q_value
        if sparse is not None and q_sparse is not None and q_sparse <= rule.alpha:
            floor = rule.sparse_floor
            if floor is not None and sparse.effect > floor and len(sparse.outliers) >= MIN_OUTLIERS:
                why.append("sparse")
            elif len(sparse.outliers) < MIN_OUTLIERS:
                small.append(
                    f"the sparse test is significant (q = {q_sparse:.3g}) but only "
                    f"{count(len(sparse.outliers), 'sample')} stand out (fewer than {MIN_OUTLIERS})"
                )
            else:
                small.append(
                    f"the sparse test is significant (q = {q_sparse:.3g}) but its effect, "
                    f"{sparse.effect:.3g}, is not above the sparse floor of {floor:g}"
                )
        _answer_reason(result, rule, why, small)
        if why:
            flagged.append(name)
            reasons[name] = tuple(why)
        elif small:
            within_floor[name] = "; ".join(small) + ": not flagged"
    return Flags(flagged, within_floor, reasons)


def _answer_reason(result: CategoryTest, rule: FlagRule, why: list[str], small: list[str]) -> None:
    """Append ``"answer"`` to ``why`` when the answer test flags, or to ``small`` why it does not
    although it is significant."""
    answer, q_answer = result.answer, result.answer_q_value
    if answer is None or q_answer is None or q_answer > rule.alpha:
        return
    floor = rule.answer_floor_for(result.answer_spread or 0.0)
    if floor is None:
        return
    if len(answer.outliers) < MIN_OUTLIERS:
        small.append(
            f"the answer test is significant (q = {q_answer:.3g}) but only "
            f"{count(len(answer.outliers), 'answer')} stand out (fewer than {MIN_OUTLIERS})"
        )
    elif answer.effect > floor:
        why.append("answer")
    else:
        small.append(
            f"the answer test is significant (q = {q_answer:.3g}) but its effect, "
            f"{answer.effect:.3g} nats, is not above its floor of {floor:.3g}"
        )


_REASON = {"mean": "its level", "sparse": "a few of its samples", "answer": "the answers it states"}


def judge(
    rule: FlagRule,
    levels: Mapping[str, float],
    tested: Sequence[str],
    flags: Flags,
    independent_weights: bool | None = None,
) -> Verdict:
    """The verdict from the category levels and the flags (see the module docstring)."""
    if rule.comparison == "none":
        return Verdict("scored-only", None, _message(rule, "scored-only", flags, 0, None), [])
    warnings: list[str] = []
    if tested:
        baseline = float(np.median([levels[name] for name in tested]))
    else:
        baseline = float(np.median(list(levels.values())))
        only = "the only category" if len(levels) == 1 else f"all {len(levels)} categories"
        warnings.append(
            f"no category could be tested: baseline_level is the median level over {only}"
        )
    threshold = rule.different_model_threshold
    if independent_weights is not None:
        different = independent_weights
    else:
        different = threshold is not None and baseline > threshold
    if different:
        verdict = "different-model"
    elif flags.flagged:
        verdict = "tampered"
    else:
        verdict = "consistent"
    message = _message(rule, verdict, flags, len(tested), baseline, independent_weights)
    return Verdict(verdict, baseline, message, warnings)


def _message(
    rule: FlagRule,
    verdict: str,
    flags: Flags,
    n_tested: int,
    baseline: float | None,
    independent_weights: bool | None = None,
) -> str:
    unit, flagged = rule.unit, flags.flagged
    what = "KL(reference ‖ model)" if rule.comparison == "kl" else "the difference in bits per byte"
    if verdict == "scored-only":
        return (
            "Only the model was scored, without a reference or baseline: perplexity alone cannot "
            "show tampering, so nothing was tested."
        )
    floor = f"the noise floor of {rule.noise_floor:g} {unit}"
    if rule.spread_multiple > 0:
        floor = (
            f"its floor (the larger of {rule.noise_floor:g} {unit} and "
            f"{rule.spread_multiple:g} × the spread between the other categories)"
        )
    if verdict == "different-model":
        stand = "stands" if len(flagged) == 1 else "stand"
        also = f"; {count(len(flagged), 'category')} also {stand} out: " if flagged else ""
        also += ", ".join(flagged)
        if independent_weights:
            return (
                "The weights are independent of the reference's (the median tensor differs by "
                "more than half its norm): this is a different model, not a modified copy of the "
                f"reference{also}."
            )
        return (
            f"The median category level of {what} is {baseline:.3g} {unit}, above the "
            f"different-model threshold of {rule.different_model_threshold:.3g}: this is a "
            f"different model, not a modified copy of the reference{also}."
        )
    if verdict == "tampered":
        named = ", ".join(
            f"{name} ({' and '.join(_REASON[r] for r in flags.reasons[name])})" for name in flagged
        )
        return (
            f"{len(flagged)} of {n_tested} tested categories "
            f"{'stands' if len(flagged) == 1 else 'stand'} out from the rest beyond the noise "
            f"floors at a false-discovery rate of {rule.alpha:g}: {named}."
        )
    if n_tested == 0:
        return (
            "No category could be tested (too few categories or samples), and the median level "
            f"of {what}, {baseline:.3g} {unit}, is below the different-model threshold of "
            f"{rule.different_model_threshold:g}."
        )
    below = len(flags.within_floor)
    small = f" ({count(below, 'category')} significant but within the noise floor)" if below else ""
    return (
        f"None of the {n_tested} tested categories differs from the rest by more than {floor} "
        f"at a false-discovery rate of {rule.alpha:g}{small}: the model is consistent with the "
        "reference."
    )
