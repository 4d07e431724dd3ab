"""Token lists for scoring, conversation samples included: which tokens are context, which scored.

A plain probe sample is scored whole (every text token; see :mod:`lmassay.attest.scoring`). A
conversation sample (:attr:`lmassay.attest.probes.ProbeSample.messages` set: a prompt and its
response, or a list of messages ending with the assistant's) is scored on its response only,
given the conversation before it:

* the *context* string ``C`` is, with ``chat_template=True`` (``--chat-template``),
  ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``: the
  turns before the response as the model's chat template renders them, ending with the opening of
  the assistant's turn; without it, the turns' contents joined by ``"\\n\\n"`` and followed by
  ``"\\n\\n"`` (a plain rendering for base models);
* the scored string is the response ``R`` exactly; the template's end-of-turn tokens after it are
  not scored (as lm-evaluation-harness scores a target with ``--apply_chat_template``);
* ``C + R`` and ``C`` are tokenised without special tokens added (a template that writes BOS or
  other special tokens as text keeps them: they are parsed as the special tokens they name);
  the scored tokens are those of ``C + R`` after the longest common prefix of the two token lists,
  so a token that merges across the boundary of ``C`` and ``R`` is scored, never dropped;
* the model sees ``[p] + tokens(C + R)`` with ``p`` the scorer's prefix token, except that when
  ``tokens(C + R)`` already starts with ``p`` (a template that writes BOS) it is not doubled.

Every token of ``C + R`` is fed to the scorer, which scores each given all tokens before it (in
rolling windows when the whole is longer than the context); only the response tokens are kept, so a
conversation sample's ``n_tokens``, log-likelihood and KL are over its response tokens alone, and
its ``n_bytes`` are the response's UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from lmassay.attest.probes import ProbeSample
from lmassay.attest.scoring import TokenScores, tokenize_texts
from lmassay.errors import InputError
from lmassay.progress import ProgressFn

__all__ = ["ScoringTokens", "keep_scored", "plain_context", "tokenize_samples"]

PLAIN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ScoringTokens:
    """What the scorer is given: per sample its token list (without the prefix token) and how
    many of its last tokens are scored (all of them for a plain sample)."""

    token_lists: list[list[int]]
    n_scored: list[int]

    @property
    def conditioned(self) -> bool:
        """Whether some sample has context tokens that are not scored."""
        return any(n != len(t) for n, t in zip(self.n_scored, self.token_lists, strict=True))

    def subset(self, indices: Sequence[int]) -> ScoringTokens:
        return ScoringTokens(
            [self.token_lists[i] for i in indices], [self.n_scored[i] for i in indices]
        )


def plain_context(messages: Sequence[tuple[str, str]]) -> str:
    """The context of a conversation sample without a chat template: the turns' contents, each
    followed by a blank line."""
    return "".join(content + PLAIN_SEPARATOR for _, content in messages)


def tokenize_samples(
    tokenizer: Any,
    samples: Sequence[ProbeSample],
    *,
    prefix_token_id: int,
    chat_template: bool = False,
    name: str = "the model",
    progress: ProgressFn | None = None,
) -> ScoringTokens:
    """Token lists of ``samples`` as the module docstring says (plain samples: their text)."""
    if chat_template and not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"--chat-template: the tokenizer of {name} has no chat template",
            "drop --chat-template (conversations are then scored after a plain rendering), or "
            "use the instruct model's folder, whose tokenizer_config.json has one",
        )
    plain = [i for i, s in enumerate(samples) if s.messages is None]
    token_lists: list[list[int]] = [[] for _ in samples]
    n_scored = [0 for _ in samples]
    for i, ids in zip(
        plain, tokenize_texts(tokenizer, [samples[i].text for i in plain]), strict=True
    ):
        token_lists[i], n_scored[i] = ids, len(ids)
    for i, sample in enumerate(samples):
        if sample.messages is not None:
            context = _context(tokenizer, sample, chat_template)
            token_lists[i], n_scored[i] = _split(tokenizer, context, sample, prefix_token_id)
        if progress is not None and (i + 1) % 256 == 0:
            progress(i + 1, len(samples))
    if progress is not None:
        progress(len(samples), len(samples))
    return ScoringTokens(token_lists, n_scored)


def _context(tokenizer: Any, sample: ProbeSample, chat_template: bool) -> str:
    messages = sample.messages or ()
    if not chat_template:
        return plain_context(messages)
    from jinja2 import TemplateError

    turns = [{"role": role, "content": content} for role, content in messages]
    try:
        rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except (TemplateError, ValueError, TypeError, KeyError) as exc:  # the template's own errors
        raise InputError(
            f"the chat template cannot render sample {sample.id!r}: {' '.join(str(exc).split())[:200]}",
            "check the sample's roles and order (many templates need user/assistant turns "
            "alternating, a system turn first)",
        ) from None
    return str(rendered)


def _split(
    tokenizer: Any, context: str, sample: ProbeSample, prefix_token_id: int
) -> tuple[list[int], int]:
    whole = list(tokenizer(context + sample.text, add_special_tokens=False)["input_ids"])
    head = list(tokenizer(context, add_special_tokens=False)["input_ids"]) if context else []
    common = 0
    for a, b in zip(whole, head, strict=False):
        if a != b:
            break
        common += 1
    n_scored = len(whole) - common
    if n_scored == 0:
        raise InputError(
            f"the response of sample {sample.id!r} has no tokens", "give it a non-empty response"
        )
    if whole and whole[0] == prefix_token_id and common > 0:
        whole = whole[1:]  # the template wrote the prefix token itself: not doubled
    return whole, n_scored


def keep_scored(scores: Sequence[TokenScores], tokens: ScoringTokens) -> list[TokenScores]:
    """Each sample's scores cut to its last ``n_scored`` tokens (its response)."""
    return [_tail(s, n) for s, n in zip(scores, tokens.n_scored, strict=True)]


def _tail(scores: TokenScores, n: int) -> TokenScores:
    if n == scores.n_tokens:
        return scores
    cut = slice(scores.n_tokens - n, None)

    def pair(value: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
        return None if value is None else (value[0][cut], value[1][cut])

    return replace(
        scores,
        token_ids=scores.token_ids[cut],
        logprob_model=scores.logprob_model[cut],
        top1_model=scores.top1_model[cut],
        logprob_reference=None
        if scores.logprob_reference is None
        else scores.logprob_reference[cut],
        top1_reference=None if scores.top1_reference is None else scores.top1_reference[cut],
        kl=None if scores.kl is None else scores.kl[cut],
        topk_model=pair(scores.topk_model),
        topk_reference=pair(scores.topk_reference),
    )
