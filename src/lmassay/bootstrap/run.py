"""``lmassay bootstrap``: grow instruction/response pairs from a small curated core with a raw LM.

One linear recipe (:func:`bootstrap`):

1. Read the core (any format :mod:`lmassay.instruction_data` reads) and check the request.
2. Load the LM (:func:`lmassay.attest.model_loading.load_model`).
3. Rounds until ``n`` pairs are kept or ``max_generated`` candidates were drawn:

   a. *instructions*: for each candidate, ``shots`` core examples drawn with the seed, in the
      few-shot format of :mod:`lmassay.bootstrap.fewshot`, then ``"Question:"``; the LM samples
      (``temperature``, ``top_p``) until the end of the line;
   b. *deduplicate* the instruction against the core and everything kept so far, exactly and
      near (:class:`lmassay.bootstrap.dedupe.Deduplicator`: character 5-gram Jaccard);
   c. *responses*: ``shots`` other core examples, then ``"Question: <new>\\nAnswer:"``; the LM
      answers (greedy by default: ``response_temperature`` 0) until the end of the line;
   d. optionally *critique and revise* each response once per principle drawn for it
      (:func:`_revise`), with the same LM;
   e. *likelihood filter*: the mean log-probability per token of the response given
      ``"Question: <instruction>\\nAnswer:"`` alone (no examples), under the same LM, and that of
      its least likely token; a pair below ``min_logprob`` or ``min_token_logprob`` is dropped
      (:func:`response_logprobs`);
   f. *classifiers*: curate classifiers trained on the same LM drop the pairs they flag.

4. Write ``out`` (JSONL ``{"instruction", "response", "provenance"}``) and its summary
   ``<stem>.summary.json`` beside it, each atomically.

Generation is batched (``batch_size`` prompts per ``generate`` call, left-padded). Every draw
depends only on the seed: the shots of candidate ``i`` of round ``r`` come from a
``random.Random`` seeded with ``(seed, r, i)``, and each batch's sampling from a torch seed made
from ``(seed, r, batch, stage)``.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lmassay import __version__
from lmassay._atomic import atomic_write_json, atomic_write_jsonl
from lmassay.bootstrap.dedupe import Deduplicator
from lmassay.bootstrap.fewshot import (
    QUESTION,
    format_example,
    instruction_prompt,
    one_line,
    response_prompt,
)
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance

if TYPE_CHECKING:
    from lmassay.attest.model_loading import LoadedModel
    from lmassay.curate.classifier import Classifier

__all__ = [
    "BootstrapConfig",
    "BootstrapResult",
    "CoreExample",
    "ResponseScore",
    "bootstrap",
    "continuation_scores",
    "generate_lines",
    "instruction_logprobs",
    "read_core",
    "response_logprobs",
    "summary_path",
]


@dataclass(frozen=True)
class BootstrapConfig:
    """What ``lmassay bootstrap`` does; :meth:`validate` names the offending flag."""

    model: str
    """The raw LM (a folder or hub id) that writes instructions, responses and revisions."""
    core: str
    """The curated core: JSONL, parquet, a saved dataset or hf:ID in a common instruction format."""
    n: int
    """How many pairs to keep."""
    out: Path
    """The JSONL file to write; its summary goes beside it (``<stem>.summary.json``)."""
    seed: int = 0
    shots: int = 4
    """Core examples in each few-shot prompt for a new instruction."""
    response_shots: int | None = None
    """Core examples before a new instruction when asking for its response (default: ``shots``;
    0: the instruction alone)."""
    temperature: float = 1.0
    """Sampling temperature of new instructions (0: greedy)."""
    top_p: float = 0.95
    """Nucleus sampling of new instructions."""
    response_temperature: float = 0.0
    """Sampling temperature of responses (0: greedy, the default)."""
    max_new_tokens: int = 48
    """Most new tokens of an instruction, a response, a critique or a revision."""
    min_logprob: float | None = -1.0
    """Keep a pair when its response's mean log-prob per token (nats) is at least this; None: keep all."""
    min_instruction_logprob: float | None = None
    """Keep an instruction when its mean log-prob per token after ``"Question:"`` is at least
    this (the LM finds it a well-formed question); None: no such filter."""
    min_token_logprob: float | None = None
    """Keep a pair when every token of its response has a log-prob of at least this (the LM is
    sure of every word, the answer's key words included); None: no such filter."""
    near_duplicate: float = 0.8
    """Character 5-gram Jaccard similarity at or above which two instructions are duplicates."""
    max_generated: int | None = None
    """Stop after this many candidate instructions (default: 4 x n)."""
    batch_size: int = 64
    context: int | None = None
    """Tokens the LM handles well (prompt + new tokens): a prompt that does not fit drops shots.
    Default: the training window of an lmassay world reference, else the model's context."""
    classifiers: tuple[Path, ...] = ()
    """Curate classifiers trained on this LM's features: a pair any of them scores at or above
    its threshold is dropped."""
    principles: Path | None = None
    """A text file of principles, one per line, for critique and revision (none: no revision)."""
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False

    @property
    def budget(self) -> int:
        return self.max_generated if self.max_generated is not None else 4 * self.n

    def validate(self) -> None:
        if self.n <= 0:
            raise InputError(f"--n {self.n} is not a positive count", "give --n 1 or more")
        if self.shots < 1:
            raise InputError(f"--shots {self.shots} is below 1", "give 1 or more core examples")
        if self.response_shots is not None and self.response_shots < 0:
            raise InputError(
                f"--response-shots {self.response_shots} is negative", "give 0 or more"
            )
        for flag, value in (
            ("--temperature", self.temperature),
            ("--response-temperature", self.response_temperature),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise InputError(f"{flag} {value} is not a finite number >= 0", "give e.g. 1.0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p {self.top_p} is not in (0, 1]", "give e.g. 0.95")
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens {self.max_new_tokens} is below 1", "give e.g. 48")
        if not 0 < self.near_duplicate <= 1:
            raise InputError(
                f"--near-duplicate {self.near_duplicate} is not in (0, 1]", "give e.g. 0.8"
            )
        for flag, threshold in (
            ("--min-logprob", self.min_logprob),
            ("--min-token-logprob", self.min_token_logprob),
            ("--min-instruction-logprob", self.min_instruction_logprob),
        ):
            if threshold is not None and not math.isfinite(threshold):
                raise InputError(f"{flag} {threshold} is not finite", "give e.g. -1.0")
        if self.budget < self.n:
            raise InputError(
                f"--max-generated {self.budget} is below --n {self.n}", "raise --max-generated"
            )
        if self.context is not None and self.context <= self.max_new_tokens:
            raise InputError(
                f"--context {self.context} leaves no room for a prompt before "
                f"--max-new-tokens {self.max_new_tokens}",
                "raise --context or lower --max-new-tokens",
            )
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size} is below 1", "give e.g. 64")
        if self.out.is_dir():
            raise InputError(f"--out {self.out} is a folder", "give a .jsonl file to write")
        if self.principles is not None and not self.principles.is_file():
            raise InputError(
                f"--principles {self.principles} is not a file",
                "give a text file with one principle per line",
            )


