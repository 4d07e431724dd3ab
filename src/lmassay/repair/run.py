"""``repair``: the recipe, top to bottom — check, load, train (resumably), save, attest again, compare.

Files: the repaired model goes to ``OUT`` (a transformers folder, or a peft adapter folder with
``save_adapter``); ``OUT/repair/`` holds ``repair.json``, the new ``attestation.json``,
``samples.jsonl`` and the reports with a before/after section.  While it runs, ``OUT.partial/``
holds the request and the newest checkpoint; a rerun with the same request resumes from it, and it
is removed when the repair finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmassay._atomic import atomic_write_json
from lmassay.attest.model_loading import LoadedModel, load_model, resolve_device, same_tokenizer
from lmassay.attest.probes import ProbeSet, load_probes
from lmassay.attest.recipe import AttestationResult, AttestConfig, attest
from lmassay.digests import digest_file
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress, hidden_library_bars
from lmassay.provenance import provenance, utc_now
from lmassay.repair.config import RepairConfig
from lmassay.repair.data import RepairTexts, find_probe_overlap, split_repair_texts
from lmassay.repair.outcome import compare_attestations, number
from lmassay.repair.saving import copy_source_files, publish, save_like_source, source_dtype
from lmassay.repair.training import (
    LoopSettings,
    Models,
    Streams,
    monitor_ids,
    run_loop,
    token_stream,
)
from lmassay.report import ATTESTATION_FILE, load_attestation, write_report

SCHEMA = "lmassay.repair/v1"
REPORT_FOLDER = "repair"
REPAIR_FILE = "repair.json"
_SAVED_MARK = "saved.json"


@dataclass
class RepairResult:
    """``record`` is the content of ``repair.json``; ``attestation`` the new attestation."""

    record: dict[str, Any]
    out: Path
    attestation: AttestationResult

    @property
    def success(self) -> bool:
        return bool(self.record["outcome"]["success"])

    @property
    def exit_code(self) -> int:
        return 0 if self.success else 1


# --------------------------------------------------------------------------------------------
# Inputs


def _attest_settings(before: dict[str, Any], path: str) -> dict[str, Any]:
    config = (before.get("provenance") or {}).get("config")
    if not isinstance(config, dict) or not config.get("probes"):
        raise InputError(
            f"attestation {path} records no attest configuration (provenance.config)",
            "pass an attestation written by lmassay attest",
        )
    known = {f.name for f in dataclasses.fields(AttestConfig)}
    return {k: v for k, v in config.items() if k in known}


def _judging_probes(settings: dict[str, Any], before: dict[str, Any]) -> ProbeSet:
    """The attestation's probes, re-read and checked against the digest it recorded."""
    try:
        probes = load_probes(
            settings["probes"],
            text_field=settings.get("text_field", "text"),
            category_field=settings.get("category_field", "category"),
            id_field=settings.get("id_field", "id"),
            split=settings.get("split"),
            per_category=settings.get("per_category"),
            seed=settings.get("seed", 0),
            min_per_category=0,
        )
    except InputError as err:
        raise InputError(
            f"the attestation's probes {settings['probes']!r} cannot be read ({err.what})",
            "repair needs the probes that judged the model, at the path the attestation records",
        ) from err
    recorded = ((before.get("probes") or {}).get("digest") or {}).get("value")
    if recorded and probes.digest.value != recorded:
        raise InputError(
            f"the probes at {settings['probes']!r} changed since the attestation (digest "
            f"{probes.digest.value[:12]} ≠ {recorded[:12]})",
            "restore the probe file the attestation used, or attest the model again",
        )
    return probes


def _categories(config: RepairConfig, before: dict[str, Any]) -> tuple[str, ...]:
    known = [c["name"] for c in before["categories"]]
    chosen = tuple(config.categories) or tuple(before["flagged"])
    if not chosen:
        raise InputError(
            f"the attestation {config.attestation} flagged no category (verdict {before['verdict']})",
            "there is nothing to repair; pass --categories to repair chosen categories anyway",
        )
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise InputError(
            f"--categories names {', '.join(unknown)}, not a category of the attestation",
            f"use some of {', '.join(known)}",
        )
    return chosen


def _attestation_file(path: str) -> Path:
    """The attestation.json that ``path`` (the file or its run folder) names."""
    given = Path(path)
    return given / ATTESTATION_FILE if given.is_dir() else given


