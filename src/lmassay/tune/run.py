"""``tune``: the recipe, top to bottom — check, read the pairs, load, train (resumably), save,
attest against the base, record.

Files: ``OUT`` is the tuned model as an ordinary transformers folder (safetensors; LoRA merged into
the weights, in the base's dtype; the base's tokenizer and config files copied), plus
``OUT/tune/tune.json`` (the record: data and base digests, settings, seed, the loss of every step,
time, peak memory, and with ``attest`` the per-category drift) and ``OUT/tune/report.md`` rendered
from it; with ``attest``, ``OUT/attestation/`` holds the attestation of the tuned model against its
base. The tuned model's digest in both (``output.model_digest``, the attestation's
``model.digest``) is that of the model's files alone, before ``tune/`` and ``attestation/`` were
added; ``lmassay seal`` or ``attest`` of ``OUT`` as published hash those records too.

``OUT`` appears complete in one step (:class:`~lmassay.output_folder.OutputFolder`); while the run
is under way, ``OUT.partial/`` holds its request and newest checkpoint (and the attestation being
written), and a rerun with the same request resumes from there (it is removed at the end).

Training is :func:`lmassay.repair.training.run_loop` with the loss of :mod:`lmassay.tune.pairs`:
each step draws ``batch_size`` pairs uniformly (with replacement) from a generator seeded with
``seed``, so a resumed run draws the batches the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmassay._atomic import atomic_write_json, atomic_write_text
from lmassay.attest.config import AttestConfig
from lmassay.attest.model_loading import LoadedModel, resolve_device
from lmassay.attest.probes import ProbeSet, load_probes
from lmassay.attest.recipe import AttestationResult, attest
from lmassay.digests import model_identity
from lmassay.errors import InputError
from lmassay.instruction_data import (
    InstructionPair,
    iter_located_rows,
    pair_from_row,
    source_digest,
)
from lmassay.output_folder import OutputFolder, needed_for_copy
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now
from lmassay.repair.checkpoint import prepare_work
from lmassay.repair.saving import save_like_source, source_dtype
from lmassay.repair.training import (
    LoopResult,
    LoopSettings,
    Models,
    StepLoss,
    Streams,
    add_lora,
    autocast_context,
    count_parameters,
    run_loop,
    set_activation_checkpointing,
    train_dtypes,
)
from lmassay.tune.config import TuneConfig
from lmassay.tune.pairs import Encoded, Example, collate, encode_pairs, response_loss
from lmassay.tune.report import render_markdown

SCHEMA = "lmassay.tune/v1"
RECORD_FOLDER = "tune"
RECORD_FILE = "tune.json"
REPORT_FILE = "report.md"
ATTESTATION_FOLDER = "attestation"
SCHEDULE = (
    "AdamW (0.9, 0.95); linear warm-up over 10% of steps (at most 50), cosine to lr/10; clip 1"
)


@dataclass(frozen=True)
class TuneResult:
    """``record`` is the content of ``tune.json``; ``attestation`` the tuned model's, if asked."""

    record: dict[str, Any]
    out: Path
    attestation: AttestationResult | None

    @property
    def exit_code(self) -> int:
        """0, or with an attestation its exit code (1 when it flags the tuned model)."""
        return 0 if self.attestation is None else self.attestation.exit_code


def tune(config: TuneConfig, progress: Progress | None = None) -> TuneResult:
    """Fine-tune ``config.model`` on the instruction pairs of ``config.data`` (see the module
    docstring); attest the result against the base when ``config.attest`` names probes."""
    progress = progress or NullProgress()
    config.validate()
    started, t0 = utc_now(), time.perf_counter()
    out = Path(config.out)
    probes = _read_probes(config) if config.attest else None
    pairs = read_pairs(config.data, config.split, progress)
    with OutputFolder(out, owned=None, needs_bytes=needed_for_copy(config.model)) as folder:
        device = resolve_device(config.device)
        load_dtype, autocast_dtype = train_dtypes(config.dtype, config.method, device)
        progress.log(f"loading {config.model}")
        options = dataclasses.replace(config.model_options, device=device)
        loaded = dataclasses.replace(options, dtype=load_dtype).load(config.model)
        template = _template(config, loaded)
        encoded = encode_pairs(
            loaded.tokenizer,
            pairs,
            template=template,
            prefix_token_id=loaded.prefix_token_id,
            max_length=min(config.max_length, loaded.max_length),
            progress=progress.task("tune: tokenising", len(pairs)),
        )
        data = _data_record(config, encoded)
        compute = str(autocast_dtype or torch.float32).removeprefix("torch.")
        work = out.with_name(out.name + ".partial")
        prepare_work(work, _request(config, loaded, data, compute), config.restart, what="tune")

        trained, training = _train(config, loaded, encoded, autocast_dtype, work, progress)
        progress.log("saving the tuned model")
        with folder.writing() as staging:
            saved = _save(trained, loaded, config.method, staging)
        attested = None
        if probes is not None:
            progress.log("attesting the tuned model against its base")
            # written beside the model, then moved in: the folder attested holds the model alone
            attested = attest(
                _attest_config(config, staging, work / ATTESTATION_FOLDER),
                progress,
                published_as=(str(out), str(out / ATTESTATION_FOLDER)),
                probes=probes,
            )
            with folder.writing():
                shutil.move(work / ATTESTATION_FOLDER, staging / ATTESTATION_FOLDER)
        record = {
            "schema": SCHEMA,
            "created": utc_now(),
            "base": loaded.describe(),
            "data": data,
            "training": {**training, "compute_dtype": compute},
            "output": {"path": str(out), "format": "transformers", **saved},
            "attestation": None if attested is None else _drift(attested),
            "provenance": {
                **provenance(dataclasses.asdict(config), config.seed),
                "started": started,
                "finished": utc_now(),
                "duration_s": round(time.perf_counter() - t0, 2),
            },
        }
        with folder.writing() as staging:
            records = staging / RECORD_FOLDER
            records.mkdir()
            atomic_write_json(records / RECORD_FILE, record)
            atomic_write_text(records / REPORT_FILE, render_markdown(record))
        progress.log(f"putting the tuned model in place: {out}")
        folder.commit()
        shutil.rmtree(work, ignore_errors=True)
    return TuneResult(record=record, out=out, attestation=attested)