@dataclass(frozen=True)
class CoreExample:
    """One pair of the core and how it is named in provenance."""

    id: str
    instruction: str
    response: str


def read_core(source: str) -> list[CoreExample]:
    """The core's pairs, each on one line (:func:`lmassay.bootstrap.fewshot.one_line`).

    Rows in any format :func:`lmassay.instruction_data.pair_from_row` reads; an Alpaca ``input``
    is appended to the instruction. A row's ``id`` names it, else ``core-<row number>``.
    Raises :class:`InputError` for a missing file, an empty core, a row without the fields, or a
    pair whose instruction or response is blank.
    """
    from lmassay.instruction_data import iter_located_rows, pair_from_row

    out = []
    for number, (where, row) in enumerate(iter_located_rows(source)):
        pair = pair_from_row(row, f"--core {where}")
        instruction, response = one_line(pair.prompt()), one_line(pair.response)
        if not instruction or not response:
            raise InputError(
                f"--core {where} has a blank instruction or response", "fill or remove the row"
            )
        name = row.get("id")
        out.append(
            CoreExample(str(name) if name is not None else f"core-{number}", instruction, response)
        )
    return out


def trained_context(loaded: LoadedModel) -> int:
    """The tokens ``loaded`` was trained to handle: an lmassay world reference records its
    training window (``training.seq_len`` of ``lmassay-reference.json``; positions past it were
    never trained), any other model its context length."""
    import json

    from lmassay.world.reference import CARD_NAME

    card_file = None if loaded.folder is None else loaded.folder / CARD_NAME
    if card_file is not None and card_file.is_file():
        card = json.loads(card_file.read_text(encoding="utf-8"))
        return min(int(card["training"]["seq_len"]), loaded.max_length)
    return loaded.max_length


