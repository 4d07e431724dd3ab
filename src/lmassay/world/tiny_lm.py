"""An offline toy world: generated text, a tiny tokenizer, a reference model and a tampered copy.

Everything here is made on the spot, from a seed, with no network: the demo and the tests use it
in place of models from the Hugging Face hub.

* :func:`generate_toy_corpus` writes short English paragraphs about a few clearly different
  topics (cooking, weather, sport, ...), each with its own vocabulary and sentence templates.
* :func:`train_toy_tokenizer` trains a small byte-level BPE tokenizer on them.
* :func:`tiny_gpt2_config`, :func:`tiny_llama_config` and :func:`build_model` make tiny, randomly
  initialised causal language models.
* :func:`train_causal_lm` is a plain AdamW loop over the concatenated, tokenised texts.
* :func:`build_toy_pair` puts these together: a reference model trained on every topic, and a copy
  fine-tuned a little further on one topic only (a "topic tampering"), with a probe corpus that
  shares no paragraph with the training text, and a ``toy.json`` card saying how all was made.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmassay import __version__
from lmassay._atomic import atomic_write_json, atomic_write_jsonl
from lmassay.digests import digest_file, digest_tree
from lmassay.errors import InputError
from lmassay.progress import hidden_library_bars

if TYPE_CHECKING:
    from transformers import (
        GPT2Config,
        LlamaConfig,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerFast,
    )

__all__ = [
    "DEFAULT_CATEGORIES",
    "EOT_TOKEN",
    "ToyPair",
    "build_model",
    "build_toy_pair",
    "copy_model_dir",
    "generate_toy_corpus",
    "save_model",
    "tiny_gpt2_config",
    "tiny_llama_config",
    "train_causal_lm",
    "train_toy_tokenizer",
]

EOT_TOKEN = "<|endoftext|>"
"""The one special token of the toy tokenizer: beginning and end of text, and padding."""

# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    """The vocabulary and sentence templates of one category."""

    agents: tuple[str, ...]  # noun phrases that act: "the chef"
    nouns: tuple[str, ...]  # things: "onion"
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]  # past tense, transitive: "chopped"
    places: tuple[str, ...]  # prepositional phrases: "in the kitchen"
    templates: tuple[str, ...]  # sentence templates; slots are listed in _sentence


def _words(text: str) -> tuple[str, ...]:
    """``"a, b c, d"`` -> ``("a", "b c", "d")``."""
    return tuple(word.strip() for word in text.split(","))


# Times of day, shared by every category (the {time} slot).
_TIMES: tuple[str, ...] = (
    "on monday",
    "on friday",
    "last night",
    "this morning",
    "every evening",
    "in the afternoon",
    "at dawn",
    "before noon",
    "later that week",
    "in early spring",
    "during the holidays",
    "yesterday",
)

_TOPICS: dict[str, _Topic] = {
    "cooking": _Topic(
        agents=_words("the chef, my grandmother, the baker, the cook, our host, the waiter"),
        nouns=_words(
            "onion, garlic, sauce, pastry, dough, soup, butter, pepper, noodle, lemon, tomato, "
            "potato, cake, stew, spoon, skillet"
        ),
        adjectives=_words(
            "crispy, salty, creamy, spicy, tender, golden, sweet, buttery, savory, fresh"
        ),
        verbs=_words(
            "chopped, stirred, baked, roasted, seasoned, simmered, whisked, sliced, fried, tasted"
        ),
        places=_words("in the kitchen, on the stove, in the oven, at the counter, in the pan"),
        templates=(
            "add {num} spoons of {adj} {noun} and stir for {num2} minutes.",
            "the recipe asks for {noun}, {noun2} and a pinch of salt.",
            "{agent} {verb} the {noun} until it turned {adj} and smelled wonderful.",
            "serve the {adj} {noun} warm with {noun2} on the side.",
            "{agent} {verb} the {adj} {noun} {place} {time}.",
        ),
    ),
    "weather": _Topic(
        agents=_words(
            "the forecaster, the pilot, the farmer, the meteorologist, the sailor, the radio"
        ),
        nouns=_words(
            "cloud, storm, breeze, drizzle, thunder, fog, frost, hail, rainbow, front, gust, "
            "shower, haze, snowfall, puddle, barometer"
        ),
        adjectives=_words(
            "humid, chilly, stormy, foggy, windy, freezing, muggy, cloudy, overcast, damp"
        ),
        verbs=_words(
            "predicted, measured, tracked, reported, watched, recorded, warned about, mapped, "
            "observed, expected"
        ),
        places=_words(
            "over the hills, along the coast, above the valley, across the plains, near the harbor"
        ),
        templates=(
            "the temperature dropped to {num} degrees as a {adj} {noun} moved in from the west.",
            "winds of {num} miles per hour brought {noun} and {noun2} {place}.",
            "{agent} {verb} a {adj} {noun} for the weekend, with rain likely {place}.",
            "the sky grew {adj} and the {noun} lasted for {num2} hours.",
            "{agent} said that the {noun} would clear {time}.",
        ),
    ),
    "sport": _Topic(
        agents=_words(
            "the striker, the coach, the goalkeeper, the captain, the referee, the sprinter"
        ),
        nouns=_words(
            "goal, match, ball, trophy, penalty, team, league, stadium, tackle, medal, season, "
            "jersey, whistle, record, header, final"
        ),
        adjectives=_words(
            "fast, brilliant, fierce, athletic, decisive, narrow, thrilling, muscular, unbeaten, "
            "agile"
        ),
        verbs=_words(
            "kicked, scored, defended, passed, blocked, won, trained for, celebrated, tackled, "
            "chased"
        ),
        places=_words(
            "on the pitch, at the stadium, in the locker room, on the track, near the goal line"
        ),
        templates=(
            "the home team won {num} to {num2} after a {adj} second half.",
            "{agent} {verb} the {noun} past the defenders and the crowd roared.",
            "fans waved flags as the {adj} {noun} began {place}.",
            "after {num} minutes, {agent} blew the whistle and the {noun} was over.",
            "the {adj} {noun} {place} was the talk of the town {time}.",
        ),
    ),
    "finance": _Topic(
        agents=_words(
            "the banker, the investor, the trader, the accountant, the analyst, the auditor"
        ),
        nouns=_words(
            "stock, bond, dividend, portfolio, loan, interest, budget, invoice, profit, share, "
            "currency, mortgage, asset, fund, ledger, deposit"
        ),
        adjectives=_words(
            "profitable, volatile, risky, quarterly, liquid, bullish, bearish, fiscal, taxable, "
            "solvent"
        ),
        verbs=_words(
            "bought, sold, audited, invested in, borrowed, hedged, traded, valued, repaid, priced"
        ),
        places=_words("at the bank, on the exchange, in the market, at the office, on wall street"),
        templates=(
            "shares rose {num} percent after the {adj} earnings report.",
            "{agent} {verb} the {noun} when interest rates fell by {num} points.",
            "the {adj} {noun} paid a dividend of {num} dollars per share.",
            "investors worried that the {noun} and the {noun2} were too {adj}.",
            "the {adj} {noun} closed higher {time} as {agent} {verb2} more.",
        ),
    ),
    "astronomy": _Topic(
        agents=_words(
            "the astronomer, the telescope, the probe, the observatory, the astronaut, the student"
        ),
        nouns=_words(
            "planet, comet, galaxy, nebula, orbit, asteroid, moon, star, eclipse, meteor, quasar, "
            "pulsar, crater, spectrum, supernova, cluster"
        ),
        adjectives=_words(
            "distant, luminous, celestial, icy, gaseous, faint, massive, stellar, cosmic, orbital"
        ),
        verbs=_words(
            "observed, photographed, discovered, mapped, orbited, measured, detected, studied, "
            "tracked, charted"
        ),
        places=_words(
            "in the night sky, beyond the moon, near the horizon, in deep space, across the galaxy"
        ),
        templates=(
            "the light from the {adj} {noun} took {num} million years to reach us.",
            "{agent} {verb} a {adj} {noun} circling a star {num2} light years away.",
            "through the lens, the {noun} and the {noun2} shone {place}.",
            "a {adj} {noun} crossed the sky at {num} kilometers per second.",
            "the {adj} {noun} will be visible {place} {time}.",
        ),
    ),
    "gardening": _Topic(
        agents=_words(
            "the gardener, my neighbor, the florist, the botanist, the groundskeeper, my aunt"
        ),
        nouns=_words(
            "rose, tulip, seedling, compost, hedge, fern, daisy, shrub, bulb, vine, orchid, lawn, "
            "trowel, mulch, sunflower, weed"
        ),
        adjectives=_words(
            "leafy, blooming, fragrant, thorny, lush, wilted, potted, organic, shady, fertile"
        ),
        verbs=_words(
            "planted, pruned, watered, weeded, repotted, fertilized, harvested, trimmed, dug up, "
            "mulched"
        ),
        places=_words(
            "in the greenhouse, along the fence, in the flower bed, by the pond, in the backyard"
        ),
        templates=(
            "plant the {noun} {num} inches deep in {adj} soil.",
            "{agent} {verb} the {noun} so that the {noun2} would get more sun.",
            "the {adj} {noun} bloomed for {num} weeks {place}.",
            "water the {noun} every {num2} days and keep the {noun2} free of weeds.",
            "the {adj} {noun} looked its best {time}, {place}.",
        ),
    ),
}

DEFAULT_CATEGORIES: tuple[str, ...] = tuple(_TOPICS)
"""The categories of the toy world, in a fixed order."""

_MIN_WORDS, _MAX_WORDS = 30, 90
_MIN_SENTENCES, _MAX_SENTENCES = 2, 5
_SLOT = re.compile(r"\{(\w+)\}")
_SKEW = 2  # the tampered text uses only the first 2 nouns, adjectives and verbs of its topic
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiou])")


def _sentence(rng: random.Random, topic: _Topic) -> str:
    """One sentence: a template of the topic with its slots filled, capitalised."""
    template = rng.choice(topic.templates)
    nouns = rng.sample(topic.nouns, 2)
    adjectives = rng.sample(topic.adjectives, 2)
    verbs = rng.sample(topic.verbs, 2)
    values = {
        "agent": rng.choice(topic.agents),
        "noun": nouns[0],
        "noun2": nouns[1],
        "adj": adjectives[0],
        "adj2": adjectives[1],
        "verb": verbs[0],
        "verb2": verbs[1],
        "place": rng.choice(topic.places),
        "time": rng.choice(_TIMES),
        "num": str(rng.randint(2, 99)),
        "num2": str(rng.randint(2, 30)),
    }
    text = _SLOT.sub(lambda match: values[match.group(1)], template)
    text = _ARTICLE.sub(r"\1n ", text)  # "a icy moon" -> "an icy moon"
    return text[0].upper() + text[1:]


def _paragraph(rng: random.Random, topic: _Topic) -> str:
    """2 to 5 sentences, 30 to 90 words."""
    sentences = [_sentence(rng, topic) for _ in range(rng.randint(_MIN_SENTENCES, _MAX_SENTENCES))]
    while sum(len(s.split()) for s in sentences) < _MIN_WORDS:
        sentences.append(_sentence(rng, topic))
    while sum(len(s.split()) for s in sentences) > _MAX_WORDS and len(sentences) > _MIN_SENTENCES:
        sentences.pop()
    return " ".join(sentences)


def _check_categories(categories: Sequence[str]) -> None:
    unknown = [c for c in categories if c not in _TOPICS]
    if unknown or not categories:
        raise InputError(
            f"unknown toy categories {unknown}" if unknown else "no toy categories given",
            f"choose among {', '.join(DEFAULT_CATEGORIES)}",
        )
    if len(set(categories)) != len(categories):
        raise InputError(f"toy categories repeat: {list(categories)}", "name each category once")


def _skewed(topic: _Topic) -> _Topic:
    """The topic as the tampering rewrites it: only a few favourite nouns, adjectives and verbs."""
    return replace(
        topic,
        nouns=topic.nouns[:_SKEW],
        adjectives=topic.adjectives[:_SKEW],
        verbs=topic.verbs[:_SKEW],
    )


def _generate(
    seed: int,
    n_per_category: int,
    categories: Sequence[str],
    exclude: frozenset[str],
    *,
    skew: bool = False,
) -> list[tuple[str, str]]:
    """Distinct paragraphs, none of them in ``exclude``; grouped by category in the given order.

    With ``skew``, each topic is replaced by :func:`_skewed` of it.
    """
    _check_categories(categories)
    if n_per_category < 0:
        raise InputError(f"n_per_category is {n_per_category}", "give a count >= 0")
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen = set(exclude)
    for category in categories:
        topic = _skewed(_TOPICS[category]) if skew else _TOPICS[category]
        made = tries = 0
        while made < n_per_category:
            tries += 1
            if tries > 100 * n_per_category + 1000:
                raise InputError(
                    f"cannot make {n_per_category} distinct {category!r} paragraphs",
                    "ask for fewer",
                )
            text = _paragraph(rng, topic)
            if text in seen:
                continue
            seen.add(text)
            rows.append((category, text))
            made += 1
    return rows


def generate_toy_corpus(
    seed: int, n_per_category: int, categories: Sequence[str] = DEFAULT_CATEGORIES
) -> list[tuple[str, str]]:
    """Generate ``n_per_category`` distinct paragraphs for each category, as ``(category, text)``.

    Each paragraph has 2 to 5 sentences and 30 to 90 words. Categories have their own nouns,
    verbs, adjectives, people, places and sentence templates, and share function words and
    times of day. The output depends only on the arguments (a private
    ``random.Random(seed)``); rows come grouped by category, in the order of ``categories``.
    """
    return _generate(seed, n_per_category, categories, frozenset())


# --------------------------------------------------------------------------------------------
# Tokenizer and models
# --------------------------------------------------------------------------------------------


def train_toy_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    The vocabulary has the 256 byte symbols, :data:`EOT_TOKEN` (id 0; it is the BOS, EOS, UNK
    and padding token) and merges up to ``vocab_size``. Every string round-trips, since any byte
    has a token. Encoding adds no special token: callers add the BOS themselves.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise InputError(f"vocab_size is {vocab_size}", "give at least 257 (256 bytes + EOT)")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def tiny_gpt2_config(
    vocab_size: int,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 128,
    *,
    bos_token_id: int = 0,
    eos_token_id: int = 0,
) -> GPT2Config:
    """A GPT-2 configuration of a few layers, without dropout (training is then deterministic)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        n_inner=4 * n_embd,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def tiny_llama_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 128,
    *,
    num_key_value_heads: int | None = None,
    bos_token_id: int = 0,
    eos_token_id: int = 0,
) -> LlamaConfig:
    """A Llama configuration of a few layers, with untied input and output embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads or num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )


def build_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    """A causal LM with random weights from ``config``: seeded, float32, in eval mode.

    The global torch random state is left as it was.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(torch.float32)
    model.eval()
    return model


