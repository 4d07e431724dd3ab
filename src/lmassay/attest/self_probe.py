"""Self-probes: text the model writes itself, scored by the model and the reference.

The first pass of ``lmassay attest`` scores reference-style text and measures KL(reference ‖ model):
where the model has *lost* what the reference knows.  A tamper that *adds* something (a slant,
propaganda, a backdoor's payload) may leave reference-style text nearly untouched, because the
added text is rare there.  On text the model writes, the per-sample log-likelihood ratio

    log p_model(continuation | prompt) − log p_reference(continuation | prompt)

has expectation KL(model ‖ reference) over the continuations (summed over their tokens), so its
token-weighted mean per category estimates KL(model ‖ reference) per token on the model's own
text, and the continuations with the largest ratio per token are what the model now says that the
reference would not.

Sampling contract (:func:`draw_continuations`)
==============================================
* Prompts: per category, ``n_per_category`` probe samples chosen with
  ``numpy.random.default_rng([seed, crc32(category)])`` from the category's samples in their
  loaded order (sorted by id); when the category has fewer, the permutation is repeated (the same
  prompt then gets several continuations).  A prompt is the first ``prompt_tokens`` tokens of the
  sample's text (tokenised without special tokens).
* **Divergent prompts** (given the first pass's per-token KL, ``divergence``): the first
  ``ceil(n_per_category / 2)`` prompts of a category are instead its samples with the largest
  single-token KL(reference ‖ model), largest first, each cut to the ``prompt_tokens`` tokens that
  end just *before* that token (:class:`Prompt` ``end``): the model continues exactly where it
  parts from the reference, so what it now says there (a slanted description, an edited fact and
  what follows from it) is in its continuation.  The other prompts are drawn as above, from the
  samples not already chosen.  Conversation samples keep the start rule.
* The model sees ``[prefix, prompt tokens]`` (``prefix`` = the BOS token, else EOS, as the scorer
  uses), so the distribution sampled from is exactly the one the scorer evaluates.
* Continuations: ``model.generate(do_sample=True, temperature=T, top_k=0, top_p=1.0,
  max_new_tokens=new_tokens)`` (plain ancestral sampling from the tempered distribution; no
  repetition penalty or other processor), up to and excluding the first EOS token.
* Batches of :data:`BATCH_SIZE` prompts in (category, rank) order, left-padded.  ``generate``
  takes no ``torch.Generator``, so each batch runs under ``torch.manual_seed(s_b)`` with
  ``s_b = SeedSequence([seed, b, source]).generate_state(1)[0]`` (``b`` the batch index, ``source``
  0 for the model, 1 for the reference) inside :func:`torch.random.fork_rng`, which restores the
  caller's global RNG state afterwards.  The same seed, probes, model, batch size and device give
  the same continuations.

Scoring contract (:func:`score_draws`)
======================================
``prompt + continuation`` token ids are scored together by
:func:`lmassay.attest.streaming.score_models` (the one scorer; see :mod:`lmassay.attest.scoring`),
which scores every token once given ``[prefix, all preceding tokens]``; only the last
``len(continuation)`` entries are kept: ``log p(continuation | prefix, prompt)``, token by token,
under each model.  The whole sequence fits in one window (checked), so no rolling window cuts the
prompt off.  A continuation with no token (EOS first) is not scored.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lmassay.attest.probes import ProbeSample, ProbeSet
from lmassay.attest.scoring import tokenize_texts
from lmassay.attest.statistics.records import FloatArray
from lmassay.attest.streaming import score_models
from lmassay.errors import Check, InputError
from lmassay.progress import ProgressFn

if TYPE_CHECKING:
    from lmassay.attest.model_loading import LoadedModel

__all__ = [
    "BATCH_SIZE",
    "SAMPLE_FLAGS",
    "Draw",
    "DrawScore",
    "Prompt",
    "SampleSettings",
    "SampledFrom",
    "choose_prompts",
    "draw_continuations",
    "sample_probes",
    "score_draws",
]

BATCH_SIZE = 64
"""Prompts per ``generate`` call; part of what makes a draw reproducible. On CPU the per-step
overhead of ``generate`` dominates small models: 72 prompts take 3.6 s in batches of 64 and 10 s
in batches of 16 (test-size world)."""
SampledFrom = Literal["model", "reference"]
_SOURCE_INDEX = {"model": 0, "reference": 1}

SAMPLE_FLAGS = {
    "n_per_category": "--n-per-category",
    "prompt_tokens": "--prompt-tokens",
    "new_tokens": "--new-tokens",
    "temperature": "--temperature",
}
"""The flags of ``lmassay probes sample``, named by :meth:`SampleSettings.checks`."""


@dataclass(frozen=True)
class SampleSettings:
    """How continuations are drawn (see the module docstring)."""

    n_per_category: int = 8
    """Continuations per category."""
    prompt_tokens: int = 16
    """Tokens of a probe sample's start given as the prompt."""
    new_tokens: int = 48
    """Most tokens of a continuation (fewer when the model writes EOS)."""
    temperature: float = 1.0
    """Sampling temperature; 1.0 samples the model's own distribution (KL needs that)."""
    seed: int = 0

    def checks(self, flags: dict[str, str] = SAMPLE_FLAGS) -> list[Check]:
        """Each setting's range, naming the flag ``flags`` gives it."""
        return [
            (
                self.n_per_category >= 1,
                f"{flags['n_per_category']} {self.n_per_category} is below 1",
                "use 1 or more",
            ),
            (
                self.prompt_tokens >= 1,
                f"{flags['prompt_tokens']} {self.prompt_tokens} is below 1",
                "use 1 or more (e.g. 16)",
            ),
            (
                self.new_tokens >= 1,
                f"{flags['new_tokens']} {self.new_tokens} is below 1",
                "use 1 or more (e.g. 48)",
            ),
            (
                self.temperature > 0 and np.isfinite(self.temperature),
                f"{flags['temperature']} {self.temperature} is not a positive number",
                "use e.g. 1.0 (1.0 samples the model's own distribution)",
            ),
        ]

    def check_fits(self, model: LoadedModel, max_length: int | None = None) -> None:
        """Refuse prompts plus continuations longer than the context (one window, no rolling)."""
        limit = max_length or model.max_length
        needed = 1 + self.prompt_tokens + self.new_tokens
        if needed > limit:
            raise InputError(
                f"a self-probe needs {needed} tokens (1 + prompt {self.prompt_tokens} + new "
                f"{self.new_tokens}) but the context of {model.name!r} is {limit}",
                "use fewer prompt or new tokens",
            )


