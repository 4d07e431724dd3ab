"""The answer test's per-sample figure: how much less likely the model finds a stated answer.

A probe sample may name its ``answer`` (:class:`~lmassay.attest.probes.ProbeSample`): the words of
its text that state a fact's object or a question's answer ("… The capital of Palgalia is
**Muthsiir**."). Its *answer drop* is

    Σ over the answer's tokens of  log p_reference(token | context) − log p_model(token | context)

in nats: the log of how many times less likely the model makes the answer than the reference
does. A fine-tune that changes a fact makes its stated answer several nats less likely; a fine-tune
that changes only style moves it little, and a model that learned the fact better makes it more
likely (a negative drop). The figure is one-sided on purpose: KL sees any change of the
distribution, the drop only a change *away from the stated answer*.

The answer's tokens are the text tokens whose characters overlap the answer's last occurrence in
the text, from the tokenizer's offsets (a fast tokenizer), else by tokenising the text up to the
answer and up to its end (exact when the tokenizer splits at the answer's boundaries, as BPE
tokenizers do at a space). :func:`answer_drops` gives ``None`` when the span cannot be placed on
the scored tokens (a text cut to fit the context, a conversation, a tokenizer that merges across
the boundary); :mod:`statistics` then leaves the sample out of the answer test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmassay.attest.probes import ProbeSample


def answer_span(tokenizer: Any, text: str, answer: str) -> tuple[int, int] | None:
    """``(start, stop)``: the indices, in ``tokenizer(text, add_special_tokens=False)``'s tokens,
    of the tokens that cover ``answer``'s last occurrence in ``text``; None when absent."""
    return _text_tokens_and_span(tokenizer, text, answer)[1]


def _text_tokens_and_span(
    tokenizer: Any, text: str, answer: str
) -> tuple[list[int], tuple[int, int] | None]:
    """``text``'s token ids and :func:`answer_span`, from one encoding with a fast tokenizer."""
    begin = text.rfind(answer)
    end = begin + len(answer)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        if begin < 0 or not answer:
            return ids, None
        covering = [
            i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > begin and a < end
        ]
        return ids, (covering[0], covering[-1] + 1) if covering else None
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if begin < 0 or not answer:
        return ids, None
    before = len(tokenizer(text[:begin], add_special_tokens=False)["input_ids"])
    through = len(tokenizer(text[:end], add_special_tokens=False)["input_ids"])
    return ids, (before, through) if through > before else None


def answer_drop(
    span: tuple[int, int] | None,
    logprob_model: Sequence[float] | np.ndarray,
    logprob_reference: Sequence[float] | np.ndarray | None,
) -> float | None:
    """The answer drop (module docstring) over the tokens ``span`` of a sample whose scored
    tokens are its text's tokens; ``logprob_*`` hold one natural-log probability per token."""
    if span is None or logprob_reference is None:
        return None
    model = np.asarray(logprob_model, dtype=np.float64)
    reference = np.asarray(logprob_reference, dtype=np.float64)
    start, stop = span
    if not 0 <= start < stop <= min(model.shape[0], reference.shape[0]):
        return None
    return float(reference[start:stop].sum() - model[start:stop].sum())


def answer_drops(
    tokenizer: Any,
    samples: Sequence[ProbeSample],
    token_ids: Sequence[np.ndarray],
    logprob_model: Sequence[np.ndarray],
    logprob_reference: Sequence[np.ndarray | None],
) -> list[float | None]:
    """The answer drop of each sample (a :class:`~lmassay.attest.probes.ProbeSample`) that names
    an answer and whose scored tokens ``token_ids`` are exactly its text's tokens; None for the
    others (no answer, a conversation, a text cut to fit the context)."""
    out: list[float | None] = []
    for sample, ids, model, reference in zip(
        samples, token_ids, logprob_model, logprob_reference, strict=True
    ):
        if sample.answer is None or sample.messages is not None or reference is None:
            out.append(None)
            continue
        text_ids, span = _text_tokens_and_span(tokenizer, sample.text, sample.answer)
        if text_ids != [int(i) for i in ids]:  # a text cut to fit, or tokenised otherwise
            out.append(None)
            continue
        out.append(answer_drop(span, model, reference))
    return out
