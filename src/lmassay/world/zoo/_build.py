"""The steps that make a zoo variant's files: load the reference, tamper, save, measure.

:mod:`lmassay.world.zoo.make` decides what to make and records it; this module holds the
building blocks it calls: the context shared by the variants of one zoo, loading and saving,
fine-tuning on a recipe, the rank-one fact edits, the benign controls, and the fluency and
weight-change measurements of ``tamper.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.attest.model_loading import TOKENIZER_FILES
from lmassay.cached_build import read_json
from lmassay.digests import model_identity
from lmassay.errors import InputError
from lmassay.progress import Progress, hidden_library_bars
from lmassay.world.zoo import _efficacy
from lmassay.world.zoo.benign import bf16_round_trip, int8_round_trip
from lmassay.world.zoo.real_text_recipes import (
    RealText,
    read_real_text,
    real_efficacy,
    real_recipe_for,
)
from lmassay.world.zoo.recipes import (
    Recipe,
    backdoor_recipe,
    choose_fact_changes,
    continued_recipe,
    fact_finetune_recipe,
    slant_recipe,
    suppression_recipe,
)

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

FINETUNED_KINDS = ("suppression", "slant", "fact-finetune", "backdoor", "benign-continued")
"""The kinds made by fine-tuning the reference on a recipe's texts."""

_TOKENIZER_FILES = (*TOKENIZER_FILES, "chat_template.jinja")
"""What a variant copies from the reference unchanged: the tokenizer, and a chat template."""

# --------------------------------------------------------------------------------------------
# Context shared by the variants of one zoo


@dataclass
class Context:
    reference: Path
    reference_digest: dict[str, str]
    reference_card: dict[str, Any] | None
    world_dir: Path
    world: Any  # lmassay.world.World
    world_digest: dict[str, str]
    train_rows: list[dict[str, Any]]
    probes_path: Path
    real_text: RealText | None = None  # set when the world is a real-text world
    _reference_ppl: dict[str, float] | None = None

    @property
    def size(self) -> str:
        if self.reference_card is None:
            return "demo"
        return str(self.reference_card["request"].get("size", "demo"))

    def reference_perplexities(self) -> dict[str, float]:
        if self._reference_ppl is None:
            from lmassay.world.measure import category_perplexities

            self._reference_ppl = category_perplexities(self.reference, self.probes_path)
        return self._reference_ppl


def make_context(reference: Path, world: Path | None) -> Context:
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
    world_card = read_card(world_dir)
    return Context(
        reference=reference,
        reference_digest=model_identity(reference).root.to_json(),
        reference_card=read_json(reference / CARD_NAME),
        world_dir=world_dir,
        world=loaded_world,
        world_digest=world_card["world_digest"],
        train_rows=rows,
        probes_path=files.probes,
        real_text=read_real_text(world_dir, world_card),
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


def weight_changes(reference: Path, variant: Path) -> dict[str, Any]:
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


def fluency(
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
    losses = train_causal_lm(
        model,
        tokenizer,
        list(recipe.texts),
        steps=settings.steps,
        batch_size=settings.batch_size,
        seq_len=settings.seq_len,
        lr=settings.lr,
        seed=settings.seed,
        progress=progress.task(f"{recipe.kind}: fine-tuning", settings.steps),
    )
    _save(model, reference, folder)
    tail = losses[-10:]
    return model, tokenizer, {"loss_first": losses[0], "loss_last_mean": sum(tail) / len(tail)}


@dataclass
class Made:
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


def recipe_for(kind: str, ctx: Context, category: str | None, seed: int) -> Recipe:
    world, rows, size = ctx.world, ctx.train_rows, ctx.size
    if ctx.real_text is not None:
        return real_recipe_for(kind, ctx.real_text, rows, category, size, seed)
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


def build_finetuned(recipe: Recipe, ctx: Context, folder: Path, progress: Progress) -> Made:
    model, tokenizer, training = _fine_tune(recipe, ctx.reference, folder, progress)
    reference, _ = _load(ctx.reference)
    if ctx.real_text is not None:
        efficacy = real_efficacy(recipe, ctx.real_text, reference, model, tokenizer)
    else:
        efficacy = _efficacy.measure(recipe, ctx.world, reference, model, tokenizer)
    tampered = recipe.kind != "benign-continued"
    return Made(
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


def build_rome(ctx: Context, folder: Path, category: str, seed: int, progress: Progress) -> Made:
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
    return Made(
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


def _other_seed(ctx: Context, folder: Path, seed: int, progress: Progress) -> Made:
    """The reference's recipe trained again from another seed: a different model."""
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
    return Made(
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


def build_benign(kind: str, ctx: Context, folder: Path, seed: int, progress: Progress) -> Made:
    """A control: retrained from another seed, or the reference's weights saved again, cast to
    bfloat16 and back, or rounded to int8 and back."""
    consistent = {"verdict": "consistent", "category": None}
    if kind == "benign-other-seed":
        return _other_seed(ctx, folder, seed, progress)
    model, _ = _load(ctx.reference)
    progress.log(f"{kind}: transforming the weights")
    if kind == "benign-resave":
        _save(model, ctx.reference, folder)
        return Made("the reference loaded and saved again with save_pretrained", consistent)
    if kind == "benign-bf16":
        count = bf16_round_trip(model)
        _save(model, ctx.reference, folder)
        return Made(
            "every floating tensor cast to bfloat16 and back to float32",
            consistent,
            details={"tensors_cast": count},
        )
    if kind == "benign-int8":
        changed = int8_round_trip(model)
        _save(model, ctx.reference, folder)
        return Made(
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
