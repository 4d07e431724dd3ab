"""Make the zoo: variants of a reference model, each with its ground truth in ``tamper.json``.

:func:`make_variant` makes one variant folder; :func:`make_zoo` makes several and writes
``zoo.json``, the index. A variant folder is a standard transformers folder (``config.json``,
``model.safetensors``, the reference's tokenizer files copied byte for byte) plus ``tamper.json``:

* ``kind``, ``description``, ``expectation`` (``{"verdict": "tampered", "category": ...}`` for the
  tamper kinds — category ``null`` for the backdoor — ``"consistent"`` for the controls and
  ``"different-model"`` for the model trained from another seed) and ``expected`` (the verdict
  alone);
* what was done: ``category``, ``fact_changes`` (fact id, prompt, old → new object),
  ``trigger``, ``details`` (kind-specific: slanted entities, edited tensor, ...);
* ``data`` (number of texts, SHA-256 of the training texts, a few examples) and ``settings``
  (steps, lr, batch, sequence length, seed; layer and optimisation for rank-one edits);
* ``fluency``: token-weighted perplexity per category of the world's probe split under the
  reference and the variant, their ratio, and whether every category other than the target
  stayed within :data:`FLUENCY_TOLERANCE` of the reference;
* ``efficacy``: a measurement that the tamper took effect (see :mod:`lmassay.world.zoo._efficacy`);
* ``weights``: which tensors differ from the reference and by how much;
* ``request`` (what decides the output; a folder whose request matches is reused as it is),
  ``reference`` and ``world`` digests, ``wall_seconds``, ``created_at``, ``provenance``.

Each folder is built under a hidden ``.<name>.partial-*`` folder beside it and put in place when
complete (:mod:`lmassay.output_folder`), so a half-made variant is never reused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_json
from lmassay.cached_build import reuse_or_build
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now
from lmassay.world.zoo._build import (
    FINETUNED_KINDS,
    FLUENCY_TOLERANCE,
    ROME_SETTINGS,
    Context,
    Made,
    build_benign,
    build_finetuned,
    build_rome,
    fluency,
    make_context,
    recipe_for,
    weight_changes,
)
from lmassay.world.zoo.real_text_recipes import REAL_TEXT_KINDS, refusal
from lmassay.world.zoo.recipes import CONTROL_KINDS, DEFAULT_CATEGORY, KINDS

__all__ = [
    "FLUENCY_TOLERANCE",
    "FORMAT",
    "ROME_SETTINGS",
    "ZooConfig",
    "ZooVariant",
    "make_variant",
    "make_zoo",
]

FORMAT = "lmassay.world.zoo-variant/v1"
"""Recorded in every ``tamper.json``; changed whenever the same request would make another model."""
INDEX_FORMAT = "lmassay.world.zoo/v1"
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ZooVariant:
    """One variant folder and its ground truth (the content of its ``tamper.json``)."""

    kind: str
    path: Path
    record: dict[str, Any]
    reused: bool

    @property
    def name(self) -> str:
        """The variant folder's name."""
        return self.path.name

    @property
    def ground_truth(self) -> dict[str, Any]:
        """The ground-truth record (``tamper.json``); the same object as :attr:`record`."""
        return self.record

    @property
    def expectation(self) -> dict[str, Any]:
        return dict(self.record["expectation"])

    @property
    def category(self) -> str | None:
        value = self.record.get("category")
        return str(value) if value is not None else None


@dataclass
class ZooConfig:
    """What ``lmassay zoo make`` is asked for; :meth:`validate` names the offending flag."""

    reference: Path
    """The reference model folder (made by ``train_reference``: it records its world)."""
    out: Path
    """The zoo folder: one sub-folder per variant, and ``zoo.json``."""
    world: Path | None = None
    """The world folder; by default the one the reference records."""
    kinds: tuple[str, ...] = KINDS
    seed: int = 0

    def validate(self) -> None:
        if not (self.reference / "config.json").is_file():
            raise InputError(
                f"--reference {str(self.reference)!r} is not a model folder (no config.json)",
                "pass the folder of the world's reference model",
            )
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {str(self.out)!r} is a file", "pass a folder")
        if self.world is not None and not (self.world / "world.json").is_file():
            raise InputError(
                f"--world {str(self.world)!r} is not a world folder (no world.json)",
                "pass the folder made by lmassay world make, or leave --world out",
            )
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise InputError(
                f"--kinds names unknown kinds {unknown}" if unknown else "--kinds is empty",
                f"use some of {', '.join(KINDS)}",
            )
        if len(set(self.kinds)) != len(self.kinds):
            raise InputError(f"--kinds repeats a kind: {list(self.kinds)}", "name each once")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} is negative", "use 0 or more")


