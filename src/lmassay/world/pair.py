"""A reference and a tampered copy of it, on one generated world: the smallest offline pair.

:func:`make_pair` makes (or reuses) three folders under one root:

1. ``world/`` — the generated world (:func:`lmassay.world.make_world`);
2. ``reference/`` — the reference model trained on its training split
   (:func:`lmassay.world.reference.train_reference`);
3. ``tampered/`` — one zoo variant of it (:func:`lmassay.world.zoo.make_variant`, by default a
   topic suppression of ``religion``) with its ground truth in ``tamper.json``.

``lmassay world pair`` and ``lmassay demo`` (which then attests the variant) both call it. Each
step reuses its folder when the request recorded there matches, so a second call returns at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmassay.choices import PAIR_SIZES, PairSize
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.world._store import WorldFiles, make_world
from lmassay.world.generator import CATEGORIES

__all__ = ["PAIR_SIZES", "PairConfig", "WorldPair", "make_pair"]


@dataclass(frozen=True)
class PairConfig:
    """What :func:`make_pair` makes; :meth:`validate` names the offending flag."""

    root: Path
    """The folder that holds ``world/``, ``reference/`` and (by default) ``tampered/``."""
    size: PairSize = "demo"
    kind: str = "suppression"
    """The tamper-zoo kind of the tampered copy (a kind of :data:`~lmassay.world.zoo.TAMPER_KINDS`)."""
    category: str | None = None
    """The category to tamper with (default: the kind's own default)."""
    seed: int = 0
    """Seed for the world, the training and the tampering."""
    variant_dir: Path | None = None
    """Where the tampered copy goes (default: ``root/tampered``)."""

    @property
    def variant_folder(self) -> Path:
        return self.variant_dir if self.variant_dir is not None else self.root / "tampered"

    def validate(self) -> None:
        from lmassay.world.zoo import TAMPER_KINDS

        if self.size not in PAIR_SIZES:
            raise InputError(f"--size {self.size!r} is not known", "use demo or test")
        if self.kind not in TAMPER_KINDS:
            raise InputError(
                f"--kind {self.kind!r} is not a tamper kind the demo can show",
                f"use one of {', '.join(TAMPER_KINDS)}",
            )
        if self.category is not None and self.category not in CATEGORIES:
            raise InputError(
                f"--category {self.category!r} is not a world category",
                f"use one of {', '.join(CATEGORIES)}",
            )
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out {str(self.root)!r} is a file", "pass a folder")


@dataclass(frozen=True)
class WorldPair:
    """The world, the reference and the tampered variant :func:`make_pair` made or reused."""

    world: WorldFiles
    reference: Path
    tampered: Path
    ground_truth: dict[str, Any]
    """The variant's ``tamper.json``: kind, category, what was done, how it was measured."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step: ``world``, ``reference``, ``variant``."""

    @property
    def probes(self) -> Path:
        """The world's held-out probe split: the probes to attest the pair on."""
        return self.world.probes

    @property
    def train_texts(self) -> Path:
        """The world's training split (the reference's training text)."""
        return self.world.train

    @property
    def category(self) -> str | None:
        """The category the tampering targets (``None`` for a backdoor)."""
        value = self.ground_truth.get("category")
        return str(value) if value else None


def make_pair(config: PairConfig, progress: Progress | None = None) -> WorldPair:
    """Make (or reuse) the world, its reference and one tampered variant under ``config.root``."""
    from lmassay.world.reference import train_reference
    from lmassay.world.zoo import make_variant

    config.validate()
    progress = progress or NullProgress()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    world = make_world(config.root / "world", seed=config.seed, size=config.size, progress=progress)
    seconds["world"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    reference = train_reference(
        world.root, config.root / "reference", size=config.size, seed=config.seed, progress=progress
    )
    seconds["reference"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    variant = make_variant(
        config.kind,
        reference.path,
        config.variant_folder,
        world=world.root,
        category=config.category,
        seed=config.seed,
        progress=progress,
    )
    seconds["variant"] = round(time.perf_counter() - t0, 2)
    return WorldPair(world, reference.path, variant.path, variant.ground_truth, seconds)
