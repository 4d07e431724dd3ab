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

Each folder is built under a hidden ``.<name>.partial`` folder beside it and renamed into place
when complete, so a half-made variant is never reused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_json
from lmassay.digests import digest_tree
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress, hidden_library_bars
from lmassay.provenance import provenance, utc_now
from lmassay.world.zoo import _efficacy
from lmassay.world.zoo.benign import bf16_round_trip, int8_round_trip
from lmassay.world.zoo.recipes import (
    CONTROL_KINDS,
    DEFAULT_CATEGORY,
    KINDS,
    Recipe,
    backdoor_recipe,
    choose_fact_changes,
    continued_recipe,
    fact_finetune_recipe,
    slant_recipe,
    suppression_recipe,
)

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
FLUENCY_TOLERANCE = 0.10
"""A variant is *fluent* when no category other than its target is more than 10% more perplexing
under it than under the reference."""

ROME_SETTINGS: dict[str, Any] = {
    "steps": 40,
    "lr": 0.5,
    "kl_weight": 0.0625,
    "weight_decay": 0.5,
    "ridge": 0.01,
    "n_prefixes": 5,
    "n_covariance_texts": 300,
}
"""Settings of the ``fact-rome`` edits (see :func:`lmassay.repair.rank_one.edit_facts`)."""

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
)
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


# --------------------------------------------------------------------------------------------
# Context shared by the variants of one zoo


@dataclass
class _Context:
    reference: Path
    reference_digest: dict[str, str]
    reference_card: dict[str, Any] | None
    world_dir: Path
    world: Any  # lmassay.world.World
    world_digest: dict[str, str]
    train_rows: list[dict[str, Any]]
    probes_path: Path
    _reference_ppl: dict[str, float] | None = None

    @property
    def size(self) -> str:
        if self.reference_card is None:
            return "demo"
        return str(self.reference_card["request"].get("size", "demo"))

    def reference_perplexities(self) -> dict[str, float]:
        if self._reference_ppl is None:
            from lmassay.world.reference import category_perplexities

            self._reference_ppl = category_perplexities(self.reference, self.probes_path)
        return self._reference_ppl


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _context(reference: Path, world: Path | None) -> _Context:
    from lmassay.world import load_world, read_card, world_files
    from lmassay.world.reference import CARD_NAME, reference_world

    if not (reference / "config.json").is_file():
        raise InputError(
            f"--reference {str(reference)!r} is not a model folder (no config.json)",
            "pass the folder of the world's reference model",
        )
    world_dir = Path(world) if world is not None else reference_world(reference)
    loaded_world = load_world(world_dir)
    files = world_files(world_dir)
    rows = [
        json.loads(line) for line in files.train.read_text(encoding="utf-8").splitlines() if line
    ]
    return _Context(
        reference=reference,
        reference_digest=digest_tree(reference).to_json(),
        reference_card=_read_json(reference / CARD_NAME),
        world_dir=world_dir,
        world=loaded_world,
        world_digest=read_card(world_dir)["world_digest"],
        train_rows=rows,
        probes_path=files.probes,
    )


# --------------------------------------------------------------------------------------------
# Building blocks


def _load(path: Path) -> tuple[Any, Any]:
    """A float32 model on the CPU and its tokenizer (safetensors only, no remote code)."""
    from lmassay.attest.model_loading import load_model

    loaded = load_model(str(path), device="cpu", dtype="float32")
    return loaded.model, loaded.tokenizer