# --------------------------------------------------------------------------------------------
# Check and read


def read_pairs(
    source: str, split: str | None, progress: Progress | None = None
) -> list[tuple[str, InstructionPair]]:
    """Every row of ``source`` as ``(where, pair)`` (:func:`lmassay.instruction_data.pair_from_row`;
    a row in no instruction format is an :class:`InputError` naming it)."""
    progress = progress or NullProgress()
    progress.log(f"reading instruction pairs from {source}")
    return [
        (where, pair_from_row(row, where)) for where, row in iter_located_rows(source, split=split)
    ]


def _read_probes(config: TuneConfig) -> ProbeSet:
    """The ``--attest`` probes, read before any training so a bad corpus stops the run at once."""
    assert config.attest is not None  # read only when asked for
    settings = AttestConfig(model=config.model, probes=config.attest, out=None)
    return load_probes(
        config.attest,
        seed=config.seed,
        min_per_category=settings.min_samples,
        max_bytes=config.max_file_bytes,
    )


def _template(config: TuneConfig, loaded: LoadedModel) -> str:
    has_template = bool(getattr(loaded.tokenizer, "chat_template", None))
    if config.template == "chat" and not has_template:
        raise InputError(
            f"--template chat: the tokenizer of {config.model} has no chat template",
            "pass --template plain (or auto), or a model whose tokenizer_config.json has one",
        )
    if config.template == "auto":
        return "chat" if has_template else "plain"
    return config.template


def _data_record(config: TuneConfig, encoded: Encoded) -> dict[str, Any]:
    digest = source_digest(config.data)
    return {
        "source": config.data,
        "split": config.split,
        "digest": None if digest is None else digest.to_json(),
        **encoded.to_json(),
    }


def _request(
    config: TuneConfig, loaded: LoadedModel, data: dict[str, Any], compute: str
) -> dict[str, Any]:
    """Everything that decides the training: a rerun resumes only when it is the same."""
    return {
        "config": config.training_request(),
        "compute_dtype": compute,
        "base_digest": loaded.digest.value,
        "data": data,
    }


# --------------------------------------------------------------------------------------------
# Train