def _reference_spec(config: RepairConfig, before: dict[str, Any]) -> str | None:
    if config.reference:
        return config.reference
    recorded = before.get("reference")
    return str(recorded["name"]) if isinstance(recorded, dict) and recorded.get("name") else None


def _request_digest(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode("utf-8")).hexdigest()


def _prepare_work(work: Path, request: dict[str, Any], restart: bool) -> None:
    """Create ``work`` or check that it belongs to this request (so it can be resumed)."""
    file = work / "request.json"
    if work.exists() and restart:
        shutil.rmtree(work)
    if work.exists():
        try:
            held = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            held = None
        if held != request:
            raise InputError(
                f"{work} holds an interrupted repair with other settings or inputs",
                "rerun with the same settings to resume it, or pass --restart to discard it",
            )
        return
    work.mkdir(parents=True)
    atomic_write_json(file, request)


# --------------------------------------------------------------------------------------------
# The trainable model


def _train_dtypes(config: RepairConfig, device: str) -> tuple[str, torch.dtype | None]:
    """(load dtype of the trained model, autocast dtype). ``--dtype bfloat16`` is honoured on a
    CPU too (autocast supports it there, though it is slower than float32 on most CPUs)."""
    bf16 = config.dtype == "bfloat16" or (
        config.dtype == "auto" and device.startswith("cuda") and torch.cuda.is_bf16_supported()
    )
    if not bf16:
        return "float32", None
    # LoRA keeps the frozen base in bf16 (its adapters stay float32); full fine-tuning keeps
    # float32 master weights and computes in bf16.
    return ("bfloat16" if config.method == "lora" else "float32"), torch.bfloat16


def _add_lora(model: Any, config: RepairConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's note that GPT-2's Conv1D sets fan_in_fan_out
        return get_peft_model(model, lora)


@contextlib.contextmanager
def _adapters_off(peft_model: Any) -> Iterator[Any]:
    with peft_model.disable_adapter():
        yield peft_model


def _checkpointing(model: Any, *, on: bool) -> None:
    """Turn activation (gradient) checkpointing on, non-reentrant, or off; transformers >= 5 names
    it ``activation_checkpointing_*``, older versions ``gradient_checkpointing_*``."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _count(model: Any) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# --------------------------------------------------------------------------------------------
# Saving


def _save(trained: Any, loaded: LoadedModel, config: RepairConfig, folder: Path) -> None:
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


# --------------------------------------------------------------------------------------------
# The recipe


def repair(config: RepairConfig, progress: Progress | None = None) -> RepairResult:
    """Repair ``config.model`` on the attestation's flagged categories, then attest it again."""
    progress = progress or NullProgress()
    config.validate()
    started, t0 = utc_now(), time.perf_counter()
    out = Path(config.out)
    work = out.with_name(out.name + ".partial")
    before = load_attestation(config.attestation)
    settings = _attest_settings(before, config.attestation)
    categories = _categories(config, before)
    reference_spec = _reference_spec(config, before)
    if config.mode == "distill" and reference_spec is None:
        raise InputError(
            "--mode distill needs a reference, and the attestation records none",
            "pass --reference MODEL, or use --mode narrow or wide",
        )
    if (
        out.exists()
        and any(out.iterdir())
        and not config.force
        and not ((work / _SAVED_MARK).is_file() and not config.restart)
    ):
        raise InputError(
            f"--out {out} already exists", "pass --force to replace it, or choose another folder"
        )

    probes = _judging_probes(settings, before)
    data = load_probes(
        config.data,
        text_field=config.text_field,
        category_field=config.category_field,
        min_per_category=0,
    )
    overlap = find_probe_overlap(probes.samples, (s.text for s in data.samples))
    if overlap.overlapping:
        shown = ", ".join(i for i, _ in overlap.overlapping[:5])
        raise InputError(
            f"--data {config.data} contains {len(overlap.overlapping)} of the {len(probes.samples)} "
            f"probes that judge the repair (e.g. {shown})",
            "remove those texts from the repair data, or attest with other probes first",
        )
    texts = split_repair_texts(
        data.samples,
        mode=config.mode,
        categories=categories,
        holdout=config.holdout,
        seed=config.seed,
    )
    progress.log(
        f"repair data: {len(data.samples)} texts; training on {len(texts.train)}"
        + (f", anchoring on {len(texts.anchor)}" if texts.anchor else "")
        + f"; {texts.n_heldout} held out to monitor the repair"
    )

    device = resolve_device(config.device)
    load_dtype, autocast_dtype = _train_dtypes(config, device)
    progress.log(
        f"loading {config.model}" + (f" and reference {reference_spec}" if reference_spec else "")
    )

    def load(spec: str, dtype: str) -> LoadedModel:
        return load_model(
            spec,
            device=device,
            dtype=dtype,
            allow_pickle=config.allow_pickle,
            trust_remote_code=config.trust_remote_code,
        )

    loaded = load(config.model, load_dtype)
    judged = ((before.get("model") or {}).get("digest") or {}).get("value")
    if judged and loaded.digest.value != judged:
        raise InputError(
            f"--model {config.model} is not the model the attestation judged (digest "
            f"{loaded.digest.value[:12]} ≠ {judged[:12]})",
            "pass the model that was attested, or attest this model first",
        )
    reference = (
        load(reference_spec, "bfloat16" if autocast_dtype else "float32")
        if reference_spec
        else None
    )
    if reference is not None and not same_tokenizer(loaded, reference):
        if config.mode == "distill":
            raise InputError(
                f"--mode distill needs the reference {reference_spec} to share the model's tokenizer",
                "use --mode narrow or wide with a reference of another tokenizer",
            )
        progress.log("the reference has another tokenizer: no held-out KL monitoring")
        reference = None
    if reference is not None:
        for p in reference.model.parameters():
            p.requires_grad_(False)

    request = {
        "config": config.training_request(),
        "model_digest": loaded.digest.value,
        "reference_digest": reference.digest.value if reference else None,
        "data_digest": data.digest.value,
        "categories": list(categories),
    }
    _prepare_work(work, request, config.restart)
    saved_mark = work / _SAVED_MARK
    if (
        saved_mark.is_file()
        and (
            out / "config.json" if not config.save_adapter else out / "adapter_config.json"
        ).is_file()
    ):
        training = json.loads(saved_mark.read_text(encoding="utf-8"))["training"]
        progress.log(f"the repaired model is already saved in {out}; attesting it")
    else:
        trained, training = _train(
            config,
            loaded,
            reference,
            texts,
            categories,
            number(before["summary"].get("noise_floor")),
            work,
            autocast_dtype,
            progress,
        )
        tmp = work / "model"
        progress.log(f"saving the repaired model to {out}")
        _save(trained, loaded, config, tmp)
        publish(tmp, out)  # an existing OUT was refused above unless --force
        atomic_write_json(saved_mark, {"training": training})

    progress.log("attesting the repaired model on the held-out probes")
    after = attest(
        AttestConfig(
            **{
                **settings,
                "model": str(out),
                "reference": reference_spec,
                "out": str(out / REPORT_FOLDER),
                "write_report": False,
                "device": config.device,
                "allow_pickle": config.allow_pickle,
                "trust_remote_code": config.trust_remote_code,
            }
        ),
        progress,
    )
    outcome = compare_attestations(before, after.attestation, categories)
    record = {
        "schema": SCHEMA,
        "created": utc_now(),
        "mode": config.mode,
        "method": config.method,
        "categories": list(categories),
        "model": loaded.describe(),
        "reference": reference.describe()
        if reference
        else (reference_spec and {"name": reference_spec}),
        "attestation_before": {
            "path": str(config.attestation),
            "sha256": digest_file(_attestation_file(config.attestation)).value,
            "verdict": before["verdict"],
            "flagged": before["flagged"],
        },
        "attestation_after": {"path": str(out / REPORT_FOLDER / "attestation.json")},
        "data": {
            **data.to_json(),
            "n_train": len(texts.train),
            "n_anchor": len(texts.anchor),
            "n_heldout": texts.n_heldout,
            "probe_overlap": overlap.to_json(),
        },
        "training": training,
        "output": {
            "path": str(out),
            "format": "peft-adapter" if config.save_adapter else "transformers",
        },
        "outcome": outcome,
        "provenance": {
            **provenance(dataclasses.asdict(config), config.seed),
            "started": started,
            "finished": utc_now(),
            "duration_s": round(time.perf_counter() - t0, 2),
        },
    }
    folder = out / REPORT_FOLDER
    atomic_write_json(folder / REPAIR_FILE, record)
    after.paths.update(write_report(folder, after.attestation, repair=record))
    shutil.rmtree(work, ignore_errors=True)
    return RepairResult(record=record, out=out, attestation=after)


def _train(
    config: RepairConfig,
    loaded: LoadedModel,
    reference: LoadedModel | None,
    texts: RepairTexts,
    categories: tuple[str, ...],
    noise_floor: float | None,
    work: Path,
    autocast_dtype: torch.dtype | None,
    progress: Progress,
) -> tuple[Any, dict[str, Any]]:
    """Set up LoRA or full fine-tuning on ``loaded.model`` and run the loop; return the model."""
    model: Any = loaded.model
    device = torch.device(loaded.device)
    checkpointing = config.gradient_checkpointing == "on" or (
        config.gradient_checkpointing == "auto" and device.type == "cuda"
    )
    use_cache = getattr(model.config, "use_cache", None)
    if checkpointing:
        model.config.use_cache = False  # no key/value cache while training; restored below
        _checkpointing(model, on=True)
    start: Any
    torch.manual_seed(config.seed)  # LoRA's initialisation and any dropout depend on the seed only
    if config.method == "lora":
        model = _add_lora(model, config)
        start = lambda: _adapters_off(model)  # noqa: E731
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        anchor_model = None
        if texts.anchor and config.kl_weight > 0:
            anchor_model = load_model(
                str(loaded.path),
                device=loaded.device,
                dtype="float32",
                allow_pickle=config.allow_pickle,
                trust_remote_code=config.trust_remote_code,
            ).model
        start = lambda: contextlib.nullcontext(anchor_model)  # noqa: E731
    n_trainable, n_total = _count(model)
    tokenizer = loaded.tokenizer
    seq_len = min(config.seq_len, loaded.max_length)
    streams = Streams(
        train=token_stream(tokenizer, texts.train),
        anchor=(
            token_stream(tokenizer, texts.anchor) if texts.anchor and config.kl_weight > 0 else None
        ),
        monitor={
            name: monitor_ids(tokenizer, held, loaded.prefix_token_id, seq_len)
            for name, held in texts.heldout.items()
        },
        repaired=categories,
    )
    settings = LoopSettings(
        objective="distill" if config.mode == "distill" else "lm",
        steps=config.steps,
        lr=config.learning_rate,
        batch_size=config.batch_size,
        seq_len=seq_len,
        seed=config.seed,
        kl_weight=config.kl_weight,
        eval_every=config.eval_every,
        stop_gap=config.resolved_stop_gap(noise_floor),
        checkpoint_every=config.checkpoint_every,
        autocast_dtype=autocast_dtype,
    )
    models = Models(
        model=model,
        reference=reference.model if reference is not None else None,
        start=start,
        device=device,
    )
    progress.log(
        f"training {n_trainable:,} of {n_total:,} parameters ({config.method}, {config.mode}) on "
        f"{device.type}" + (f" in {autocast_dtype}" if autocast_dtype else "")
    )
    loop = run_loop(models, streams, settings, work / "checkpoints", progress)
    if checkpointing:
        base = model.get_base_model() if config.method == "lora" else model
        _checkpointing(base, on=False)
        base.config.use_cache = use_cache
    training = {
        **loop.summary(),
        "objective": settings.objective,
        "steps": settings.steps,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "seq_len": settings.seq_len,
        "kl_weight": settings.kl_weight if texts.anchor else None,
        "stop_gap": settings.stop_gap,
        "schedule": "AdamW (0.9, 0.95); linear warm-up over 10% of steps (at most 50), cosine to lr/10; clip 1",
        "method": config.method,
        "lora": (
            {"rank": config.lora_rank, "alpha": config.lora_alpha, "targets": "all-linear"}
            if config.method == "lora"
            else None
        ),
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "gradient_checkpointing": checkpointing,
        "device": device.type,
        "compute_dtype": str(autocast_dtype or torch.float32).removeprefix("torch."),
        "tokens_per_step": settings.batch_size
        * settings.seq_len
        * (2 if streams.anchor is not None else 1),
    }
    return model, training