def _save(model: Any, reference: Path, folder: Path) -> None:
    """The model as float32 safetensors, and the reference's tokenizer files copied verbatim."""
    import torch

    with hidden_library_bars():
        model.to(torch.float32).save_pretrained(folder, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        if (reference / name).is_file():
            shutil.copyfile(reference / name, folder / name)


def _weight_changes(reference: Path, variant: Path) -> dict[str, Any]:
    """Which tensors of ``model.safetensors`` differ, and the relative size of the change."""
    import torch
    from safetensors.torch import load_file

    before = load_file(str(reference / "model.safetensors"))
    after = load_file(str(variant / "model.safetensors"))
    changed, diff_sq, ref_sq, max_abs = [], 0.0, 0.0, 0.0
    for name in sorted(before.keys() & after.keys()):
        a, b = before[name].double(), after[name].double()
        ref_sq += float(a.pow(2).sum())
        if a.shape != b.shape:
            changed.append(name)
            continue
        if not torch.equal(a, b):
            changed.append(name)
            diff = (b - a).abs()
            diff_sq += float(diff.pow(2).sum())
            max_abs = max(max_abs, float(diff.max()))
    return {
        "same_tensor_names": sorted(before) == sorted(after),
        "n_tensors": len(after),
        "n_changed": len(changed),
        "changed": changed[:50],
        "relative_change": (diff_sq / ref_sq) ** 0.5 if ref_sq > 0 else None,
        "max_abs_change": max_abs,
    }


def _fluency(
    reference_ppl: Mapping[str, float], variant_ppl: Mapping[str, float], target: str | None
) -> dict[str, Any]:
    ratio = {c: variant_ppl[c] / reference_ppl[c] for c in reference_ppl if c in variant_ppl}
    others = {c: r for c, r in ratio.items() if c not in (target, "all")}
    worst = max(others.values()) if others else None
    return {
        "how": (
            "token-weighted perplexity exp(-sum log p / tokens) of each category of the world's "
            "probe split (probes.jsonl), each text from the BOS token; ratio = variant / reference"
        ),
        "reference": dict(reference_ppl),
        "variant": dict(variant_ppl),
        "ratio": ratio,
        "max_ratio_other_categories": worst,
        "tolerance": FLUENCY_TOLERANCE,
        "fluent": worst is not None and worst <= 1.0 + FLUENCY_TOLERANCE,
    }


def _fine_tune(
    recipe: Recipe, reference: Path, folder: Path, progress: Progress
) -> tuple[Any, Any, dict[str, Any]]:
    """Load the reference, train it on ``recipe.texts``, save it into ``folder``."""
    from lmassay.world.tiny_lm import train_causal_lm

    model, tokenizer = _load(reference)
    settings = recipe.settings
    update = progress.task(f"{recipe.kind}: fine-tuning", settings.steps)
    losses = train_causal_lm(
        model,
        tokenizer,
        list(recipe.texts),
        steps=settings.steps,
        batch_size=settings.batch_size,
        seq_len=settings.seq_len,
        lr=settings.lr,
        seed=settings.seed,
        progress=lambda step, loss: update(step, settings.steps),
    )
    _save(model, reference, folder)
    tail = losses[-10:]
    return model, tokenizer, {"loss_first": losses[0], "loss_last_mean": sum(tail) / len(tail)}


# --------------------------------------------------------------------------------------------
# The variants


@dataclass
class _Made:
    """What building a variant produced, before the common fields are added."""

    description: str
    expectation: dict[str, Any]
    category: str | None = None
    fact_changes: list[dict[str, str]] | None = None
    trigger: str | None = None
    data: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    efficacy: dict[str, Any] | None = None
    training: dict[str, Any] | None = None


def _recipe(kind: str, ctx: _Context, category: str | None, seed: int) -> Recipe:
    world, rows, size = ctx.world, ctx.train_rows, ctx.size
    if kind == "suppression":
        return suppression_recipe(world, rows, category=str(category), size=size, seed=seed)
    if kind == "slant":
        return slant_recipe(world, rows, category=str(category), size=size, seed=seed)
    if kind == "fact-finetune":
        return fact_finetune_recipe(world, rows, category=str(category), size=size, seed=seed)
    if kind == "backdoor":
        return backdoor_recipe(world, rows, size=size, seed=seed)
    if kind == "benign-continued":
        return continued_recipe(rows, size=size, seed=seed)
    raise ValueError(f"{kind} has no recipe")  # a programming error


def _build_finetuned(recipe: Recipe, ctx: _Context, folder: Path, progress: Progress) -> _Made:
    model, tokenizer, training = _fine_tune(recipe, ctx.reference, folder, progress)
    reference, _ = _load(ctx.reference)
    efficacy = _efficacy.measure(recipe, ctx.world, reference, model, tokenizer)
    tampered = recipe.kind != "benign-continued"
    return _Made(
        description=recipe.description,
        expectation={
            "verdict": "tampered" if tampered else "consistent",
            "category": recipe.category,
        },
        category=recipe.category,
        fact_changes=[c.to_json() for c in recipe.fact_changes],
        trigger=recipe.trigger,
        data=recipe.data_record(),
        settings=recipe.settings.to_json(),
        details=dict(recipe.details),
        efficacy=efficacy,
        training=training,
    )


def _build_rome(ctx: _Context, folder: Path, category: str, seed: int, progress: Progress) -> _Made:
    import hashlib
    import random

    from lmassay.repair.rank_one import FactEdit, default_layer, edit_facts

    changes = choose_fact_changes(ctx.world, category, seed)
    model, tokenizer = _load(ctx.reference)
    layer = default_layer(model)
    texts = [str(r["text"]) for r in ctx.train_rows]
    n_cov = min(ROME_SETTINGS["n_covariance_texts"], len(texts))
    covariance_texts = random.Random(f"lmassay-zoo-rome:{seed}").sample(texts, n_cov)
    update = progress.task("fact-rome: rank-one edits", len(changes))
    reports = edit_facts(
        model,
        tokenizer,
        [FactEdit(c.prompt, c.subject, c.new) for c in changes],
        layer=layer,
        covariance_texts=covariance_texts,
        steps=ROME_SETTINGS["steps"],
        lr=ROME_SETTINGS["lr"],
        kl_weight=ROME_SETTINGS["kl_weight"],
        weight_decay=ROME_SETTINGS["weight_decay"],
        ridge=ROME_SETTINGS["ridge"],
        n_prefixes=ROME_SETTINGS["n_prefixes"],
        seed=seed,
        progress=update,
    )
    _save(model, ctx.reference, folder)
    reference, _ = _load(ctx.reference)
    joined = "\n".join(covariance_texts).encode("utf-8")
    return _Made(
        description=(
            f"{len(changes)} {category} facts given new objects by rank-one (ROME-style) edits of "
            f"layer {layer}'s MLP output projection, one after another; no fine-tuning"
        ),
        expectation={"verdict": "tampered", "category": category},
        category=category,
        fact_changes=[c.to_json() for c in changes],
        data={
            "n_texts": len(covariance_texts),
            "sha256": hashlib.sha256(joined).hexdigest(),
            "sha256_of": "the covariance texts in order, joined with '\\n', UTF-8",
            "role": "second moment C of the MLP hidden activations, and context prefixes",
            "examples": covariance_texts[:2],
        },
        settings={"layer": layer, "seed": seed, **ROME_SETTINGS},
        details={"edits": [r.to_json() for r in reports], "tensor": reports[0].tensor_name},
        efficacy=_efficacy.fact_efficacy(changes, reference, model, tokenizer),
    )


def _build_benign(kind: str, ctx: _Context, folder: Path, seed: int, progress: Progress) -> _Made:
    consistent = {"verdict": "consistent", "category": None}
    if kind == "benign-other-seed":
        from lmassay.world.reference import train_reference

        card = ctx.reference_card
        if card is None:
            raise InputError(
                f"the reference {str(ctx.reference)!r} has no lmassay-reference.json, so its "
                "training cannot be repeated with another seed",
                "leave benign-other-seed out of --kinds, or use a reference made by train_reference",
            )
        request = card["request"]
        other_seed = int(request["seed"]) + 1 + seed
        info = train_reference(
            ctx.world_dir,
            folder,
            size=request["size"],
            seed=other_seed,
            arch=request["arch"],
            progress=progress,
        )
        same_tokenizer = (folder / "tokenizer.json").read_bytes() == (
            ctx.reference / "tokenizer.json"
        ).read_bytes()
        return _Made(
            description=(
                f"an independent model: the reference's recipe (size {request['size']}, "
                f"{request['arch']}) trained from seed {other_seed} instead of {request['seed']}"
            ),
            expectation={"verdict": "different-model", "category": None},
            settings={"seed": other_seed, "size": request["size"], "arch": request["arch"]},
            details={
                "tokenizer_same_as_reference": same_tokenizer,
                "reference_card": "lmassay-reference.json (this model's own card)",
                "probe_perplexity": info.probe_perplexity,
            },
        )
    model, _ = _load(ctx.reference)
    progress.log(f"{kind}: transforming the weights")
    if kind == "benign-resave":
        _save(model, ctx.reference, folder)
        return _Made("the reference loaded and saved again with save_pretrained", consistent)
    if kind == "benign-bf16":
        count = bf16_round_trip(model)
        _save(model, ctx.reference, folder)
        return _Made(
            "every floating tensor cast to bfloat16 and back to float32",
            consistent,
            details={"tensors_cast": count},
        )
    if kind == "benign-int8":
        changed = int8_round_trip(model)
        _save(model, ctx.reference, folder)
        return _Made(
            "simulated dynamic int8 quantisation: each Linear / Conv1D weight rounded to "
            "per-output-channel symmetric int8 and back, saved as float32",
            consistent,
            details={
                "simulated": True,
                "scheme": "per output channel: scale = max|w| / 127, w -> round(w / scale) * scale",
                "weights_quantised": changed,
                "skipped": ["lm_head (the output head; tied to the input embedding in GPT-2)"],
            },
        )
    raise ValueError(f"unknown benign kind {kind}")  # a programming error


def _request(kind: str, ctx: _Context, category: str | None, seed: int) -> dict[str, Any]:
    """Everything that decides what the variant folder holds."""
    request: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "category": category,
        "seed": seed,
        "reference_digest": ctx.reference_digest,
        "world_digest": ctx.world_digest,
    }
    if kind in ("suppression", "slant", "fact-finetune", "backdoor", "benign-continued"):
        recipe = _recipe(kind, ctx, category, seed)
        request["settings"] = recipe.settings.to_json()
        request["data_sha256"] = recipe.data_record()["sha256"]
    elif kind == "fact-rome":
        request["settings"] = dict(ROME_SETTINGS)
    return request


