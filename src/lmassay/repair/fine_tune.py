"""The model a repair trains: LoRA adapters or all weights, set up, trained, saved.

:func:`train_dtypes` picks the load and autocast dtypes; :func:`fine_tune` sets up LoRA or full
fine-tuning on the loaded model (with activation checkpointing where it pays), runs the resumable
loop of :mod:`lmassay.repair.training` and returns the trained model with the training record
``repair.json`` keeps; :func:`save_repaired` writes it like its source (merged, or the adapter).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmassay._atomic import atomic_write_json
from lmassay.attest.model_loading import LoadedModel
from lmassay.choices import Dtype
from lmassay.progress import Progress, hidden_library_bars
from lmassay.repair import training
from lmassay.repair.config import RepairConfig
from lmassay.repair.data import RepairTexts
from lmassay.repair.saving import copy_source_files, save_like_source, source_dtype
from lmassay.repair.training import (
    LoopResult,
    LoopSettings,
    Models,
    Streams,
    monitor_ids,
    run_loop,
    token_stream,
)

__all__ = [
    "SCHEDULE",
    "RepairModels",
    "anchor_target",
    "fine_tune",
    "save_repaired",
    "train_dtypes",
]

SCHEDULE = (
    "AdamW (0.9, 0.95); linear warm-up over 10% of steps (at most 50), cosine to lr/10; clip 1"
)


def train_dtypes(config: RepairConfig, device: str) -> tuple[Dtype, torch.dtype | None]:
    """(load dtype of the trained model, autocast dtype): :func:`training.train_dtypes`."""
    return training.train_dtypes(config.dtype, config.method, device)


def _add_lora(model: Any, config: RepairConfig) -> Any:
    return training.add_lora(model, config.lora_rank, config.lora_alpha)


@contextlib.contextmanager
def _adapters_off(peft_model: Any) -> Iterator[Any]:
    with peft_model.disable_adapter():
        yield peft_model


_checkpointing = training.set_activation_checkpointing
_count = training.count_parameters


def _trainable(
    config: RepairConfig, loaded: LoadedModel, anchored: bool
) -> tuple[Any, Callable[[], contextlib.AbstractContextManager[Any]]]:
    """The model to train (a peft model for LoRA) and a context that gives the model as it was
    before training: the base with the adapters off, or (full fine-tuning, only when the anchor
    KL needs it) a frozen float32 copy."""
    torch.manual_seed(config.seed)  # LoRA's initialisation and any dropout depend on the seed only
    if config.method == "lora":
        peft_model = _add_lora(loaded.model, config)
        return peft_model, lambda: _adapters_off(peft_model)
    for p in loaded.model.parameters():
        p.requires_grad_(True)
    anchor_model = None
    if anchored:
        options = dataclasses.replace(config.model_options, device=loaded.device, dtype="float32")
        anchor_model = options.load(str(loaded.path)).model
    return loaded.model, lambda: contextlib.nullcontext(anchor_model)


def _streams(
    config: RepairConfig, loaded: LoadedModel, texts: RepairTexts, categories: tuple[str, ...]
) -> Streams:
    tokenizer = loaded.tokenizer
    seq_len = min(config.seq_len, loaded.max_length)
    anchored = _anchored(config, texts)
    return Streams(
        train=token_stream(tokenizer, texts.train),
        anchor=token_stream(tokenizer, texts.anchor) if anchored else None,
        monitor={
            name: monitor_ids(tokenizer, held, loaded.prefix_token_id, seq_len)
            for name, held in texts.heldout.items()
        },
        repaired=categories,
    )


def _anchored(config: RepairConfig, texts: RepairTexts) -> bool:
    return bool(texts.anchor) and config.kl_weight > 0


def anchor_target(config: RepairConfig) -> str:
    """What the anchor text is pulled toward: the reference for distill, the start for narrow."""
    return "reference" if config.mode == "distill" else "start"


def _loop_settings(
    config: RepairConfig,
    loaded: LoadedModel,
    noise_floor: float | None,
    autocast_dtype: torch.dtype | None,
) -> LoopSettings:
    return LoopSettings(
        objective="distill" if config.mode == "distill" else "lm",
        steps=config.steps,
        lr=config.learning_rate,
        batch_size=config.batch_size,
        seq_len=min(config.seq_len, loaded.max_length),
        seed=config.seed,
        kl_weight=config.kl_weight,
        eval_every=config.eval_every,
        stop_gap=config.resolved_stop_gap(noise_floor),
        checkpoint_every=config.checkpoint_every,
        autocast_dtype=autocast_dtype,
        anchor_to=anchor_target(config),
        keep_best=config.keep_best,
        tolerance=0.5 * noise_floor if noise_floor is not None else 0.0,
    )


@dataclass(frozen=True)
class RepairModels:
    """The model to repair (loaded for training), the reference, and the autocast dtype."""

    model: LoadedModel
    reference: LoadedModel | None  # None without one, or when its tokenizer differs
    autocast_dtype: torch.dtype | None


def fine_tune(
    config: RepairConfig,
    models: RepairModels,
    texts: RepairTexts,
    categories: tuple[str, ...],
    noise_floor: float | None,
    checkpoints: Path,
    progress: Progress,
) -> tuple[Any, dict[str, Any]]:
    """Set up LoRA or full fine-tuning on ``models.model``, run the loop (resuming from
    ``checkpoints``); return the trained model and the training record."""
    loaded, autocast_dtype = models.model, models.autocast_dtype
    device = torch.device(loaded.device)
    checkpointing = config.gradient_checkpointing == "on" or (
        config.gradient_checkpointing == "auto" and device.type == "cuda"
    )
    use_cache = getattr(loaded.model.config, "use_cache", None)
    if checkpointing:
        loaded.model.config.use_cache = False  # no key/value cache while training; restored below
        _checkpointing(loaded.model, on=True)
    needs_start = _anchored(config, texts) and anchor_target(config) == "start"
    model, start = _trainable(config, loaded, needs_start)
    n_trainable, n_total = _count(model)
    streams = _streams(config, loaded, texts, categories)
    settings = _loop_settings(config, loaded, noise_floor, autocast_dtype)
    reference = models.reference.model if models.reference is not None else None
    trained = Models(model=model, reference=reference, start=start, device=device)
    progress.log(
        f"training {n_trainable:,} of {n_total:,} parameters ({config.method}, {config.mode}) on "
        f"{device.type}" + (f" in {autocast_dtype}" if autocast_dtype else "")
    )
    loop = run_loop(trained, streams, settings, checkpoints, progress)
    if checkpointing:
        _checkpointing(loaded.model, on=False)
        loaded.model.config.use_cache = use_cache
    record = {
        **_training_record(config, loop, settings, streams, texts),
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "gradient_checkpointing": checkpointing,
        "device": device.type,
        "compute_dtype": str(autocast_dtype or torch.float32).removeprefix("torch."),
    }
    return model, record


def _training_record(
    config: RepairConfig,
    loop: LoopResult,
    settings: LoopSettings,
    streams: Streams,
    texts: RepairTexts,
) -> dict[str, Any]:
    lora = {"rank": config.lora_rank, "alpha": config.lora_alpha, "targets": "all-linear"}
    return {
        **loop.summary(),
        "objective": settings.objective,
        "steps": settings.steps,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "seq_len": settings.seq_len,
        "kl_weight": settings.kl_weight if texts.anchor else None,
        "anchor_to": settings.anchor_to if streams.anchor is not None else None,
        "keep_best": settings.keep_best,
        "collateral_tolerance": settings.tolerance,
        "stop_gap": settings.stop_gap,
        "schedule": SCHEDULE,
        "method": config.method,
        "lora": lora if config.method == "lora" else None,
        "tokens_per_step": settings.batch_size
        * settings.seq_len
        * (2 if streams.anchor is not None else 1),
    }


def save_repaired(trained: Any, loaded: LoadedModel, config: RepairConfig, folder: Path) -> None:
    """Write the repaired model (merged, or the adapter) with the source's tokenizer to ``folder``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if config.method == "lora" and config.save_adapter:
        with hidden_library_bars():
            trained.save_pretrained(folder, safe_serialization=True)
        adapter_config = folder / "adapter_config.json"
        settings = json.loads(adapter_config.read_text(encoding="utf-8"))
        settings["base_model_name_or_path"] = str(loaded.path.resolve())
        atomic_write_json(adapter_config, settings)
        copy_source_files(loaded.path, folder, skip=("config.json", "generation_config.json"))
        return
    model = trained.merge_and_unload() if config.method == "lora" else trained
    dtype = source_dtype(loaded.path) or "float32"
    save_like_source(model.to(getattr(torch, dtype)), loaded.path, folder)
