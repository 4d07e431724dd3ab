"""The ``self_probe`` record of an attestation from scored self-probes (see :mod:`.self_probe`).

Per category the estimate of KL(model ‖ reference) per token is the ratio
``Σ_i s_i / Σ_i n_i`` over its continuations ``i`` (``s_i`` the summed log-ratio, ``n_i`` its
tokens): token-weighted, like every aggregate of lmassay.  Its standard error is the delta-method
one of a ratio estimator, ``sqrt(m/(m−1) Σ_i (s_i − r n_i)²) / Σ_i n_i`` over ``m`` continuations.
"What the model now says" is the continuations of largest log-ratio per token, overall and per
category, with the end of their prompt and the start of their text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lmassay.attest.document import (
    SELF_PROBE_DIRECTION,
    SelfProbe,
    SelfProbeCategory,
    SelfProbeExcerpt,
)
from lmassay.attest.self_probe import Draw, DrawScore, SampleSettings

__all__ = ["EXCERPT_CHARS", "PROMPT_CHARS", "TOP", "TOP_PER_CATEGORY", "summarise"]

TOP = 5
"""Excerpts overall."""
TOP_PER_CATEGORY = 3
"""Excerpts per category."""
EXCERPT_CHARS = 240
"""Most characters of a continuation kept in an excerpt."""
PROMPT_CHARS = 80
"""Most characters of a prompt kept in an excerpt (its end)."""


def summarise(
    draws: Sequence[Draw],
    scores: Sequence[DrawScore | None],
    settings: SampleSettings,
    *,
    duration_s: float | None = None,
    top: int = TOP,
    top_per_category: int = TOP_PER_CATEGORY,
) -> SelfProbe:
    """The ``self_probe`` record: settings, per-category estimates and the top excerpts."""
    scored = [(d, s) for d, s in zip(draws, scores, strict=True) if s is not None]
    categories = sorted({d.category for d in draws})
    rows = []
    for name in categories:
        members = [(d, s) for d, s in scored if d.category == name]
        ratio, se = _ratio(members)
        rows.append(
            SelfProbeCategory(
                name=name,
                n_samples=len(members),
                n_tokens=sum(s.n_tokens for _, s in members),
                logratio=ratio,
                logratio_se=se,
                top=tuple(_excerpt(d, s) for d, s in _largest(members, top_per_category)),
            )
        )
    overall, _ = _ratio(scored)
    return SelfProbe(
        direction=SELF_PROBE_DIRECTION,
        sampled_from=draws[0].sampled_from if draws else "model",
        n_per_category=settings.n_per_category,
        prompt_tokens=settings.prompt_tokens,
        new_tokens=settings.new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        n_samples=len(scored),
        n_empty=len(draws) - len(scored),
        n_tokens=sum(s.n_tokens for _, s in scored),
        logratio=overall,
        categories=tuple(rows),
        top=tuple(_excerpt(d, s) for d, s in _largest(scored, top)),
        duration_s=round(duration_s, 3) if duration_s is not None else None,
    )


def _ratio(members: Sequence[tuple[Draw, DrawScore]]) -> tuple[float | None, float | None]:
    """The token-weighted log-ratio and its delta-method standard error (None when undefined)."""
    tokens = sum(s.n_tokens for _, s in members)
    if tokens == 0:
        return None, None
    ratio = sum(s.logratio_sum for _, s in members) / tokens
    m = len(members)
    if m < 2:
        return ratio, None
    spread = sum((s.logratio_sum - ratio * s.n_tokens) ** 2 for _, s in members)
    return ratio, math.sqrt(spread * m / (m - 1)) / tokens


def _largest(members: Sequence[tuple[Draw, DrawScore]], limit: int) -> list[tuple[Draw, DrawScore]]:
    """The ``limit`` continuations of largest log-ratio per token, largest first (ties by id)."""
    return sorted(members, key=lambda pair: (-pair[1].logratio, pair[0].id))[:limit]


def _excerpt(draw: Draw, score: DrawScore) -> SelfProbeExcerpt:
    prompt, text = draw.prompt, draw.continuation
    return SelfProbeExcerpt(
        id=draw.id,
        category=draw.category,
        prompt_id=draw.prompt_id,
        logratio=score.logratio,
        logratio_sum=score.logratio_sum,
        n_tokens=score.n_tokens,
        prompt=prompt if len(prompt) <= PROMPT_CHARS else "…" + prompt[-PROMPT_CHARS:],
        continuation=text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…",
    )