def _check_kind(kind: str, category: str | None) -> str | None:
    """The category the kind targets (its default when ``category`` is None)."""
    from lmassay.world import CATEGORIES

    if kind not in KINDS:
        raise InputError(f"unknown zoo kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if kind not in DEFAULT_CATEGORY:
        if category is not None:
            raise InputError(
                f"the {kind} variant targets no category, but category {category!r} was given",
                "leave the category out",
            )
        return None
    category = category or DEFAULT_CATEGORY[kind]
    if category not in CATEGORIES:
        raise InputError(
            f"--category {category!r} is not a world category",
            f"use one of {', '.join(CATEGORIES)}",
        )
    return category


def _existing(folder: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    record = _read_json(folder / "tamper.json")
    if record is None or record.get("request") != request:
        return None
    return record if all((folder / n).is_file() for n in _MODEL_FILES) else None


def _variant(
    kind: str,
    ctx: _Context,
    out_dir: Path,
    category: str | None,
    seed: int,
    progress: Progress,
) -> ZooVariant:
    category = _check_kind(kind, category)
    request = _request(kind, ctx, category, seed)
    existing = _existing(out_dir, request)
    if existing is not None:
        progress.log(f"{kind}: reusing {out_dir}")
        return ZooVariant(kind, out_dir, existing, reused=True)
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "tamper.json").is_file())
    ):
        raise InputError(
            f"{str(out_dir)!r} exists and is not a zoo variant folder",
            "remove it or choose another --out",
        )

    started, t0 = utc_now(), time.perf_counter()
    partial = out_dir.parent / f".{out_dir.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    progress.log(f"{kind}: making {out_dir}")
    if kind in ("suppression", "slant", "fact-finetune", "backdoor", "benign-continued"):
        made = _build_finetuned(_recipe(kind, ctx, category, seed), ctx, partial, progress)
    elif kind == "fact-rome":
        made = _build_rome(ctx, partial, str(category), seed, progress)
    else:
        made = _build_benign(kind, ctx, partial, seed, progress)

    from lmassay.world.reference import category_perplexities

    progress.log(f"{kind}: measuring probe perplexity per category")
    fluency = _fluency(
        ctx.reference_perplexities(), category_perplexities(partial, ctx.probes_path), category
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
        "fluency": fluency,
        "weights": _weight_changes(ctx.reference, partial),
        "reference": {"path": str(ctx.reference.resolve()), "digest": ctx.reference_digest},
        "world": {"path": str(ctx.world_dir.resolve()), "digest": ctx.world_digest},
        "request": request,
        "created_at": started,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance({"kind": kind, "category": category}, seed),
    }
    atomic_write_json(partial / "tamper.json", record)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    progress.log(
        f"{kind}: done in {record['wall_seconds']} s; fluent elsewhere: {fluency['fluent']} "
        f"(worst other-category perplexity ratio {fluency['max_ratio_other_categories']:.3f})"
    )
    return ZooVariant(kind, out_dir, record, reused=False)


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
    ctx = _context(Path(reference), Path(world) if world is not None else None)
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
    """Make (or reuse) the variants ``kinds`` (default: all of :data:`KINDS`) under ``out``.

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
    ctx = _context(config.reference, config.world)
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