def copy_model_dir(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy a model folder (files followed through links) to ``dst``, which must not exist yet."""
    source, target = Path(src), Path(dst)
    if not (source / "config.json").is_file():
        raise InputError(f"{source} is not a model folder (no config.json)", "give a model folder")
    if target.exists():
        raise InputError(f"{target} already exists", "remove it or choose another destination")
    shutil.copytree(source, target, symlinks=False)
    return target


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextmanager
def _torch_threads() -> Iterator[None]:
    """Use at most as many torch threads as this process may run on; restore the count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, _available_cpus())))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps and return the loss of each step.

    The texts are tokenised and joined into one stream, ``EOT text EOT text ... EOT``. Each step
    takes ``batch_size`` windows of ``seq_len`` tokens at random offsets and minimises the mean
    next-token cross-entropy. The learning rate warms up linearly over the first 10% of steps
    (at most 50), then follows a cosine from ``lr`` down to ``lr / 10``. Gradients are clipped to
    norm 1. Sampling uses a private generator seeded with ``seed``, so the result depends only on
    the arguments. The model is left in eval mode. ``progress(step, loss)`` is called after each
    step (steps count from 1).
    """
    import torch

    if steps < 1 or batch_size < 1 or seq_len < 2 or not lr > 0:
        raise InputError(
            f"training needs steps, batch_size >= 1, seq_len >= 2 and lr > 0; got steps={steps}, "
            f"batch_size={batch_size}, seq_len={seq_len}, lr={lr}",
            "fix the training arguments",
        )
    eot = tokenizer.eos_token_id
    if not isinstance(eot, int):
        raise InputError("the tokenizer has no EOS token", "give a tokenizer with an EOS token")
    stream: list[int] = [eot]
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eot)
    data = torch.tensor(stream, dtype=torch.long)  # (N,)
    if data.numel() < seq_len + 1:
        raise InputError(
            f"the training text has {data.numel()} tokens, fewer than seq_len + 1 = {seq_len + 1}",
            "give more text or a shorter seq_len",
        )

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, min(50, steps // 10))

    def lr_at(step: int) -> float:  # step counts from 0
        if step < warmup:
            return lr * (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * done)))

    offsets = torch.arange(seq_len)  # (T,)
    losses: list[float] = []
    model.train()
    try:
        with _torch_threads():
            for step in range(steps):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                starts = torch.randint(
                    0, data.numel() - seq_len, (batch_size,), generator=generator
                )
                batch = data[starts[:, None] + offsets]  # (B, T)
                mask = torch.ones_like(batch)  # (B, T): windows have no padding
                loss = model(input_ids=batch, attention_mask=mask, labels=batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(float(loss.detach()))
                if progress is not None:
                    progress(step + 1, losses[-1])
    finally:
        model.eval()
    return losses


# --------------------------------------------------------------------------------------------
# The reference / tampered pair
# --------------------------------------------------------------------------------------------

_CARD_FORMAT = "lmassay-toy-pair/1"  # change it when the same request would make other files
_PROBE_SEED_OFFSET = 1_000_003
_TAMPER_SEED_OFFSET = 2_000_003
_LOSS_TAIL = 10  # the card's loss_last_mean is the mean loss of the last 10 steps


@dataclass(frozen=True)
class _Recipe:
    """Everything that decides what :func:`build_toy_pair` makes, for one size."""

    n_train_per_category: int
    n_probe_per_category: int
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    tamper_steps: int
    tamper_batch_size: int
    tamper_lr: float


_RECIPES: dict[str, _Recipe] = {
    "test": _Recipe(
        n_train_per_category=200,
        n_probe_per_category=12,
        vocab_size=2048,
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=128,
        steps=1200,
        batch_size=4,
        seq_len=64,
        lr=3e-3,
        tamper_steps=300,
        tamper_batch_size=2,
        tamper_lr=5e-5,
    ),
    "demo": _Recipe(
        n_train_per_category=400,
        n_probe_per_category=24,
        vocab_size=2048,
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=128,
        steps=2500,
        batch_size=8,
        seq_len=64,
        lr=3e-3,
        tamper_steps=400,
        tamper_batch_size=2,
        tamper_lr=5e-5,
    ),
}


@dataclass(frozen=True)
class ToyPair:
    """Where :func:`build_toy_pair` put its output, and its card (the content of ``toy.json``)."""

    reference: Path
    """Model folder (safetensors, config, tokenizer) of the reference model."""
    tampered: Path
    """Model folder of the copy fine-tuned on the tamper category."""
    probes: Path
    """``probes.jsonl``: ``{"id", "category", "text"}`` per line; no paragraph is in training."""
    train_texts: Path
    """``train.jsonl``: the reference's training paragraphs, in the same format."""
    tamper_texts: Path
    """``tamper.jsonl``: the paragraphs the tampered copy was trained on, in the same format."""
    card_path: Path
    """``toy.json``: how the pair was made."""
    card: dict[str, Any]


