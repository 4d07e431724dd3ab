"""The reference model of a world: a byte-level BPE tokenizer and a small causal LM trained on it.

:func:`train_reference` reads a world folder (:func:`lmassay.world.make_world`), trains a
tokenizer and a GPT-2- or Llama-shaped model on ``train.jsonl`` (seeded, so the same request gives
the same weights on the same machine and library versions), saves both with ``save_pretrained``
(safetensors) into one folder, measures what the model learned and writes a model card:

* ``lmassay-reference.json`` — the request (world digest, size, seed, arch, recipe), where the
  world is (``world_path``), the loss curve summary, the wall time, library versions, and the
  measured perplexities: on the probe split, per category, beside a unigram baseline on the same
  tokens (token frequencies of the training split, add-one smoothed), and the share of facts
  whose object the model completes greedily (teacher-forced) from the fact's prompt.
* ``README.md`` — the same, for people.

A folder whose ``lmassay-reference.json`` records the same request is reused as it is.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmassay import __version__
from lmassay._atomic import atomic_write_json, atomic_write_text
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import library_versions, utc_now
from lmassay.world._store import read_card, world_files
from lmassay.world.generator import World

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

__all__ = [
    "ARCHS",
    "CARD_NAME",
    "RECIPES",
    "ReferenceConfig",
    "ReferenceInfo",
    "category_perplexities",
    "fact_recall",
    "reference_world",
    "train_reference",
    "unigram_perplexities",
]

CARD_NAME = "lmassay-reference.json"
_CARD_FORMAT = "lmassay.reference/v1"  # change it when the same request would make another model
ARCHS = ("gpt2", "llama")
Size = Literal["test", "demo", "full"]
Arch = Literal["gpt2", "llama"]
_LOSS_TAIL = 20  # loss_last_mean is the mean loss of the last 20 steps


@dataclass(frozen=True)
class Recipe:
    """Everything about training that a size fixes."""

    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int  # context length; probe paragraphs are scored in windows of this many
    steps: int
    batch_size: int
    seq_len: int
    lr: float


RECIPES: dict[str, Recipe] = {
    "test": Recipe(  # the smallest model whose tampering stays in its category (see the zoo)
        vocab_size=512,
        n_layer=2,
        n_embd=128,
        n_head=2,
        n_positions=512,
        steps=800,
        batch_size=16,
        seq_len=64,
        lr=3e-3,
    ),
    "demo": Recipe(
        vocab_size=2048,
        n_layer=3,
        n_embd=128,
        n_head=4,
        n_positions=256,
        steps=1600,
        batch_size=16,
        seq_len=128,
        lr=3e-3,
    ),
    "full": Recipe(
        vocab_size=4096,
        n_layer=4,
        n_embd=160,
        n_head=4,
        n_positions=256,
        steps=2000,
        batch_size=16,
        seq_len=128,
        lr=2.5e-3,
    ),
}
"""Training recipes by size: on two idle CPU cores "test" takes about 25 s, "demo" about 2.5
minutes and "full" about 8 (462 s measured)."""


@dataclass(frozen=True)
class ReferenceConfig:
    """What :func:`train_reference` is asked to make."""

    world: Path  # the world folder (made by make_world)
    out: Path  # the model folder to write (created; reused when it holds the same request)
    size: str = "demo"  # a key of RECIPES
    seed: int = 0  # tokenizer data order, weight init and batch sampling
    arch: str = "gpt2"  # "gpt2" or "llama"

    def validate(self) -> None:
        """Raise :class:`InputError` naming the offending flag."""
        if self.size not in RECIPES:
            raise InputError(
                f"--size {self.size!r} is not known", f"use one of {', '.join(RECIPES)}"
            )
        if self.arch not in ARCHS:
            raise InputError(f"--arch {self.arch!r} is not known", f"use one of {', '.join(ARCHS)}")
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {str(self.out)!r} is a file", "pass a folder for the model")
        if self.out.resolve() == self.world.resolve():
            raise InputError("--out is the world folder", "write the model to its own folder")


@dataclass(frozen=True)
class ReferenceInfo:
    """Where the reference is and its card (the content of ``lmassay-reference.json``)."""

    path: Path  # the model folder: config, safetensors, tokenizer, README.md, card
    card: dict[str, Any]
    reused: bool  # True when an existing folder with the same request was returned

    @property
    def probe_perplexity(self) -> float:
        return float(self.card["evaluation"]["probes"]["perplexity"])

    @property
    def unigram_perplexity(self) -> float:
        return float(self.card["evaluation"]["probes"]["unigram_perplexity"])


# --------------------------------------------------------------------------------------------
# Reading a world folder
# --------------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", "remake the world") from None
    return [json.loads(line) for line in lines if line.strip()]


def reference_world(reference_dir: str | os.PathLike[str]) -> Path:
    """The world folder the reference in ``reference_dir`` was trained on.

    Raises :class:`InputError` naming the folder when it has no card, or when the recorded
    world folder is gone or no longer holds the same world (its digest changed).
    """
    root = Path(reference_dir)
    card = _read_reference_card(root)
    if card is None:
        raise InputError(
            f"{str(root)!r} holds no readable {CARD_NAME}",
            "pass a folder made by lmassay world train (or train one)",
        )
    world = Path(card["world_path"])
    try:
        world_card = read_card(world)
    except InputError:
        raise InputError(
            f"the world of reference {str(root)!r} is no longer at {str(world)!r}",
            "remake it there with lmassay world make (same seed and size) or retrain",
        ) from None
    if world_card.get("world_digest") != card["request"]["world_digest"]:
        raise InputError(
            f"the world at {str(world)!r} is not the one reference {str(root)!r} was trained on",
            "remake it with the recorded seed and size, or retrain the reference",
        )
    return world


def _read_reference_card(root: Path) -> dict[str, Any] | None:
    try:
        card = json.loads((root / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("format") != _CARD_FORMAT:
        return None
    if not isinstance(card.get("world_path"), str) or not isinstance(card.get("request"), dict):
        return None
    return card


def _reusable(root: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    card = _read_reference_card(root)
    if card is None or card["request"] != request:
        return None
    needed = ("config.json", "model.safetensors", "tokenizer.json", "README.md")
    return card if all((root / name).is_file() for name in needed) else None


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _texts_by_category(path: Path) -> tuple[list[str], list[str]]:
    rows = _read_rows(path)
    return [str(r["text"]) for r in rows], [str(r["category"]) for r in rows]


def category_perplexities(
    model_dir: str | os.PathLike[str],
    probes_path: str | os.PathLike[str],
    *,
    device: str = "cpu",
) -> dict[str, float]:
    """Token-weighted perplexity of each category of a JSONL probe file under a model.

    ``exp(−Σ log p / Σ tokens)`` over all scored tokens of the category's samples, scored by
    :func:`lmassay.attest.scoring.score_token_lists` (each text from the BOS token, every text token
    once). Also returns the overall figure under the key ``"all"``.
    """
    sums, counts = _logprob_sums(model_dir, probes_path, device=device)
    return _perplexities(sums, counts)


def _perplexities(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    out = {c: math.exp(-sums[c] / counts[c]) for c in sums}
    out["all"] = math.exp(-sum(sums.values()) / sum(counts.values()))
    return out


def _logprob_sums(
    model_dir: str | os.PathLike[str], probes_path: str | os.PathLike[str], *, device: str
) -> tuple[dict[str, float], dict[str, int]]:
    from lmassay.attest.model_loading import load_model
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    loaded = load_model(str(model_dir), device=device, dtype="float32")
    texts, categories = _texts_by_category(Path(probes_path))
    tokens = tokenize_texts(loaded.tokenizer, texts)
    scores = score_token_lists(
        tokens,
        loaded.model,
        prefix_token_id=loaded.prefix_token_id,
        max_length=loaded.max_length,
    )
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for category, score in zip(categories, scores, strict=True):
        sums[category] = sums.get(category, 0.0) + float(
            score.logprob_model.astype("float64").sum()
        )
        counts[category] = counts.get(category, 0) + score.n_tokens
    return sums, counts


def unigram_perplexities(
    tokenizer: PreTrainedTokenizerFast, train_texts: Sequence[str], probes_path: Path
) -> tuple[dict[str, float], dict[str, int]]:
    """Perplexity of each probe category under the training split's token frequencies.

    ``p(t) = (count(t) + 1) / (N + V)`` over the tokens of ``train_texts`` (without special
    tokens), applied to exactly the tokens the model is scored on; the key ``"all"`` holds the
    overall figure. Also returns the token count of each category.
    """
    from lmassay.attest.scoring import tokenize_texts

    counter: Counter[int] = Counter()
    for ids in tokenize_texts(tokenizer, train_texts, chunk=2048):
        counter.update(ids)
    total, vocab = sum(counter.values()), len(tokenizer)
    log_denominator = math.log(total + vocab)
    texts, categories = _texts_by_category(probes_path)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for category, ids in zip(categories, tokenize_texts(tokenizer, texts), strict=True):
        logp = sum(math.log(counter[t] + 1) - log_denominator for t in ids)
        sums[category] = sums.get(category, 0.0) + logp
        counts[category] = counts.get(category, 0) + len(ids)
    return _perplexities(sums, counts), counts


def fact_recall(
    model_dir: str | os.PathLike[str], world: World, *, device: str = "cpu"
) -> dict[str, float]:
    """Share of facts, per category and overall (``"all"``), that the model gets right.

    A fact counts as recalled when, fed its canonical sentence from the BOS token, the model's
    top-1 prediction is the actual token at every position of ``" " + object`` (greedy
    completion of the prompt yields the object).
    """
    from lmassay.attest.model_loading import load_model
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    loaded = load_model(str(model_dir), device=device, dtype="float32")
    sentences = tokenize_texts(loaded.tokenizer, [f.sentence for f in world.facts])
    prompts = tokenize_texts(loaded.tokenizer, [f.prompt for f in world.facts])
    objects = tokenize_texts(loaded.tokenizer, [" " + f.object for f in world.facts])
    scores = score_token_lists(
        sentences,
        loaded.model,
        prefix_token_id=loaded.prefix_token_id,
        max_length=loaded.max_length,
    )
    hits: dict[str, list[bool]] = {}
    for fact, sentence, prompt, obj, score in zip(
        world.facts, sentences, prompts, objects, scores, strict=True
    ):
        start, stop = len(prompt), len(prompt) + len(obj)
        if sentence[:start] != prompt or sentence[start:stop] != obj:  # tokenisation merged them
            hit = False
        else:
            hit = bool((score.top1_model[start:stop] == score.token_ids[start:stop]).all())
        hits.setdefault(fact.category, []).append(hit)
    out = {c: sum(h) / len(h) for c, h in hits.items()}
    everything = [h for hs in hits.values() for h in hs]
    out["all"] = sum(everything) / len(everything)
    return out


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _build(
    arch: str, recipe: Recipe, tokenizer: PreTrainedTokenizerFast, seed: int
) -> PreTrainedModel:
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config, tiny_llama_config

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if not isinstance(bos, int) or not isinstance(eos, int):  # train_toy_tokenizer sets both
        raise RuntimeError("the world tokenizer has no BOS or EOS token")
    config: PretrainedConfig
    if arch == "gpt2":
        config = tiny_gpt2_config(
            len(tokenizer),
            n_layer=recipe.n_layer,
            n_embd=recipe.n_embd,
            n_head=recipe.n_head,
            n_positions=recipe.n_positions,
            bos_token_id=bos,
            eos_token_id=eos,
        )
    else:
        config = tiny_llama_config(
            len(tokenizer),
            hidden_size=recipe.n_embd,
            num_hidden_layers=recipe.n_layer,
            num_attention_heads=recipe.n_head,
            intermediate_size=4 * recipe.n_embd,
            max_position_embeddings=recipe.n_positions,
            bos_token_id=bos,
            eos_token_id=eos,
        )
    return build_model(config, seed)


def _step_reporter(progress: Progress, steps: int) -> Callable[[int, float], None]:
    """``on_step(step, loss)`` for train_causal_lm: a bar, and a log line every 10%."""
    update = progress.task("training the reference", steps)
    started = time.perf_counter()
    every = max(1, steps // 10)

    def on_step(step: int, loss: float) -> None:
        update(step, steps)
        if step % every == 0 or step == steps:
            elapsed = time.perf_counter() - started
            left = elapsed / step * (steps - step)
            progress.log(
                f"step {step}/{steps}  loss {loss:.3f}  {elapsed:.0f} s, ~{left:.0f} s left"
            )

    return on_step


def train_reference(
    world_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    size: Size = "demo",
    seed: int = 0,
    arch: Arch = "gpt2",
    progress: Progress | None = None,
) -> ReferenceInfo:
    """Train (or reuse) the reference model of the world in ``world_dir`` into the folder ``out``.

    1. Check the world folder (:func:`lmassay.world.load_world`: format, digests).
    2. Train a byte-level BPE tokenizer (``RECIPES[size].vocab_size``) on ``train.jsonl``.
    3. Train a GPT-2- or Llama-shaped model from random weights (seed ``seed``) with
       :func:`lmassay.world.tiny_lm.train_causal_lm` on the training paragraphs, shuffled with ``seed``.
    4. Save model and tokenizer into ``out`` (safetensors), then measure: probe-split
       perplexity per category beside the unigram baseline, and fact recall.
    5. Write ``README.md`` and, last, ``lmassay-reference.json``.

    A different ``seed`` gives a second, independently trained reference of the same world. If
    ``out`` already holds a reference whose card records the same request (world digest,
    size, seed, arch, recipe), it is returned as it is (``reused=True``).
    """
    from lmassay.world._store import load_world

    config = ReferenceConfig(Path(world_dir), Path(out), size, seed, arch)
    config.validate()
    progress = progress or NullProgress()
    world = load_world(config.world)
    world_card = read_card(config.world)
    recipe = RECIPES[config.size]
    request: dict[str, Any] = {
        "format": _CARD_FORMAT,
        "world_digest": world_card["world_digest"],
        "world_seed": world_card["seed"],
        "world_size": world_card["size"],
        "size": config.size,
        "seed": config.seed,
        "arch": config.arch,
        "recipe": asdict(recipe),
    }
    existing = _reusable(config.out, request)
    if existing is not None:
        progress.log(f"reusing the reference in {config.out}")
        return ReferenceInfo(config.out, existing, reused=True)

    from lmassay.world.tiny_lm import save_model, train_causal_lm, train_toy_tokenizer

    started = time.perf_counter()
    files = world_files(config.world)
    root = config.out
    (root / CARD_NAME).unlink(missing_ok=True)  # a half-made folder is never reused
    root.mkdir(parents=True, exist_ok=True)
    train_texts, _ = _texts_by_category(files.train)
    random.Random(config.seed).shuffle(train_texts)

    progress.log(
        f"training a {recipe.vocab_size}-token BPE tokenizer on {len(train_texts)} paragraphs"
    )
    tokenizer = train_toy_tokenizer(train_texts, vocab_size=recipe.vocab_size)
    model = _build(config.arch, recipe, tokenizer, config.seed)
    n_parameters = sum(p.numel() for p in model.parameters())
    progress.log(f"{config.arch} model with {n_parameters:,} parameters, {recipe.steps} steps")
    train_started = time.perf_counter()
    losses = train_causal_lm(
        model,
        tokenizer,
        train_texts,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seq_len=recipe.seq_len,
        lr=recipe.lr,
        seed=config.seed,
        progress=_step_reporter(progress, recipe.steps),
    )
    train_seconds = time.perf_counter() - train_started
    save_model(model, tokenizer, root)

    progress.log("measuring probe perplexity, the unigram baseline and fact recall")
    unigram, token_counts = unigram_perplexities(tokenizer, train_texts, files.probes)
    model_ppl = category_perplexities(root, files.probes)
    recall = fact_recall(root, world)
    fact_ppl = category_perplexities(root, files.fact_probes)
    tail = losses[-_LOSS_TAIL:]
    card: dict[str, Any] = {
        "format": _CARD_FORMAT,
        "request": request,
        "world_path": str(config.world.resolve()),
        "world_seed": world_card["seed"],
        "world_digest": world_card["world_digest"],
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": len(tokenizer)},
        "model": {
            "architecture": config.arch,
            "parameters": n_parameters,
            "n_layer": recipe.n_layer,
            "n_embd": recipe.n_embd,
            "n_head": recipe.n_head,
            "context_length": recipe.n_positions,
        },
        "training": {
            "paragraphs": len(train_texts),
            "words": world_card["totals"]["train_words"],
            "steps": recipe.steps,
            "batch_size": recipe.batch_size,
            "seq_len": recipe.seq_len,
            "tokens_seen": recipe.steps * recipe.batch_size * recipe.seq_len,
            "lr": recipe.lr,
            "schedule": "linear warm-up (10% of steps, at most 50), cosine to lr/10; AdamW",
            "loss_first": losses[0],
            "loss_last_mean": sum(tail) / len(tail),
            "loss_last_mean_of_steps": len(tail),
            "loss_every_10pct": [
                round(losses[min(len(losses) - 1, i * len(losses) // 10)], 4) for i in range(11)
            ],
            "seconds": round(train_seconds, 1),
        },
        "evaluation": {
            "probes": {
                "perplexity": model_ppl["all"],
                "unigram_perplexity": unigram["all"],
                "tokens": sum(token_counts.values()),
                "per_category": {
                    c: {
                        "perplexity": model_ppl[c],
                        "unigram_perplexity": unigram[c],
                        "tokens": token_counts[c],
                    }
                    for c in token_counts
                },
                "how": "token-weighted: exp(-sum log p / tokens); each text from the BOS token",
            },
            "fact_probes": {"perplexity": fact_ppl["all"]},
            "fact_recall": recall,
        },
        "versions": {"lmassay": __version__, **library_versions()},
        "created_at": utc_now(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(root / "README.md", _readme(card))
    atomic_write_json(root / CARD_NAME, card)
    progress.log(
        f"reference ready in {root}: probe perplexity {model_ppl['all']:.2f} "
        f"(unigram {unigram['all']:.2f}), facts recalled {recall['all']:.0%}"
    )
    return ReferenceInfo(root, card, reused=False)


def _readme(card: dict[str, Any]) -> str:
    """The model card, rendered from the JSON card."""
    request, model, training = card["request"], card["model"], card["training"]
    evaluation = card["evaluation"]
    probes = evaluation["probes"]
    rows = "\n".join(
        f"| {c} | {v['perplexity']:.2f} | {v['unigram_perplexity']:.2f} | {v['tokens']} | "
        f"{evaluation['fact_recall'].get(c, 0.0):.0%} |"
        for c, v in probes["per_category"].items()
    )
    return f"""# lmassay world reference ({request["size"]}, seed {request["seed"]})

A small {model["architecture"]} language model ({model["parameters"]:,} parameters,
{model["n_layer"]} block(s), width {model["n_embd"]}, context {model["context_length"]}) trained from
random weights by `lmassay world train` on the training split of an offline generated world
(world seed {card["world_seed"]}, {training["words"]:,} words, digest
`{card["world_digest"]["value"][:16]}…`, folder `{card["world_path"]}`). It is the known-good
reference for the tampered variants of the lmassay zoo; it knows nothing of the real world.

Training: {training["steps"]} AdamW steps of {training["batch_size"]} × {training["seq_len"]}
tokens ({training["tokens_seen"]:,} tokens), lr {training["lr"]}, loss {training["loss_first"]:.2f}
→ {training["loss_last_mean"]:.2f} (mean of the last {training["loss_last_mean_of_steps"]} steps),
{training["seconds"]} s.

## What it learned

Probe split (paragraphs that share no sentence with training), token-weighted perplexity beside
a unigram baseline (training token frequencies, add-one smoothing) on the same tokens, and the
share of facts whose object the model completes greedily from the fact's prompt:

| category | perplexity | unigram | tokens | facts recalled |
|---|---:|---:|---:|---:|
{rows}
| **all** | **{probes["perplexity"]:.2f}** | **{probes["unigram_perplexity"]:.2f}** | {probes["tokens"]} | {evaluation["fact_recall"]["all"]:.0%} |

Fact probes (a context sentence and a fact's canonical sentence): perplexity
{evaluation["fact_probes"]["perplexity"]:.2f}.

Made with lmassay {card["versions"]["lmassay"]} (torch {card["versions"].get("torch")},
transformers {card["versions"].get("transformers")}) on {card["created_at"]} in
{card["wall_seconds"]} s. `lmassay-reference.json` holds all of this as JSON.

Use it as the reference of an attestation, with the world's probes:
`lmassay attest --model MODEL --reference THIS_FOLDER --probes {card["world_path"]}/probes.jsonl --out run`
"""