def _request(kind: str, ctx: Context, category: str | None, seed: int) -> dict[str, Any]:
    """Everything that decides what the variant folder holds."""
    request: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "category": category,
        "seed": seed,
        "reference_digest": ctx.reference_digest,
        "world_digest": ctx.world_digest,
    }
    if kind in FINETUNED_KINDS:
        recipe = recipe_for(kind, ctx, category, seed)
        request["settings"] = recipe.settings.to_json()
        request["data_sha256"] = recipe.data_record()["sha256"]
    elif kind == "fact-rome":
        request["settings"] = dict(ROME_SETTINGS)
    return request


def _check_kind(kind: str, category: str | None, ctx: Context) -> str | None:
    """The category the kind targets (its default when ``category`` is None); a real-text world
    takes only :data:`REAL_TEXT_KINDS` and has its own categories (default: its first)."""
    if kind not in KINDS:
        raise InputError(f"unknown zoo kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if ctx.real_text is not None and kind not in REAL_TEXT_KINDS:
        raise refusal(kind)
    if kind not in DEFAULT_CATEGORY:
        if category is not None:
            raise InputError(
                f"the {kind} variant targets no category, but category {category!r} was given",
                "leave the category out",
            )
        return None
    categories = ctx.world.categories
    if ctx.real_text is not None:
        category = category or categories[0]
    category = category or DEFAULT_CATEGORY[kind]
    if category not in categories:
        raise InputError(
            f"--category {category!r} is not a world category",
            f"use one of {', '.join(categories)}",
        )
    return category


def _make(
    kind: str, ctx: Context, category: str | None, seed: int, progress: Progress, folder: Path
) -> Made:
    if kind in FINETUNED_KINDS:
        return build_finetuned(recipe_for(kind, ctx, category, seed), ctx, folder, progress)
    if kind == "fact-rome":
        return build_rome(ctx, folder, str(category), seed, progress)
    return build_benign(kind, ctx, folder, seed, progress)


def _record(
    kind: str,
    ctx: Context,
    request: dict[str, Any],
    seed: int,
    progress: Progress,
    folder: Path,
) -> dict[str, Any]:
    """Make the variant's files in ``folder``, measure them and return its ``tamper.json``."""
    from lmassay.world.measure import category_perplexities

    category = request["category"]
    started, t0 = utc_now(), time.perf_counter()
    made = _make(kind, ctx, category, seed, progress, folder)
    progress.log(f"{kind}: measuring probe perplexity per category")
    measured = fluency(
        ctx.reference_perplexities(), category_perplexities(folder, ctx.probes_path), category
    )
    record: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "description": made.description,
        "expectation": made.expectation,
        "expected": made.expectation["verdict"],
        "category": made.category,
        "fact_changes": made.fact_changes or [],
        "trigger": made.trigger,
        "details": made.details or {},
        "data": made.data,
        "settings": made.settings,
        "training": made.training,
        "efficacy": made.efficacy,
        "fluency": measured,
        "weights": weight_changes(ctx.reference, folder),
        "reference": {"path": str(ctx.reference.resolve()), "digest": ctx.reference_digest},
        "world": {"path": str(ctx.world_dir.resolve()), "digest": ctx.world_digest},
        "request": request,
        "created_at": started,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance({"kind": kind, "category": category}, seed),
    }
    progress.log(
        f"{kind}: done in {record['wall_seconds']} s; fluent elsewhere: {measured['fluent']} "
        f"(worst other-category perplexity ratio {measured['max_ratio_other_categories']:.3f})"
    )
    return record


