"""Before and after: per category, what the repair changed, and whether it succeeded.

A repair succeeds when every repaired category is back under the noise floor (its effect — level
minus the median level of the other categories — is at most the floor, and it is not flagged), no
other category became flagged, and the verdict is not "different-model".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number, else None."""
    return float(value) if isinstance(value, int | float) else None


def _change(after: Any, before: Any) -> float | None:
    a, b = number(after), number(before)
    return None if a is None or b is None else a - b


def compare_attestations(
    before: Mapping[str, Any], after: Mapping[str, Any], repaired: Sequence[str]
) -> dict[str, Any]:
    """The before/after table and the success rule (see the module docstring) as JSON."""
    statistic = str(after["summary"].get("statistic") or "mean_kl")
    floor = number(after["summary"].get("noise_floor"))
    old = {c["name"]: c for c in before["categories"]}
    rows = []
    for new in after["categories"]:
        name = new["name"]
        prior = old.get(name, {})
        rows.append(
            {
                "name": name,
                "role": "repaired" if name in repaired else "collateral",
                "flagged_before": bool(prior.get("flagged", False)),
                "flagged_after": bool(new.get("flagged", False)),
                "level_before": number(prior.get("level")),
                "level_after": number(new.get("level")),
                "level_change": _change(new.get("level"), prior.get("level")),
                "effect_before": number(prior.get("effect")),
                "effect_after": number(new.get("effect")),
                "mean_kl_before": number(prior.get("mean_kl")),
                "mean_kl_after": number(new.get("mean_kl")),
                "mean_kl_change": _change(new.get("mean_kl"), prior.get("mean_kl")),
                "ppl_model_before": number(prior.get("ppl_model")),
                "ppl_model_after": number(new.get("ppl_model")),
                "ppl_model_change": _change(new.get("ppl_model"), prior.get("ppl_model")),
                "ppl_reference": number(new.get("ppl_reference")),
                "q_before": number(prior.get("q_value")),
                "q_after": number(new.get("q_value")),
            }
        )
    still = [
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
    newly = [r["name"] for r in rows if r["role"] == "collateral" and r["flagged_after"]]
    collateral = [
        r["level_change"]
        for r in rows
        if r["role"] == "collateral" and r["level_change"] is not None
    ]
    different = after["verdict"] == "different-model"
    success = not still and not newly and not different
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
    return {
        "statistic": statistic,
        "noise_floor": floor,
        "categories": rows,
        "repaired": list(repaired),
        "still_above_floor": still,
        "newly_flagged": newly,
        "collateral_max_level_change": max(collateral, key=abs) if collateral else None,
        "verdict_before": before["verdict"],
        "verdict_after": after["verdict"],
        "flagged_before": list(before["flagged"]),
        "flagged_after": list(after["flagged"]),
        "success": success,
        "message": (
            f"repaired: {', '.join(repaired)} back under the noise floor and no other category flagged"
            if success
            else "not repaired: " + "; ".join(reasons)
        ),
    }
