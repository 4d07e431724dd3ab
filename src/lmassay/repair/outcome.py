"""Before and after: per category, what the repair changed, and whether it succeeded.

A repair succeeds when every repaired category is back under the noise floor (its effect — level
minus the median level of the other categories — is at most the floor, and it is not flagged), no
other category became flagged, and the verdict is not "different-model".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmassay.attest.document import Attestation, CategoryRow, Verdict, as_attestation


def number(value: float | None) -> float | None:
    """``value`` as a float (a JSON integer too), or None."""
    return None if value is None else float(value)


def _change(after: float | None, before: float | None) -> float | None:
    a, b = number(after), number(before)
    return None if a is None or b is None else a - b


def _row(new: CategoryRow, prior: CategoryRow | None, role: str) -> dict[str, Any]:
    """One category before (``prior``; None when it was not in the first attestation) and after."""
    old = prior or CategoryRow(name=new.name)
    return {
        "name": new.name,
        "role": role,
        "flagged_before": bool(old.flagged),
        "flagged_after": bool(new.flagged),
        "level_before": number(old.level),
        "level_after": number(new.level),
        "level_change": _change(new.level, old.level),
        "effect_before": number(old.effect),
        "effect_after": number(new.effect),
        "mean_kl_before": number(old.mean_kl),
        "mean_kl_after": number(new.mean_kl),
        "mean_kl_change": _change(new.mean_kl, old.mean_kl),
        "ppl_model_before": number(old.ppl_model),
        "ppl_model_after": number(new.ppl_model),
        "ppl_model_change": _change(new.ppl_model, old.ppl_model),
        "ppl_reference": number(new.ppl_reference),
        "q_before": number(old.q_value),
        "q_after": number(new.q_value),
    }


def _still_above(rows: Sequence[Mapping[str, Any]], floor: float | None) -> list[str]:
    """The repaired categories that are flagged, or not shown to be under the floor."""
    return [
        r["name"]
        for r in rows
        if r["role"] == "repaired"
        and (
            r["flagged_after"]
            or floor is None
            or r["effect_after"] is None
            or r["effect_after"] > floor
        )
    ]


def _message(
    repaired: Sequence[str],
    still: list[str],
    newly: list[str],
    different: bool,
    floor: float | None,
) -> str:
    if not still and not newly and not different:
        return f"repaired: {', '.join(repaired)} back under the noise floor and no other category flagged"
    reasons = []
    if still:
        reasons.append(
            f"{', '.join(still)} not back under the noise floor of {floor:g}"
            if floor is not None
            else f"{', '.join(still)} not repaired"
        )
    if newly:
        reasons.append(f"{', '.join(newly)} became flagged")
    if different:
        reasons.append("the repaired model differs from the reference everywhere (different-model)")
    return "not repaired: " + "; ".join(reasons)


def compare_attestations(
    before: Attestation | Mapping[str, Any],
    after: Attestation | Mapping[str, Any],
    repaired: Sequence[str],
) -> dict[str, Any]:
    """The before/after table and the success rule (see the module docstring) as JSON.

    Either attestation may be given as the document or as its parsed JSON object.
    """
    before, after = as_attestation(before), as_attestation(after)
    floor = number(after.summary.noise_floor)
    old = {c.name: c for c in before.categories}
    rows = [
        _row(new, old.get(new.name), "repaired" if new.name in repaired else "collateral")
        for new in after.categories
    ]
    still = _still_above(rows, floor)
    newly = [r["name"] for r in rows if r["role"] == "collateral" and r["flagged_after"]]
    collateral = [
        r["level_change"]
        for r in rows
        if r["role"] == "collateral" and r["level_change"] is not None
    ]
    different = after.verdict == Verdict.DIFFERENT_MODEL
    return {
        "statistic": after.summary.statistic or "mean_kl",
        "noise_floor": floor,
        "categories": rows,
        "repaired": list(repaired),
        "still_above_floor": still,
        "newly_flagged": newly,
        "collateral_max_level_change": max(collateral, key=abs) if collateral else None,
        "verdict_before": before.verdict.value,
        "verdict_after": after.verdict.value,
        "flagged_before": list(before.flagged),
        "flagged_after": list(after.flagged),
        "success": not still and not newly and not different,
        "message": _message(repaired, still, newly, different, floor),
    }