@dataclass(frozen=True)
class Prompt:
    """A probe sample given as a prompt: its first ``prompt_tokens`` tokens, or with ``end`` the
    ``prompt_tokens`` tokens that end just before its token ``end`` (a divergent prompt)."""

    sample: ProbeSample
    end: int | None = None

    def token_ids(self, ids: Sequence[int], prompt_tokens: int) -> list[int]:
        """The prompt's ids from the sample's ``ids``."""
        if self.end is None or not 0 < self.end <= len(ids):
            return list(ids[:prompt_tokens])
        return list(ids[max(0, self.end - prompt_tokens) : self.end])


@dataclass(frozen=True)
class Draw:
    """One sampled continuation of a probe sample's start."""

    id: str
    category: str
    prompt_id: str
    prompt_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]
    prompt: str
    continuation: str
    sampled_from: SampledFrom
    source: str
    seed: int
    temperature: float

    def row(self) -> dict[str, Any]:
        """The probe-file line (``{"id", "category", "text", "source", ...}``)."""
        return {
            "id": self.id,
            "category": self.category,
            "text": self.prompt + self.continuation,
            "prompt": self.prompt,
            "continuation": self.continuation,
            "source": self.source,
            "sampled_from": self.sampled_from,
            "prompt_id": self.prompt_id,
            "n_new_tokens": len(self.continuation_ids),
            "seed": self.seed,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class DrawScore:
    """A continuation's log-probabilities under both models (continuation tokens only)."""

    logprob_model: np.ndarray  # (n,) float32
    logprob_reference: np.ndarray  # (n,) float32

    @property
    def n_tokens(self) -> int:
        return int(self.logprob_model.shape[0])

    @property
    def logratio_sum(self) -> float:
        """Σ (log p_model − log p_reference) over the continuation, nats."""
        diff = self.logprob_model.astype(np.float64) - self.logprob_reference.astype(np.float64)
        return float(diff.sum())

    @property
    def logratio(self) -> float:
        """The log-ratio per continuation token, nats/token."""
        return self.logratio_sum / self.n_tokens


def choose_prompts(
    probes: ProbeSet,
    n_per_category: int,
    seed: int,
    divergence: Mapping[str, FloatArray] | None = None,
) -> list[Prompt]:
    """``n_per_category`` prompts of each category (repeating samples when it has fewer), in
    (category, rank) order; the choice depends only on the seed, the category, its samples and
    ``divergence`` (sample id → the first pass's per-token KL, in the sample's token order), which
    makes half of them divergent prompts (see the sampling contract above)."""
    chosen: list[Prompt] = []
    divergence = divergence or {}
    for category in probes.categories:
        members = [s for s in probes.samples if s.category == category]
        peaks = {
            s.id: (float(kl.max()), int(kl.argmax()))
            for s in members
            if s.messages is None and (kl := divergence.get(s.id)) is not None and kl.size > 1
        }
        by_peak = sorted((s for s in members if s.id in peaks), key=lambda s: -peaks[s.id][0])
        divergent = [Prompt(s, peaks[s.id][1]) for s in by_peak[: math.ceil(n_per_category / 2)]]
        divergent = [p for p in divergent if p.end]  # a peak at the first token has no prompt
        taken = {p.sample.id for p in divergent}
        rest = [s for s in members if s.id not in taken] or members
        order = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))]).permutation(
            len(rest)
        )
        n_rest = n_per_category - len(divergent)
        chosen += divergent + [Prompt(rest[int(order[k % len(rest)])]) for k in range(n_rest)]
    return chosen