def _fitting_shots(
    loaded: LoadedModel,
    shots: list[CoreExample],
    prompt: Callable[[list[tuple[str, str]]], str],
    room: int,
) -> tuple[list[CoreExample], str]:
    """The most of ``shots`` (keeping the first ones) whose prompt fits in ``room`` tokens with
    the prefix token; at least one unless none is given."""
    if not shots:
        return [], prompt([])
    for k in range(len(shots), 0, -1):
        text = prompt([(e.instruction, e.response) for e in shots[:k]])
        if k == 1 or len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) < room:
            return shots[:k], text
    raise ValueError("no shots")  # unreachable: k == 1 returns


@dataclass(frozen=True)
class _Screen:
    """A curate classifier applied to bootstrapped pairs."""

    path: Path
    classifier: Classifier
    digest: dict[str, str]


def _load_screens(paths: Sequence[Path], loaded: LoadedModel) -> list[_Screen]:
    """The classifiers, each checked to be trained on ``loaded``'s features."""
    from lmassay.curate.classifier import load_classifier
    from lmassay.digests import model_identity

    screens = []
    for path in paths:
        classifier = load_classifier(path)
        classifier.check_model(loaded)
        digest = model_identity(Path(path).resolve()).root.to_json()
        screens.append(_Screen(Path(path), classifier, digest))
    return screens


def _screen_scores(
    loaded: LoadedModel, screens: Sequence[_Screen], pairs: Sequence[tuple[str, str]]
) -> list[list[float]]:
    """Per pair, each classifier's score of ``"<instruction>\n\n<response>"`` (the text
    ``curate filter`` scores for an instruction pair)."""
    texts = [f"{instruction}\n\n{response}" for instruction, response in pairs]
    columns = [screen.classifier.score(loaded, texts).tolist() for screen in screens]
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in pairs]


def summary_path(out: Path) -> Path:
    """Where the summary of ``out`` goes: ``<stem>.summary.json`` beside it."""
    return out.with_name(out.stem + ".summary.json")


@dataclass
class _Counts:
    generated: int = 0  # candidate instructions drawn
    blank: int = 0  # empty instruction or response
    duplicates_exact: int = 0
    duplicates_near: int = 0
    filtered_likelihood: int = 0
    filtered_classifier: int = 0
    filtered_instruction: int = 0
    revised: int = 0
    unused: int = 0  # drawn in the last round after n pairs were kept
    kept: int = 0
    rounds: int = 0


@dataclass(frozen=True)
class BootstrapResult:
    """What :func:`bootstrap` wrote and counted."""

    out: Path
    summary_file: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The LM: batched generation and scoring
# --------------------------------------------------------------------------------------------


def _prompt_ids(loaded: LoadedModel, prompts: Sequence[str], room: int) -> list[list[int]]:
    """Token ids of each prompt after the model's prefix token, cut from the left to ``room``."""
    tokenizer = loaded.tokenizer
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    return [[loaded.prefix_token_id, *ids][-room:] for ids in encoded]


