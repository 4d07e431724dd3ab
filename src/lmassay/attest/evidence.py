"""Evidence for a flagged category: the samples and tokens where the two models diverge most.

For a KL comparison each evidence sample lists its largest-KL tokens with a window of decoded
context on both sides and both models' top predictions (re-scored with top-k capture, which is
cheap because only a handful of samples are re-scored).  For a bits-per-byte comparison the samples
with the largest Δ bits/byte are listed with an excerpt of their text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmassay.attest.scoring import TokenScores

TOP_PREDICTIONS = 5


def rank_samples(indices: Sequence[int], values: Sequence[float], limit: int) -> list[int]:
    """The ``limit`` indices with the largest value, largest first (ties by index)."""
    order = sorted(indices, key=lambda i: (-values[i], i))
    return order[:limit]


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), clean_up_tokenization_spaces=False))


def _top(
    tokenizer: Any, pair: tuple[np.ndarray, np.ndarray] | None, position: int
) -> list[list[Any]]:
    if pair is None:
        return []
    ids, logprobs = pair
    return [
        [_decode(tokenizer, [int(i)]), round(math.exp(float(lp)), 6)]
        for i, lp in zip(ids[position], logprobs[position], strict=True)
    ]


def token_evidence(
    scores: TokenScores, tokenizer: Any, n_tokens: int, context_tokens: int
) -> list[dict[str, Any]]:
    """The ``n_tokens`` largest-KL tokens of one sample (scored with top-k capture), largest first."""
    kl, logprob_reference = scores.kl, scores.logprob_reference
    if kl is None or logprob_reference is None:
        return []
    ids = scores.token_ids
    order = sorted(range(scores.n_tokens), key=lambda p: (-float(kl[p]), p))
    tokens = []
    for position in order[:n_tokens]:
        tokens.append(
            {
                "position": position,
                "token": _decode(tokenizer, [int(ids[position])]),
                "kl": float(kl[position]),
                "logprob_model": float(scores.logprob_model[position]),
                "logprob_reference": float(logprob_reference[position]),
                "context_before": _decode(
                    tokenizer, ids[max(0, position - context_tokens) : position].tolist()
                ),
                "context_after": _decode(
                    tokenizer, ids[position + 1 : position + 1 + context_tokens].tolist()
                ),
                "top_model": _top(tokenizer, scores.topk_model, position),
                "top_reference": _top(tokenizer, scores.topk_reference, position),
            }
        )
    return tokens


def excerpt(text: str, limit: int = 240) -> str:
    """The start of a text, cut at ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