def _pair(root: Path, card: dict[str, Any]) -> ToyPair:
    return ToyPair(
        reference=root / "reference",
        tampered=root / "tampered",
        probes=root / "probes.jsonl",
        train_texts=root / "train.jsonl",
        tamper_texts=root / "tamper.jsonl",
        card_path=root / "toy.json",
        card=card,
    )


def _existing_pair(root: Path, request: dict[str, Any]) -> ToyPair | None:
    """The pair in ``root`` if it is complete and was made from ``request``; else ``None``."""
    try:
        card = json.loads((root / "toy.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("request") != request:
        return None
    pair = _pair(root, card)
    model_files = ("config.json", "model.safetensors", "tokenizer.json")
    for folder in (pair.reference, pair.tampered):
        if not all((folder / name).is_file() for name in model_files):
            return None
    if not all(p.is_file() for p in (pair.probes, pair.train_texts, pair.tamper_texts)):
        return None
    return pair


@dataclass(frozen=True)
class _Splits:
    train: list[tuple[str, str]]  # every category, grouped by category
    probes: list[tuple[str, str]]  # every category, none in train
    tamper: list[tuple[str, str]]  # the tamper category, skewed; none in train or probes


def _make_splits(seed: int, recipe: _Recipe, tamper_category: str) -> _Splits:
    """Three disjoint sets of paragraphs, from three seeds."""
    train = _generate(seed, recipe.n_train_per_category, DEFAULT_CATEGORIES, frozenset())
    seen = frozenset(text for _, text in train)
    probes = _generate(
        seed + _PROBE_SEED_OFFSET, recipe.n_probe_per_category, DEFAULT_CATEGORIES, seen
    )
    seen |= frozenset(text for _, text in probes)
    tamper = _generate(
        seed + _TAMPER_SEED_OFFSET, recipe.n_train_per_category, [tamper_category], seen, skew=True
    )
    return _Splits(train=train, probes=probes, tamper=tamper)


def _rows(split: list[tuple[str, str]], prefix: str) -> list[dict[str, str]]:
    counts: dict[str, int] = {}
    rows = []
    for category, text in split:
        counts[category] = counts.get(category, 0) + 1
        row_id = f"{prefix}-{category}-{counts[category]:04d}"
        rows.append({"id": row_id, "category": category, "text": text})
    return rows


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """``save_pretrained`` of both, in safetensors, without transformers' progress bars."""
    with hidden_library_bars():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)


def _library_versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "lmassay": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _loss_summary(losses: list[float]) -> dict[str, float]:
    tail = losses[-_LOSS_TAIL:]
    return {"loss_first": losses[0], "loss_last_mean": sum(tail) / len(tail)}


def build_toy_pair(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    tamper_category: str = "cooking",
    size: Literal["test", "demo"] = "demo",
    progress: Callable[[str], None] | None = None,
) -> ToyPair:
    """Make (or reuse) a reference model and a topic-tampered copy of it under ``out_dir``.

    1. Generate three disjoint sets of paragraphs: training (seed ``seed``, every category),
       probes (every category) and tampering (``tamper_category`` only, *skewed*: its
       paragraphs use only the first two nouns, adjectives and verbs of the topic, so the
       tampered model says the same few things about it).
    2. Train a byte-level BPE tokenizer and a tiny GPT-2 on the training text:
       ``out_dir/reference`` (safetensors, config and tokenizer).
    3. Copy it and train the copy further on the tampering text only: ``out_dir/tampered``.
    4. Write ``probes.jsonl``, ``train.jsonl``, ``tamper.jsonl`` and, last, ``toy.json`` (the card).

    If ``out_dir`` already holds a complete pair whose card records the same request (seed, tamper
    category, size and recipe), it is returned as it is. Otherwise the files named above are
    (re)made; other files in ``out_dir`` are left alone. ``progress`` receives one-line messages.

    The ``"test"`` size takes about 20 s on two CPU cores, ``"demo"`` about 60 s.
    """
    if size not in _RECIPES:
        raise InputError(f"unknown toy size {size!r}", f"choose among {', '.join(_RECIPES)}")
    if tamper_category not in DEFAULT_CATEGORIES:
        raise InputError(
            f"unknown tamper category {tamper_category!r}",
            f"choose among {', '.join(DEFAULT_CATEGORIES)}",
        )
    recipe = _RECIPES[size]
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InputError(
            f"--out {str(root)!r} is a file", "pass a folder (it is created if missing)"
        )
    request: dict[str, Any] = {
        "format": _CARD_FORMAT,
        "seed": seed,
        "tamper_category": tamper_category,
        "size": size,
        "categories": list(DEFAULT_CATEGORIES),
        "recipe": asdict(recipe),
    }

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    def every(stage: str, n: int) -> Callable[[int, float], None]:
        def on_step(step: int, loss: float) -> None:
            if step % n == 0:
                say(f"{stage}: step {step}, loss {loss:.3f}")

        return on_step

    existing = _existing_pair(root, request)
    if existing is not None:
        say(f"reusing the toy pair in {root}")
        return existing

    # Set up: the card goes first and comes back last, so a half-made pair is never reused.
    started = time.perf_counter()
    pair = _pair(root, {})
    pair.card_path.unlink(missing_ok=True)
    for folder in (pair.reference, pair.tampered):
        if folder.exists():
            shutil.rmtree(folder)
    root.mkdir(parents=True, exist_ok=True)
    splits = _make_splits(seed, recipe, tamper_category)
    train_texts = [text for _, text in splits.train]
    random.Random(seed).shuffle(train_texts)
    tamper_texts = [text for _, text in splits.tamper]
    say(
        f"generated {len(splits.train)} training, {len(splits.probes)} probe and "
        f"{len(splits.tamper)} tampering paragraphs"
    )

    # Reference: tokenizer and model trained on every category.
    tokenizer = train_toy_tokenizer(train_texts, vocab_size=recipe.vocab_size)
    config = tiny_gpt2_config(
        len(tokenizer),
        n_layer=recipe.n_layer,
        n_embd=recipe.n_embd,
        n_head=recipe.n_head,
        n_positions=recipe.n_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    max_probe_tokens = 1 + max(
        len(ids) for ids in tokenizer([t for _, t in splits.probes])["input_ids"]
    )
    if max_probe_tokens > recipe.n_positions:  # a recipe error, not a user error
        raise RuntimeError(f"a probe has {max_probe_tokens} tokens > {recipe.n_positions}")
    model = build_model(config, seed)
    ref_losses = train_causal_lm(
        model,
        tokenizer,
        train_texts,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seq_len=recipe.seq_len,
        lr=recipe.lr,
        seed=seed,
        progress=every("reference", 250),
    )
    save_model(model, tokenizer, pair.reference)

    # Tampered: a copy of the saved reference, trained further on the tampering text only.
    from transformers import AutoModelForCausalLM

    copy_model_dir(pair.reference, pair.tampered)
    tampered_model = AutoModelForCausalLM.from_pretrained(pair.tampered).float()
    tamper_losses = train_causal_lm(
        tampered_model,
        tokenizer,
        tamper_texts,
        steps=recipe.tamper_steps,
        batch_size=recipe.tamper_batch_size,
        seq_len=recipe.seq_len,
        lr=recipe.tamper_lr,
        seed=seed + 1,
        progress=every("tampering", 100),
    )
    save_model(tampered_model, tokenizer, pair.tampered)

    # Texts, then the card.
    atomic_write_jsonl(pair.probes, _rows(splits.probes, "probe"))
    atomic_write_jsonl(pair.train_texts, _rows(splits.train, "train"))
    atomic_write_jsonl(pair.tamper_texts, _rows(splits.tamper, "tamper"))
    skewed = _skewed(_TOPICS[tamper_category])
    card: dict[str, Any] = {
        "request": request,
        "description": (
            "Toy world made by lmassay.world.tiny_lm.build_toy_pair: a tiny GPT-2 'reference' trained on "
            "generated paragraphs of every category, and a 'tampered' copy trained further on "
            f"skewed {tamper_category!r} paragraphs only (tamper.jsonl). Probes, training and "
            "tampering paragraphs are disjoint."
        ),
        "tamper": {
            "category": tamper_category,
            "kind": "topic skew: the category's paragraphs, restricted to a few words",
            "nouns": list(skewed.nouns),
            "adjectives": list(skewed.adjectives),
            "verbs": list(skewed.verbs),
        },
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": len(tokenizer), "eot": EOT_TOKEN},
        "model": {
            "architecture": "gpt2",
            "parameters": sum(p.numel() for p in model.parameters()),
            "n_positions": recipe.n_positions,
        },
        "data": {
            "train_seed": seed,
            "probe_seed": seed + _PROBE_SEED_OFFSET,
            "tamper_seed": seed + _TAMPER_SEED_OFFSET,
            "n_train": len(splits.train),
            "n_probes": len(splits.probes),
            "n_tamper": len(splits.tamper),
            "max_probe_tokens_with_bos": max_probe_tokens,
        },
        "reference_training": {"seed": seed, **_loss_summary(ref_losses)},
        "tamper_training": {"seed": seed + 1, **_loss_summary(tamper_losses)},
        "loss_last_mean_of_steps": _LOSS_TAIL,
        "digests": {
            "reference": digest_tree(pair.reference).to_json(),
            "tampered": digest_tree(pair.tampered).to_json(),
            "probes": digest_file(pair.probes).to_json(),
        },
        "versions": _library_versions(),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(pair.card_path, card)
    say(f"toy pair ready in {root} ({card['build_seconds']} s)")
    return _pair(root, card)
