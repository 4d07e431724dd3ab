"""Instruction pairs as training examples: rendered, tokenised, masked, batched, scored.

Rendering (one pair, ``P`` its prompt — the instruction, plus a blank line and the input when
there is one — and ``R`` its response):

* ``chat`` (the tokenizer has a chat template): the context ``C`` is
  ``apply_chat_template([user P], add_generation_prompt=True)`` and the target ``T`` is what
  ``apply_chat_template([user P, assistant R])`` adds after ``C``: the response and the template's
  end of turn, so the tuned model learns to close its turn. A template whose full conversation
  does not start with ``C`` is refused.
* ``plain`` (raw LMs): the context is :data:`PLAIN_INSTRUCTION` followed by a blank line, i.e.
  ``"### Instruction:\\n" + P + "\\n\\n### Response:\\n\\n"``, and the target is ``R`` followed by
  the EOS token.

Tokenisation is attest's for conversation probes (:func:`lmassay.attest.conditioned.tokenize_samples`):
``C + T`` and ``C`` are tokenised without added special tokens, the target tokens are those of
``C + T`` after their longest common prefix, and the model sees the prefix token (BOS, else EOS)
first unless the template wrote it. So a tuned model is trained on exactly the tokens that
``lmassay attest`` scores a conversation probe on (``--chat-template`` for the chat rendering).

The loss (:func:`response_loss`) is the mean next-token cross-entropy over the target tokens of a
batch: every other position (the prefix token, the context, the padding) has the label -100 and
is ignored. Pairs longer than ``max_length`` tokens lose the end of their target; a pair whose
context alone fills ``max_length`` is left out (both are counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmassay.attest.conditioned import tokenize_samples
from lmassay.attest.probes import ProbeSample
from lmassay.errors import InputError
from lmassay.instruction_data import InstructionPair
from lmassay.progress import ProgressFn

__all__ = [
    "IGNORE",
    "PLAIN_INSTRUCTION",
    "Batch",
    "Encoded",
    "Example",
    "collate",
    "encode_pairs",
    "response_loss",
]

IGNORE = -100
"""The label of a position that is not in the loss (PyTorch's cross-entropy ``ignore_index``)."""
PLAIN_INSTRUCTION = "### Instruction:\n{prompt}\n\n### Response:"
"""The plain format's user turn; attest's plain rendering adds a blank line before the response."""


@dataclass(frozen=True)
class Example:
    """One pair as the model sees it: ``ids`` (prefix token, context, target) of which the last
    ``n_scored`` are the target, the only tokens in the loss."""

    ids: tuple[int, ...]
    n_scored: int


@dataclass(frozen=True)
class Encoded:
    """The training examples of a dataset and what happened to its pairs on the way."""

    examples: list[Example]
    template: str  # "chat" or "plain"
    n_pairs: int
    n_truncated: int  # pairs whose target was cut at max_length
    n_dropped: int  # pairs whose context alone filled max_length

    @property
    def n_target_tokens(self) -> int:
        return sum(e.n_scored for e in self.examples)

    def to_json(self) -> dict[str, Any]:
        lengths = [len(e.ids) for e in self.examples]
        return {
            "template": self.template,
            "n_pairs": self.n_pairs,
            "n_examples": len(self.examples),
            "n_truncated": self.n_truncated,
            "n_dropped": self.n_dropped,
            "n_target_tokens": self.n_target_tokens,
            "n_tokens": sum(lengths),
            "max_example_tokens": max(lengths, default=0),
        }


def _chat_target(tokenizer: Any, prompt: str, response: str, where: str) -> str:
    """What the chat template adds after the generation prompt for the assistant's ``response``."""
    from jinja2 import TemplateError

    user = {"role": "user", "content": prompt}
    try:
        context = str(
            tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
        )
        whole = str(
            tokenizer.apply_chat_template(
                [user, {"role": "assistant", "content": response}], tokenize=False
            )
        )
    except (TemplateError, ValueError, TypeError, KeyError) as exc:  # the template's own errors
        raise InputError(
            f"the chat template cannot render {where}: {' '.join(str(exc).split())[:200]}",
            "pass --template plain to use the plain instruction format",
        ) from None
    if not whole.startswith(context):
        raise InputError(
            f"the chat template renders the conversation of {where} without its generation "
            "prompt as a prefix, so the response tokens cannot be told apart",
            "pass --template plain, or use a template whose generation prompt opens the reply",
        )
    return whole[len(context) :]


def encode_pairs(
    tokenizer: Any,
    pairs: Sequence[tuple[str, InstructionPair]],
    *,
    template: str,
    prefix_token_id: int,
    max_length: int,
    progress: ProgressFn | None = None,
) -> Encoded:
    """The examples of ``pairs`` (``(where, pair)``: ``where`` names the row in messages),
    rendered with ``template`` (``chat`` or ``plain``) as the module docstring says."""
    eos = tokenizer.eos_token_id
    if template == "plain" and not isinstance(eos, int):
        raise InputError(
            "the model's tokenizer has no EOS token to end a response with",
            "give a tokenizer with an EOS token",
        )
    samples = []
    for where, pair in pairs:
        prompt = pair.prompt()
        if template == "chat":
            turn, target = prompt, _chat_target(tokenizer, prompt, pair.response, where)
        else:
            turn, target = PLAIN_INSTRUCTION.format(prompt=prompt), pair.response
        samples.append(
            ProbeSample(id=where, category="tune", text=target, messages=(("user", turn),))
        )
    tokens = tokenize_samples(
        tokenizer,
        samples,
        prefix_token_id=prefix_token_id,
        chat_template=template == "chat",
        progress=progress,
    )
    examples, truncated, dropped = [], 0, 0
    end = [eos] if template == "plain" else []
    for ids, n_scored in zip(tokens.token_lists, tokens.n_scored, strict=True):
        full = [prefix_token_id, *ids, *end]
        scored = n_scored + len(end)
        context = len(full) - scored
        if context >= max_length:
            dropped += 1
            continue
        if len(full) > max_length:
            truncated += 1
            full, scored = full[:max_length], max_length - context
        examples.append(Example(tuple(full), scored))
    if not examples:
        raise InputError(
            f"every one of the {len(pairs)} pairs has a prompt of {max_length} tokens or more",
            "pass a larger --max-length",
        )
    return Encoded(examples, template, len(pairs), truncated, dropped)


@dataclass(frozen=True)
class Batch:
    """Examples padded on the right to one length ``T``."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T): 1 on tokens, 0 on padding
    labels: torch.Tensor  # (B, T): the token on target positions, IGNORE elsewhere

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids.to(device), self.mask.to(device), self.labels.to(device))


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """One batch of ``examples``: right-padded with ``pad_id``, labels masked as the module
    docstring says."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(examples), width, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)  # (B, T)
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        mask[row, :n] = 1
        labels[row, n - example.n_scored : n] = ids[row, n - example.n_scored : n]
    return Batch(ids, mask, labels)


def response_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per target token) of ``labels[:, 1:]`` under ``logits[:, :-1]``
    over the positions whose label is not :data:`IGNORE`."""
    scores = logits[:, :-1].float()  # (B, T-1, V)
    targets = labels[:, 1:]  # (B, T-1)
    return torch.nn.functional.cross_entropy(
        scores.reshape(-1, scores.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )
