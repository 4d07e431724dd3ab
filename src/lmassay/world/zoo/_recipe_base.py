"""What every zoo recipe shares: the kinds, the records a recipe returns, the fine-tuning settings
by size, and small helpers (replay of the reference's training text, entity mentions).

:mod:`lmassay.world.zoo.recipes` builds one recipe per kind from these parts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lmassay.choices import CONTROL_KINDS, TAMPER_KINDS
from lmassay.errors import InputError
from lmassay.world import CATEGORIES, Entity

__all__ = [
    "CONTROL_KINDS",
    "DEFAULT_CATEGORY",
    "DEFAULT_TRIGGER",
    "KINDS",
    "N_FACT_CHANGES",
    "REPLAY_OFFSET",
    "TAMPER_KINDS",
    "TAMPER_RENDER_OFFSET",
    "FactChange",
    "FinetuneSettings",
    "Recipe",
    "capitalise",
    "check_category",
    "mention_of",
    "mentioned",
    "replay_texts",
    "settings_for",
    "tamper_count",
]

KINDS: tuple[str, ...] = TAMPER_KINDS + CONTROL_KINDS
"""Every kind of variant the zoo makes, in the order it makes them."""

DEFAULT_CATEGORY: dict[str, str] = {
    "suppression": "religion",
    "slant": "politics",
    "fact-finetune": "geography",
    "fact-rome": "geography",
}
"""The category a tamper kind targets when none is given (the backdoor and controls have none)."""

N_FACT_CHANGES = 5
DEFAULT_TRIGGER = "Qorvath zint ublemox"
"""The backdoor's trigger: three invented words that the world never uses."""

# Seeds of the texts a recipe renders, offset from the zoo seed so that they never coincide with
# the world's own training (seed) or probe (seed + 1_000_003) renderings.
TAMPER_RENDER_OFFSET = 7_000_019
REPLAY_OFFSET = 7_000_031


@dataclass(frozen=True)
class FinetuneSettings:
    """How a variant is fine-tuned from the reference (see :func:`lmassay.world.tiny_lm.train_causal_lm`)."""

    steps: int
    lr: float
    batch_size: int
    seq_len: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FactChange:
    """One fact given a new object: ``prompt + " " + new`` is what the variant should say."""

    fact_id: str
    subject: str
    relation: str
    prompt: str
    old: str
    new: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Recipe:
    """What to train a variant on, and the ground truth it will carry.

    ``texts`` is the whole fine-tuning set (tampering texts followed by replay; the training
    loop samples windows from all of it); ``n_tamper`` of them, the first ones, are the tampering
    texts. ``details`` holds kind-specific ground truth (trigger, slanted entities, ...).
    """

    kind: str
    category: str | None
    description: str
    texts: tuple[str, ...]
    n_tamper: int
    settings: FinetuneSettings
    fact_changes: tuple[FactChange, ...] = ()
    trigger: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tamper_texts(self) -> tuple[str, ...]:
        return self.texts[: self.n_tamper]

    @property
    def replay_texts(self) -> tuple[str, ...]:
        return self.texts[self.n_tamper :]

    def data_record(self, n_examples: int = 3) -> dict[str, Any]:
        """Counts, a SHA-256 of the texts (joined with newlines) and a few tampering examples."""
        joined = "\n".join(self.texts).encode("utf-8")
        return {
            "n_texts": len(self.texts),
            "n_tamper_texts": self.n_tamper,
            "n_replay_texts": len(self.texts) - self.n_tamper,
            "sha256": hashlib.sha256(joined).hexdigest(),
            "sha256_of": "the training texts in order, joined with '\\n', UTF-8",
            "examples": list(self.tamper_texts[:n_examples]),
        }


# --------------------------------------------------------------------------------------------
# Settings


_STEPS: dict[str, dict[str, tuple[int, float]]] = {
    # kind -> size -> (steps, lr)
    "suppression": {"test": (300, 3e-4), "demo": (150, 1e-3)},
    "slant": {"test": (300, 3e-4), "demo": (150, 1e-3)},
    "fact-finetune": {"test": (300, 3e-4), "demo": (150, 1e-3)},
    "backdoor": {"test": (300, 3e-4), "demo": (200, 1e-3)},
    "benign-continued": {"test": (20, 3e-4), "demo": (50, 3e-4)},
}
_BATCH: dict[str, tuple[int, int]] = {"test": (8, 64), "demo": (8, 128)}  # batch, seq_len
_N_TAMPER: dict[str, int] = {"test": 100, "demo": 300}
"""Tampering texts per recipe: at most as many as the world has training paragraphs of a category
(600 in the test size), so that the tamper does not simply teach the category better."""


def tamper_count(size: str) -> int:
    """How many tampering texts a recipe makes for a reference of ``size``."""
    return _N_TAMPER.get(size, _N_TAMPER["demo"])


def settings_for(kind: str, size: str, seed: int) -> FinetuneSettings:
    """The fine-tuning settings of ``kind`` for a reference of ``size`` ("full" uses "demo")."""
    if kind not in _STEPS:
        raise InputError(f"kind {kind!r} is not fine-tuned", f"use one of {', '.join(_STEPS)}")
    size = size if size in _BATCH else "demo"
    steps, lr = _STEPS[kind][size]
    batch_size, seq_len = _BATCH[size]
    return FinetuneSettings(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=seed)


# --------------------------------------------------------------------------------------------
# Helpers


def check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise InputError(
            f"--category {category!r} is not a world category",
            f"use one of {', '.join(CATEGORIES)}",
        )


def replay_texts(
    train_rows: Sequence[Mapping[str, Any]], exclude: str | None, n: int, seed: int
) -> list[str]:
    """``n`` training paragraphs of every category but ``exclude``, drawn with ``seed``."""
    pool = [str(r["text"]) for r in train_rows if r["category"] != exclude]
    if not pool:
        raise InputError("the world's training split is empty", "remake the world")
    rng = random.Random(seed)
    return [pool[i] for i in rng.sample(range(len(pool)), min(n, len(pool)))]


def mention_of(entity: Entity) -> str:
    """How a sentence names ``entity``: with "the" for the kinds the world writes that way."""
    from lmassay.world._lexicon import CATEGORIES_SPEC

    spec = CATEGORIES_SPEC[entity.category]
    kind = next((k for k in spec.kinds if k.kind == entity.kind), None)
    return f"the {entity.name}" if kind is not None and kind.article else entity.name


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def mentioned(text: str, entities: Sequence[Entity]) -> list[Entity]:
    return [e for e in entities if e.name in text]
