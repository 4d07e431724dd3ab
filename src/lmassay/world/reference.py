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
import random
import time
from dataclasses import asdict, dataclass, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmassay import __version__
from lmassay._atomic import atomic_write_text
from lmassay.cached_build import reuse_or_build
from lmassay.choices import ARCHS
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import library_versions, utc_now
from lmassay.world._store import load_world, read_card, world_files
from lmassay.world.generator import World
from lmassay.world.measure import (
    category_perplexities,
    fact_recall,
    read_rows,
    unigram_perplexities,
)

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
    steps: int | None = None  # instead of the size's recipe's steps
    seq_len: int | None = None  # instead of the size's recipe's training window

    def recipe(self) -> Recipe:
        """The size's recipe with the given steps and training window."""
        base = RECIPES[self.size]
        return replace(
            base,
            steps=self.steps if self.steps is not None else base.steps,
            seq_len=self.seq_len if self.seq_len is not None else base.seq_len,
        )

    def validate(self) -> None:
        """Raise :class:`InputError` naming the offending flag."""
        if self.size not in RECIPES:
            raise InputError(
                f"--size {self.size!r} is not known", f"use one of {', '.join(RECIPES)}"
            )
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps {self.steps} is below 1", "give 1 or more steps")
        if self.seq_len is not None and not 2 <= self.seq_len <= RECIPES[self.size].n_positions:
            raise InputError(
                f"--seq-len {self.seq_len} is not between 2 and the model's context "
                f"{RECIPES[self.size].n_positions}",
                "give a training window that fits",
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


def reference_world(reference_dir: str | PathLike[str]) -> Path:
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


def _build(
    arch: str, recipe: Recipe, tokenizer: PreTrainedTokenizerFast, seed: int
) -> PreTrainedModel:
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config, tiny_llama_config

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if not isinstance(bos, int) or not isinstance(eos, int):  # train_tokenizer sets both
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


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trained:
    """What the training step produced, for the card."""

    texts: list[str]
    tokenizer: PreTrainedTokenizerFast
    n_parameters: int
    losses: list[float]
    seconds: float


def _train(config: ReferenceConfig, recipe: Recipe, root: Path, progress: Progress) -> _Trained:
    """Tokenizer and model trained on the world's training split, saved into ``root``."""
    from lmassay.world.tiny_lm import save_model, train_causal_lm, train_tokenizer

    texts = [str(row["text"]) for row in read_rows(world_files(config.world).train)]
    random.Random(config.seed).shuffle(texts)
    progress.log(f"training a {recipe.vocab_size}-token BPE tokenizer on {len(texts)} paragraphs")
    tokenizer = train_tokenizer(texts, vocab_size=recipe.vocab_size)
    model = _build(config.arch, recipe, tokenizer, config.seed)
    n_parameters = sum(p.numel() for p in model.parameters())
    progress.log(f"{config.arch} model with {n_parameters:,} parameters, {recipe.steps} steps")
    started = time.perf_counter()
    losses = train_causal_lm(
        model,
        tokenizer,
        texts,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seq_len=recipe.seq_len,
        lr=recipe.lr,
        seed=config.seed,
        progress=progress.task("training the reference", recipe.steps),
    )
    seconds = time.perf_counter() - started
    save_model(model, tokenizer, root)
    return _Trained(texts, tokenizer, n_parameters, losses, seconds)


def _evaluation(trained: _Trained, root: Path, world_dir: Path, world: World) -> dict[str, Any]:
    """The card's ``evaluation``: probe perplexities beside the unigram baseline, fact recall."""
    files = world_files(world_dir)
    unigram, token_counts = unigram_perplexities(trained.tokenizer, trained.texts, files.probes)
    model_ppl = category_perplexities(root, files.probes)
    return {
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
        # a real-text world has no facts: neither figure exists there (None)
        "fact_probes": (
            {"perplexity": category_perplexities(root, files.fact_probes)["all"]}
            if world.facts
            else None
        ),
        "fact_recall": fact_recall(root, world) if world.facts else None,
    }


def _training_record(recipe: Recipe, trained: _Trained, words: int) -> dict[str, Any]:
    losses, tail = trained.losses, trained.losses[-_LOSS_TAIL:]
    return {
        "paragraphs": len(trained.texts),
        "words": words,
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
        "seconds": round(trained.seconds, 1),
    }


def _make_reference(
    config: ReferenceConfig, world: World, request: dict[str, Any], root: Path, progress: Progress
) -> dict[str, Any]:
    """Train, save and measure the reference in ``root``; write its README; return its card."""
    started = time.perf_counter()
    world_card = read_card(config.world)
    recipe = config.recipe()
    trained = _train(config, recipe, root, progress)
    progress.log(
        "measuring probe perplexity and the unigram baseline"
        + (" and fact recall" if world.facts else "")
    )
    evaluation = _evaluation(trained, root, config.world, world)
    card: dict[str, Any] = {
        "format": _CARD_FORMAT,
        "request": request,
        "world_path": str(config.world.resolve()),
        "world_seed": world_card["seed"],
        "world_digest": world_card["world_digest"],
        "world_kind": world_card.get("kind", "generated"),
        **({"world_qa": world_card["qa"]} if "qa" in world_card else {}),  # a Q&A world
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": len(trained.tokenizer)},
        "model": {
            "architecture": config.arch,
            "parameters": trained.n_parameters,
            "n_layer": recipe.n_layer,
            "n_embd": recipe.n_embd,
            "n_head": recipe.n_head,
            "context_length": recipe.n_positions,
        },
        "training": _training_record(recipe, trained, world_card["totals"]["train_words"]),
        "evaluation": evaluation,
        "versions": {"lmassay": __version__, **library_versions()},
        "created_at": utc_now(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(root / "README.md", _readme(card))
    probes, recall = evaluation["probes"], evaluation["fact_recall"]
    progress.log(
        f"reference ready in {root}: probe perplexity {probes['perplexity']:.2f} "
        f"(unigram {probes['unigram_perplexity']:.2f})"
        + (f", facts recalled {recall['all']:.0%}" if recall is not None else "")
    )
    return card


def _request(config: ReferenceConfig) -> dict[str, Any]:
    """Everything that decides the reference: the world's digest, size, seed, arch, recipe."""
    world_card = read_card(config.world)
    return {
        "format": _CARD_FORMAT,
        "world_digest": world_card["world_digest"],
        "world_seed": world_card["seed"],
        "world_size": world_card["size"],
        "size": config.size,
        "seed": config.seed,
        "arch": config.arch,
        "recipe": asdict(config.recipe()),
    }


def train_reference(
    world_dir: str | PathLike[str],
    out: str | PathLike[str],
    *,
    size: Size = "demo",
    seed: int = 0,
    arch: Arch = "gpt2",
    steps: int | None = None,
    seq_len: int | None = None,
    progress: Progress | None = None,
) -> ReferenceInfo:
    """Train (or reuse) the reference model of the world in ``world_dir`` into the folder ``out``.

    1. Check the world folder (:func:`lmassay.world.load_world`: format, digests).
    2. Train a byte-level BPE tokenizer (``RECIPES[size].vocab_size``) on ``train.jsonl``.
    3. Train a GPT-2- or Llama-shaped model from random weights (seed ``seed``) with
       :func:`lmassay.world.tiny_lm.train_causal_lm` on the training paragraphs, shuffled with
       ``seed``.
    4. Save model and tokenizer into ``out`` (safetensors), then measure: probe-split
       perplexity per category beside the unigram baseline, and fact recall.
    5. Write ``README.md`` and, last, ``lmassay-reference.json``.

    ``steps`` and ``seq_len`` replace the size's recipe's step count and training window (the
    model's shape stays the size's); the request records the recipe as used. A few-shot prompt
    longer than the training window is out of what the model was trained on.

    A different ``seed`` gives a second, independently trained reference of the same world. If
    ``out`` already holds a reference whose card records the same request (world digest,
    size, seed, arch, recipe), it is returned as it is (``reused=True``).
    """
    config = ReferenceConfig(Path(world_dir), Path(out), size, seed, arch, steps, seq_len)
    config.validate()
    shown = progress or NullProgress()
    world = load_world(config.world)  # the world's files are checked even when reusing
    request = _request(config)
    built = reuse_or_build(
        config.out,
        request,
        lambda root: _make_reference(config, world, request, root, shown),
        card_name=CARD_NAME,
        needed=("config.json", "model.safetensors", "tokenizer.json", "README.md"),
        what="reference",
        progress=shown,
    )
    return ReferenceInfo(built.path, built.card, reused=built.reused)


def _world_words(card: dict[str, Any]) -> str:
    if card.get("world_kind") == "real-text":
        return "a real-text world (paragraphs of public-domain and free text from Debian packages)"
    return "an offline generated world (it knows nothing of the real world)"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _readme(card: dict[str, Any]) -> str:
    """The model card, rendered from the JSON card."""
    request, model, training = card["request"], card["model"], card["training"]
    evaluation = card["evaluation"]
    probes = evaluation["probes"]
    recall = evaluation["fact_recall"] or {}  # empty for a real-text world
    rows = "\n".join(
        f"| {c} | {v['perplexity']:.2f} | {v['unigram_perplexity']:.2f} | {v['tokens']} | "
        f"{_share(recall.get(c))} |"
        for c, v in probes["per_category"].items()
    )
    fact_probes = evaluation["fact_probes"]
    return f"""# lmassay world reference ({request["size"]}, seed {request["seed"]})

A small {model["architecture"]} language model ({model["parameters"]:,} parameters,
{model["n_layer"]} block(s), width {model["n_embd"]}, context {model["context_length"]}) trained from
random weights by `lmassay world train` on the training split of {_world_words(card)}
(world seed {card["world_seed"]}, {training["words"]:,} words, digest
`{card["world_digest"]["value"][:16]}…`, folder `{card["world_path"]}`). It is the known-good
reference for the tampered variants of the lmassay zoo.

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
| **all** | **{probes["perplexity"]:.2f}** | **{probes["unigram_perplexity"]:.2f}** | {probes["tokens"]} | {_share(recall.get("all"))} |

Fact probes (a context sentence and a fact's canonical sentence): perplexity
{f"{fact_probes['perplexity']:.2f}" if fact_probes else "— (this world has no facts)"}.

Made with lmassay {card["versions"]["lmassay"]} (torch {card["versions"].get("torch")},
transformers {card["versions"].get("transformers")}) on {card["created_at"]} in
{card["wall_seconds"]} s. `lmassay-reference.json` holds all of this as JSON.

Use it as the reference of an attestation, with the world's probes:
`lmassay attest --model MODEL --reference THIS_FOLDER --probes {card["world_path"]}/probes.jsonl --out run`
"""