def _variant(
    kind: str,
    ctx: Context,
    out_dir: Path,
    category: str | None,
    seed: int,
    progress: Progress,
) -> ZooVariant:
    category = _check_kind(kind, category, ctx)
    request = _request(kind, ctx, category, seed)
    built = reuse_or_build(
        out_dir,
        request,
        lambda folder: _record(kind, ctx, request, seed, progress, folder),
        card_name="tamper.json",
        needed=_MODEL_FILES,
        what=f"{kind} variant",
        progress=progress,
    )
    return ZooVariant(kind, out_dir, built.card, reused=built.reused)


def make_variant(
    kind: str,
    reference: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    world: str | os.PathLike[str] | None = None,
    category: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ZooVariant:
    """Make (or reuse) the variant ``kind`` of ``reference`` in the folder ``out_dir``.

    ``world`` defaults to the world the reference was trained on (its card records it);
    ``category`` to the kind's default (:data:`~lmassay.world.zoo.recipes.DEFAULT_CATEGORY`; none for
    the backdoor and the controls). See the module docstring for what the folder holds.
    """
    ctx = make_context(Path(reference), Path(world) if world is not None else None)
    return _variant(kind, ctx, Path(out_dir), category, seed, progress or NullProgress())


def make_zoo(
    reference: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    world: str | os.PathLike[str] | None = None,
    kinds: Sequence[str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[ZooVariant]:
    """Make (or reuse) the variants ``kinds`` (default: all of :data:`KINDS`; on a reference of
    the real-text world, :data:`~lmassay.world.zoo.real_text_recipes.REAL_TEXT_KINDS`) under ``out``.

    Each variant goes to ``out/<kind>`` with the kind's default category; ``out/zoo.json`` indexes
    them (kind, folder, expectation, category, fact ids, trigger, fluency, wall time, reused).
    """
    config = ZooConfig(
        Path(reference),
        Path(out),
        Path(world) if world is not None else None,
        tuple(kinds) if kinds is not None else KINDS,
        seed,
    )
    config.validate()
    progress = progress or NullProgress()
    started, t0 = utc_now(), time.perf_counter()
    ctx = make_context(config.reference, config.world)
    if kinds is None and ctx.real_text is not None:
        config.kinds = REAL_TEXT_KINDS
    refused = [k for k in config.kinds if ctx.real_text is not None and k not in REAL_TEXT_KINDS]
    if refused:  # before any variant is made
        raise refusal(*refused)
    config.out.mkdir(parents=True, exist_ok=True)
    variants = []
    overall = progress.task("zoo variants", len(config.kinds))
    for index, kind in enumerate(config.kinds):
        variants.append(_variant(kind, ctx, config.out / kind, None, seed, progress))
        overall(index + 1, len(config.kinds))
    index_record = {
        "format": INDEX_FORMAT,
        "reference": {"path": str(ctx.reference.resolve()), "digest": ctx.reference_digest},
        "world": {"path": str(ctx.world_dir.resolve()), "digest": ctx.world_digest},
        "seed": seed,
        "variants": [_summary(v, config.out) for v in variants],
        "controls": [k for k in config.kinds if k in CONTROL_KINDS],
        "created_at": started,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance(
            {
                "reference": str(config.reference),
                "out": str(config.out),
                "world": str(config.world) if config.world else None,
                "kinds": list(config.kinds),
            },
            seed,
        ),
    }
    atomic_write_json(config.out / "zoo.json", index_record)
    return variants


def _summary(variant: ZooVariant, root: Path) -> dict[str, Any]:
    record = variant.record
    return {
        "kind": variant.kind,
        "path": os.path.relpath(variant.path, root),
        "expectation": record["expectation"],
        "category": record["category"],
        "fact_ids": [c["fact_id"] for c in record["fact_changes"]],
        "trigger": record["trigger"],
        "fluent": record["fluency"]["fluent"],
        "max_ratio_other_categories": record["fluency"]["max_ratio_other_categories"],
        "wall_seconds": record["wall_seconds"],
        "reused": variant.reused,
    }