def sft_loss(
    model: Any,
    examples: Sequence[Example],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> StepLoss:
    """The loss of one step: ``batch_size`` examples drawn uniformly with the step's generator,
    :func:`~lmassay.tune.pairs.response_loss` of ``model`` on them."""

    def loss(generator: torch.Generator) -> torch.Tensor:
        picks = torch.randint(0, len(examples), (batch_size,), generator=generator)  # (B,)
        batch = collate([examples[i] for i in picks.tolist()], pad_id).to(device)
        with autocast_context(device, autocast_dtype):
            logits = model(input_ids=batch.ids, attention_mask=batch.mask).logits  # (B, T, V)
            return response_loss(logits, batch.labels)

    return loss


def _train(
    config: TuneConfig,
    loaded: LoadedModel,
    encoded: Encoded,
    autocast_dtype: torch.dtype | None,
    work: Path,
    progress: Progress,
) -> tuple[Any, dict[str, Any]]:
    """Set up LoRA or full fine-tuning on ``loaded.model`` and run the shared loop (resuming from
    ``work/checkpoints``); return the trained model and the training record."""
    device = torch.device(loaded.device)
    checkpointing = config.gradient_checkpointing == "on" or (
        config.gradient_checkpointing == "auto" and device.type == "cuda"
    )
    if checkpointing:
        loaded.model.config.use_cache = False  # no key/value cache while training
        set_activation_checkpointing(loaded.model, on=True)
    torch.manual_seed(config.seed)  # LoRA's initialisation depends on the seed only
    if config.method == "lora":
        model = add_lora(loaded.model, config.lora_rank, config.lora_alpha)
    else:
        model = loaded.model
        for p in model.parameters():
            p.requires_grad_(True)
    n_trainable, n_total = count_parameters(model)
    settings = LoopSettings(
        objective="sft",
        steps=config.steps,
        lr=config.learning_rate,
        batch_size=config.batch_size,
        seq_len=min(config.max_length, loaded.max_length),
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
        autocast_dtype=autocast_dtype,
        keep_best=False,
    )
    pad = loaded.tokenizer.pad_token_id
    loss = sft_loss(
        model,
        encoded.examples,
        batch_size=config.batch_size,
        pad_id=pad if isinstance(pad, int) else loaded.prefix_token_id,
        device=device,
        autocast_dtype=autocast_dtype,
    )
    progress.log(
        f"training {n_trainable:,} of {n_total:,} parameters ({config.method}) on "
        f"{len(encoded.examples):,} pairs on {device.type}"
        + (f" in {autocast_dtype}" if autocast_dtype else "")
    )
    no_monitor = Streams(torch.empty(0, dtype=torch.long), None, {}, ())
    models = Models(model, None, contextlib.nullcontext, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loop = run_loop(
        models,
        no_monitor,
        settings,
        work / "checkpoints",
        progress,
        step_loss=loss,
        label="tune: training",
    )
    if checkpointing:
        set_activation_checkpointing(loaded.model, on=False)
    return model, {
        **_loop_record(loop),
        "method": config.method,
        "lora": {"rank": config.lora_rank, "alpha": config.lora_alpha, "targets": "all-linear"}
        if config.method == "lora"
        else None,
        "steps": config.steps,
        "lr": config.learning_rate,
        "batch_size": config.batch_size,
        "max_length": settings.seq_len,
        "schedule": SCHEDULE,
        "sampling": "batch_size pairs per step, uniform with replacement, seeded",
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "gradient_checkpointing": checkpointing,
        "device": device.type,
        "peak_memory_mib": peak_memory_mib(device),
    }


def _loop_record(loop: LoopResult) -> dict[str, Any]:
    summary = loop.summary()
    return {
        "steps_run": summary["steps_run"],
        "resumed_from_step": summary["resumed_from_step"],
        "loss_first": summary["loss_first"],
        "loss_last_mean": summary["loss_last_mean"],
        "loss_last_mean_of_steps": summary["loss_last_mean_of_steps"],
        "losses": [round(x, 6) for x in loop.losses],
        "seconds": summary["seconds"],
    }


def peak_memory_mib(device: torch.device) -> dict[str, float | None]:
    """Peak memory so far: the process's resident set (``VmHWM``; None where /proc is absent) and,
    on CUDA, the most GPU memory torch allocated since the training started."""
    rss = None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    rss = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    gpu = None
    if device.type == "cuda":
        gpu = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return {"process_rss": rss, "gpu_allocated": gpu}


# --------------------------------------------------------------------------------------------
# Save, attest, record


def _save(trained: Any, loaded: LoadedModel, method: str, folder: Path) -> dict[str, Any]:
    """The tuned model (LoRA merged) into ``folder`` in the base's dtype, with the base's tokenizer
    and config files; returns its digest and dtype."""
    model = trained.merge_and_unload() if method == "lora" else trained
    dtype = source_dtype(loaded.path) or "float32"
    model.to(getattr(torch, dtype))
    save_like_source(model, loaded.path, folder)
    return {"dtype": dtype, "model_digest": model_identity(folder).root.to_json()}


def _attest_config(config: TuneConfig, staged: Path, out: Path) -> AttestConfig:
    return AttestConfig(
        model=str(staged),
        reference=config.model,
        reference_revision=config.revision,
        probes=config.attest,
        out=str(out),
        device=config.device,
        allow_pickle=config.allow_pickle,
        trust_remote_code=config.trust_remote_code,
        seed=config.seed,
        max_file_size=config.max_file_size,
    )


def _drift(result: AttestationResult) -> dict[str, Any]:
    """The attestation's verdict and per-category drift of the tuned model from its base."""
    document = result.attestation
    return {
        "path": f"{ATTESTATION_FOLDER}/attestation.json",
        "verdict": document["verdict"],
        "flagged": document["flagged"],
        "comparison": document["comparison"],
        "categories": [
            {
                "name": c["name"],
                "n_samples": c["n_samples"],
                "mean_kl": c["mean_kl"],
                "delta_bpb": c["delta_bpb"],
                "effect": c["effect"],
                "q_value": c["q_value"],
                "flagged": c["flagged"],
            }
            for c in document["categories"]
        ],
    }