def generate_lines(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    context: int | None = None,
) -> list[str]:
    """The LM's continuation of each prompt up to (not including) its first line break.

    Batches of ``batch_size`` left-padded prompts go through ``generate`` with
    ``stop_strings=["\\n"]`` (and the EOS token); ``temperature`` 0 is greedy decoding, else
    sampling with ``temperature`` and ``top_p``, seeded per batch from ``seed``. A prompt longer
    than ``context`` (default: the model's context length) minus ``max_new_tokens`` keeps its
    end.
    """
    import torch
    from transformers import GenerationConfig

    tokenizer = loaded.tokenizer
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else loaded.prefix_token_id
    room = max(1, (context or loaded.max_length) - max_new_tokens)
    sampled = temperature > 0
    settings = GenerationConfig(
        do_sample=sampled,
        temperature=temperature if sampled else None,
        top_p=top_p if sampled else None,
        top_k=0 if sampled else None,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        stop_strings=["\n"],
    )
    device = torch.device(loaded.device)
    lm: Any = loaded.model  # transformers types generate loosely
    out: list[str] = []
    for batch_number, start in enumerate(range(0, len(prompts), batch_size)):
        sequences = _prompt_ids(loaded, prompts[start : start + batch_size], room)
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        batch_seed = int(np.random.SeedSequence([seed, batch_number]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(batch_seed)
            generated = lm.generate(
                input_ids=ids.to(device),  # (B, T) left-padded
                attention_mask=mask.to(device),  # (B, T)
                generation_config=settings,
                tokenizer=tokenizer,
            )
        for continuation in generated[:, width:].tolist():  # (B, ≤ max_new_tokens)
            kept = continuation[: continuation.index(eos)] if eos in continuation else continuation
            text = str(tokenizer.decode(kept, skip_special_tokens=True))
            out.append(text.split("\n", 1)[0].strip())
    return out


class ResponseScore(NamedTuple):
    """How likely the LM finds a response given its instruction (natural-log probabilities)."""

    mean: float  # per token of the response
    least: float  # of the response's least likely token


def response_logprobs(
    loaded: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
) -> list[ResponseScore]:
    """Mean and least natural-log probability of the tokens of each response given its
    instruction.

    Scored text: the prefix token, ``"Question: <instruction>\\nAnswer:"`` (not scored), then
    ``" <response>"`` — each of its tokens scored once given everything before it; the mean and
    the minimum are over those tokens. Tokenised in two parts, so the response's tokens are
    exactly those of ``" <response>"``. Texts longer than the context keep their end.
    """
    prompts = [response_prompt((), instruction) for instruction, _ in pairs]
    answers = [" " + one_line(response) for _, response in pairs]
    return continuation_scores(loaded, prompts, answers, batch_size=batch_size)


def instruction_logprobs(
    loaded: LoadedModel, instructions: Sequence[str], *, batch_size: int = 64
) -> list[ResponseScore]:
    """The same scores for ``" <instruction>"`` after ``"Question:"`` alone: how well-formed a
    question the LM finds each instruction."""
    answers = [" " + one_line(instruction) for instruction in instructions]
    return continuation_scores(loaded, [QUESTION] * len(answers), answers, batch_size=batch_size)


def continuation_scores(
    loaded: LoadedModel,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 64,
) -> list[ResponseScore]:
    """Mean and least log-probability of the tokens of each ``answers[i]`` after the prefix token
    and ``prompts[i]`` (tokenised apart, so the scored tokens are exactly ``answers[i]``'s)."""
    import torch

    tokenizer = loaded.tokenizer
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else loaded.prefix_token_id
    device = torch.device(loaded.device)
    out: list[ResponseScore] = []
    for start in range(0, len(answers), batch_size):
        answers_here = answer_ids[start : start + batch_size]
        rows = [
            [loaded.prefix_token_id, *p, *a][-loaded.max_length :]
            for p, a in zip(prompt_ids[start : start + batch_size], answers_here, strict=True)
        ]
        n_scored = [min(len(a), len(r) - 1) for a, r in zip(answers_here, rows, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        with torch.inference_mode():
            logits = loaded.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
            targets = ids[:, 1:].to(device)  # (B, T-1)
            token_logp = logp.gather(-1, targets[..., None])[..., 0]  # (B, T-1)
        for i, (row, scored) in enumerate(zip(rows, n_scored, strict=True)):
            if scored <= 0:
                out.append(ResponseScore(float("-inf"), float("-inf")))
                continue
            end = len(row) - 1  # the last target position
            scores = token_logp[i, end - scored : end]  # (scored,)
            out.append(ResponseScore(float(scores.mean()), float(scores.min())))
    return out


# --------------------------------------------------------------------------------------------
# Critique and revision
# --------------------------------------------------------------------------------------------


def _read_principles(path: Path | None) -> list[str]:
    if path is None:
        return []
    lines = [one_line(line) for line in path.read_text(encoding="utf-8").splitlines()]
    principles = [line for line in lines if line and not line.startswith("#")]
    if not principles:
        raise InputError(f"--principles {path} holds no principle", "write one per line")
    return principles


def _revise(
    loaded: LoadedModel,
    config: BootstrapConfig,
    context: int,
    pairs: Sequence[tuple[str, str]],
    principles: Sequence[str],
    seed: int,
) -> list[dict[str, str]]:
    """Constitutional-AI-style critique and revision of each pair under one principle drawn for
    it: the LM continues ``<example>\\nCritique (<principle>):`` with a critique, then
    ``... <critique>\\nRevised answer:`` with the revision. Returns, per pair, the principle, the
    critique and the revision ('' when the LM wrote none)."""
    rng = random.Random(f"lmassay-bootstrap-principles:{seed}")
    chosen = [rng.choice(principles) for _ in pairs]
    bases = [
        f"{format_example(q, a)}\nCritique ({p}):" for (q, a), p in zip(pairs, chosen, strict=True)
    ]

    def lines(prompts: list[str], stage_seed: int) -> list[str]:
        return generate_lines(
            loaded,
            prompts,
            temperature=config.response_temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            seed=stage_seed,
            batch_size=config.batch_size,
            context=context,
        )

    critiques = lines(bases, seed)
    revision_prompts = [
        f"{base} {critique}\nRevised answer:"
        for base, critique in zip(bases, critiques, strict=True)
    ]
    revisions = lines(revision_prompts, seed + 1)
    return [
        {"principle": p, "critique": c, "revision": r}
        for p, c, r in zip(chosen, critiques, revisions, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------


def _shots(
    core: Sequence[CoreExample], k: int, seed: int, round_number: int, index: int, stage: str
) -> list[CoreExample]:
    rng = random.Random(f"lmassay-bootstrap:{seed}:{round_number}:{index}:{stage}")
    return rng.sample(list(core), min(k, len(core)))


def _response_prompt_for(instruction: str, examples: list[tuple[str, str]]) -> str:
    return response_prompt(examples, instruction)


def _stage_seed(seed: int, round_number: int, stage: int) -> int:
    return int(np.random.SeedSequence([seed, round_number, stage]).generate_state(1)[0])


def bootstrap(config: BootstrapConfig, progress: Progress | None = None) -> BootstrapResult:
    """Grow ``config.n`` instruction/response pairs from the core (see the module docstring)."""
    from lmassay.attest.model_loading import load_model
    from lmassay.instruction_data import source_digest

    progress = progress or NullProgress()
    started = time.perf_counter()
    config.validate()
    core = read_core(config.core)
    principles = _read_principles(config.principles)
    loaded = load_model(
        config.model,
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
    )
    screens = _load_screens(config.classifiers, loaded)
    context = config.context or trained_context(loaded)
    room = context - config.max_new_tokens
    if room < 2:
        raise InputError(
            f"the LM handles {context} tokens, no room for a prompt before --max-new-tokens "
            f"{config.max_new_tokens}",
            "lower --max-new-tokens or give a larger --context",
        )
    model_record = {
        "name": loaded.name,
        "digest": loaded.digest.to_json() if loaded.folder_digest is not None else None,
    }
    core_digest = source_digest(config.core)
    response_k = config.shots if config.response_shots is None else config.response_shots
    sampling = {
        "shots": config.shots,
        "response_shots": response_k,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "response_temperature": config.response_temperature,
        "max_new_tokens": config.max_new_tokens,
        "context": context,
        "format": "Question: <instruction> / Answer: <response>",
    }
    dedupe = Deduplicator(threshold=config.near_duplicate, seed=config.seed)
    for example in core:
        dedupe.add(example.instruction)
    counts = _Counts()
    rows: list[dict[str, Any]] = []
    update = progress.task("bootstrapping pairs", config.n)
    while len(rows) < config.n and counts.generated < config.budget:
        round_number = counts.rounds
        counts.rounds += 1
        want = min(
            config.budget - counts.generated, max(config.batch_size, 2 * (config.n - len(rows)))
        )
        drawn = [
            _fitting_shots(
                loaded,
                _shots(core, config.shots, config.seed, round_number, i, "instruction"),
                instruction_prompt,
                room,
            )
            for i in range(want)
        ]
        instruction_shots = [shots for shots, _ in drawn]
        instructions = generate_lines(
            loaded,
            [prompt for _, prompt in drawn],
            context=context,
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            seed=_stage_seed(config.seed, round_number, 0),
            batch_size=config.batch_size,
        )
        counts.generated += want
        fresh: list[tuple[int, str]] = []
        for i, instruction in enumerate(instructions):
            if not instruction:
                counts.blank += 1
                continue
            verdict, _ = dedupe.check(instruction)
            if verdict == "exact":
                counts.duplicates_exact += 1
                continue
            if verdict == "near":
                counts.duplicates_near += 1
                continue
            dedupe.add(instruction)
            fresh.append((i, instruction))
        asked = (
            instruction_logprobs(loaded, [q for _, q in fresh], batch_size=config.batch_size)
            if fresh
            else []
        )
        if config.min_instruction_logprob is not None:
            floor = config.min_instruction_logprob
            counts.filtered_instruction += sum(score.mean < floor for score in asked)
            kept_here = [k for k, score in enumerate(asked) if score.mean >= floor]
            fresh, asked = [fresh[k] for k in kept_here], [asked[k] for k in kept_here]
        answered = [
            _fitting_shots(
                loaded,
                _shots(core, response_k, config.seed, round_number, i, "response"),
                functools.partial(_response_prompt_for, instruction),
                room,
            )
            for i, instruction in fresh
        ]
        response_shots = [shots for shots, _ in answered]
        responses = generate_lines(
            loaded,
            [prompt for _, prompt in answered],
            context=context,
            temperature=config.response_temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            seed=_stage_seed(config.seed, round_number, 1),
            batch_size=config.batch_size,
        )
        pairs = [
            (instruction, response)
            for (_, instruction), response in zip(fresh, responses, strict=True)
        ]
        revisions: list[dict[str, str] | None] = [None] * len(pairs)
        if principles:
            revised = _revise(
                loaded,
                config,
                context,
                pairs,
                principles,
                _stage_seed(config.seed, round_number, 2),
            )
            for j, critique in enumerate(revised):
                if critique["revision"]:
                    counts.revised += 1
                    critique["original"] = pairs[j][1]
                    pairs[j] = (pairs[j][0], critique["revision"])
                revisions[j] = critique
        scores = response_logprobs(loaded, pairs, batch_size=config.batch_size) if pairs else []
        screened = _screen_scores(loaded, screens, pairs) if screens and pairs else []
        for j, ((i, instruction), (_, response), score) in enumerate(
            zip(fresh, pairs, scores, strict=True)
        ):
            if len(rows) >= config.n:
                counts.unused += 1
                continue
            if not response:
                counts.blank += 1
                continue
            if (config.min_logprob is not None and score.mean < config.min_logprob) or (
                config.min_token_logprob is not None and score.least < config.min_token_logprob
            ):
                counts.filtered_likelihood += 1
                continue
            screen_scores = screened[j] if screens else []
            if any(
                v >= sc.classifier.threshold for v, sc in zip(screen_scores, screens, strict=True)
            ):
                counts.filtered_classifier += 1
                continue
            record: dict[str, Any] = {
                "index": len(rows),
                "round": round_number,
                "candidate": i,
                "instruction_shots": [e.id for e in instruction_shots[i]],
                "response_shots": [e.id for e in response_shots[j]],
                "seed": config.seed,
                "sampling": sampling,
                "instruction_mean_logprob": asked[j].mean,
                "mean_logprob": score.mean,
                "min_token_logprob": score.least,
                "model": model_record,
            }
            if screens:
                record["classifier_scores"] = screen_scores
            if revisions[j] is not None:
                record["revision"] = revisions[j]
            rows.append({"instruction": instruction, "response": response, "provenance": record})
        update(len(rows), config.n, f"{counts.generated} drawn")
    counts.kept = len(rows)
    summary = {
        "format": "lmassay.bootstrap/v1",
        "out": str(config.out),
        "requested": config.n,
        **asdict(counts),
        "duplicates": counts.duplicates_exact + counts.duplicates_near,
        "core": {
            "source": config.core,
            "examples": len(core),
            "digest": core_digest.to_json() if core_digest is not None else None,
        },
        "model": model_record,
        "classifiers": [
            {"path": str(sc.path), "digest": sc.digest, "threshold": sc.classifier.threshold}
            for sc in screens
        ],
        "principles": principles,
        "seconds": round(time.perf_counter() - started, 2),
        "provenance": provenance(_config_json(config), config.seed),
        "version": __version__,
    }
    config.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(config.out, rows)
    summary_file = atomic_write_json(summary_path(config.out), summary)
    if len(rows) < config.n:
        progress.log(
            f"kept {len(rows)} of the {config.n} pairs asked for after {counts.generated} "
            "candidates (--max-generated): raise it, or lower --min-logprob"
        )
    return BootstrapResult(config.out, summary_file, rows, summary)


def _config_json(config: BootstrapConfig) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in asdict(config).items()}