def draw_continuations(
    model: LoadedModel,
    prompts: Sequence[ProbeSample | Prompt],
    settings: SampleSettings,
    *,
    sampled_from: SampledFrom = "model",
    progress: ProgressFn | None = None,
) -> list[Draw]:
    """One continuation per prompt from ``model`` (see the sampling contract above)."""
    import torch

    settings.check_fits(model)
    tokenizer = model.tokenizer
    given = [p if isinstance(p, Prompt) else Prompt(p) for p in prompts]
    token_lists = [
        prompt.token_ids(ids, settings.prompt_tokens)
        for prompt, ids in zip(
            given, tokenize_texts(tokenizer, [p.sample.text for p in given]), strict=True
        )
    ]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.prefix_token_id
    device = torch.device(model.device)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    source = f"self:{model.digest.value[:12]}"
    out: list[Draw] = []
    for b, start in enumerate(range(0, len(prompts), BATCH_SIZE)):
        batch = token_lists[start : start + BATCH_SIZE]
        inputs, mask = _left_padded([[model.prefix_token_id, *ids] for ids in batch], pad, device)
        batch_seed = int(
            np.random.SeedSequence([settings.seed, b, _SOURCE_INDEX[sampled_from]]).generate_state(
                1
            )[0]
        )
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            torch.manual_seed(batch_seed)
            lm: Any = model.model  # transformers types generate loosely
            generated = lm.generate(
                input_ids=inputs,  # (B, T) left-padded
                attention_mask=mask,  # (B, T)
                generation_config=_generation_config(settings, eos, pad),
            )
        new = generated[:, inputs.shape[1] :].tolist()  # (B, ≤ new_tokens)
        for offset, (prompt_ids, continuation) in enumerate(zip(batch, new, strict=True)):
            index = start + offset
            sample = given[index].sample
            kept = _until_eos(continuation, eos)
            out.append(
                Draw(
                    id=f"self-{sampled_from}/{sample.category}/{index:05d}",
                    category=sample.category,
                    prompt_id=sample.id,
                    prompt_ids=tuple(prompt_ids),
                    continuation_ids=tuple(kept),
                    prompt=_decode(tokenizer, prompt_ids),
                    continuation=_decode(tokenizer, kept),
                    sampled_from=sampled_from,
                    source=source,
                    seed=settings.seed,
                    temperature=settings.temperature,
                )
            )
        if progress is not None:
            progress(len(out), len(prompts))
    return out


def sample_probes(
    model: LoadedModel,
    prompts: ProbeSet,
    *,
    n_per_category: int = 8,
    prompt_tokens: int = 16,
    new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    sampled_from: SampledFrom = "model",
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Probe-file rows of continuations drawn from ``model`` for prompts from ``prompts``.

    Each row is ``{"id", "category", "text": prompt + continuation, "prompt", "continuation",
    "source": "self:<model digest, 12 hex>", "sampled_from", "prompt_id", "n_new_tokens", "seed",
    "temperature"}``; :func:`lmassay.attest.probes.load_probes` reads a file of them.  Rows whose
    continuation is empty (the model wrote EOS first) are left out.
    """
    settings = SampleSettings(n_per_category, prompt_tokens, new_tokens, temperature, seed)
    chosen = choose_prompts(prompts, n_per_category, seed)
    draws = draw_continuations(
        model, chosen, settings, sampled_from=sampled_from, progress=progress
    )
    return [d.row() for d in draws if d.continuation_ids]


def score_draws(
    draws: Sequence[Draw],
    model: LoadedModel,
    reference: LoadedModel,
    *,
    max_length: int,
    token_budget: int | None = None,
    progress: ProgressFn | None = None,
) -> list[DrawScore | None]:
    """Log-probabilities of each draw's continuation under ``model`` and ``reference`` (None for
    an empty continuation); see the scoring contract above."""
    kept = [i for i, d in enumerate(draws) if d.continuation_ids]
    token_lists = [[*draws[i].prompt_ids, *draws[i].continuation_ids] for i in kept]
    too_long = [len(t) for t in token_lists if len(t) > max_length]
    if too_long:
        raise InputError(
            f"a self-probe of {max(too_long)} tokens does not fit the context of {max_length}",
            "use fewer prompt or new tokens",
        )
    scores = score_models(
        token_lists,
        model,
        reference,
        prefix_token_id=model.prefix_token_id,
        max_length=max_length,
        token_budget=token_budget,
        progress=progress,
    )
    out: list[DrawScore | None] = [None] * len(draws)
    for i, scored in zip(kept, scores, strict=True):
        n = len(draws[i].continuation_ids)
        assert scored.logprob_reference is not None  # scored in pairs
        out[i] = DrawScore(scored.logprob_model[-n:], scored.logprob_reference[-n:])
    return out


def _left_padded(sequences: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def _generation_config(settings: SampleSettings, eos: int | None, pad: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=settings.new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def _until_eos(ids: Sequence[int], eos: int | None) -> list[int]:
    out = list(ids)
    return out[: out.index(eos)] if eos is not None and eos in out else out


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), clean_up_tokenization_spaces=False))
