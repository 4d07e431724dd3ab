"""The repair training loop: LoRA or full fine-tuning, language-model or distillation loss,
held-out monitoring, early stopping and resumable checkpoints.

The loop itself (optimizer, schedule, clipping, checkpoints, resume) is shared: ``lmassay tune``
runs it with its own loss (``run_loop(step_loss=...)``: supervised fine-tuning on instruction
pairs, :mod:`lmassay.tune`), without a reference and so without monitoring. The model set-up
parts (:func:`add_lora`, :func:`set_activation_checkpointing`, :func:`train_dtypes`,
:func:`count_parameters`) are shared the same way.

One step (repair's own loss):

- ``lm`` objective (modes wide and narrow): ``batch_size`` windows of ``seq_len`` tokens at random
  offsets of the training stream (``EOS text EOS text ...``), mean next-token cross-entropy.
- ``distill`` objective: the same windows, mean KL(reference ‖ model) per position.
- Either objective, when anchor text is given: plus ``kl_weight`` × mean KL(target ‖ model) on
  ``batch_size`` windows of the anchor stream. The target (``anchor_to``) is the reference for
  distillation, so every category is pulled toward the known-good model (the flagged ones by the
  training batch, the others by the anchor batch), and *start*, the model before repair (the base
  with the LoRA adapters switched off, or a frozen copy for full fine-tuning), for narrow
  fine-tuning, which needs no reference.

AdamW (β = 0.9, 0.95; no weight decay on LoRA factors, 0.01 otherwise), linear warm-up over 10% of
the steps (at most 50), cosine decay to lr/10, gradients clipped to norm 1.  The window offsets come
from a generator seeded with ``seed``; together with the checkpointed RNG states a resumed run
repeats the uninterrupted one.

Monitoring (when a reference with the same tokenizer is loaded and at least two groups of held-out
text exist): every ``eval_every`` steps, each held-out text is read as the attestation reads a
probe (from the prefix token, at most ``seq_len`` tokens) and scored by its mean KL(reference ‖
model). A group is a category of the repair data, or the held-out texts sampled from the
reference (:data:`lmassay.repair.anchor.SAMPLED`). A group's *level* is the mean over its texts
and its *effect* is its level minus the median level of the other groups (the attestation's
effect, measured on held-out repair text instead of the probes). Two numbers follow:

- the *gap*: the largest effect of a repaired category;
- the *worst*: the largest effect of any category, repaired or not, and which it is.

The collateral guard: a check is *within the guard* when no group that is not repaired (a
category, or the reference samples) has a level more than ``tolerance`` (half the attestation's
noise floor) above its level before training.

Stopping: with ``stop_gap`` set, training stops at the first check after a step where the worst
effect is at most ``stop_gap`` and the check is within the guard, unless the check before
training already meets it: then the held-out text does not show what the probes showed, and
training runs all its steps.

Keeping the best: with ``keep_best``, the trainable weights of the best check are kept (the
check before training included): among the checks within the guard, the latest whose worst
effect is within ``tolerance / 2`` of the lowest. They are restored at the end when they are not
the last check's, so a category that the repair pushed out of line is not handed on when an
earlier state had none.

The worst effect is taken over the categories; the reference samples are one group of mixed
topics, whose level is not comparable to a category's (they are the reference's own text), so
they count in the medians and in the guard but are not a candidate for the worst.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmassay.choices import Dtype
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.repair.anchor import SAMPLED
from lmassay.repair.checkpoint import (
    TrainingState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from lmassay.repair.objectives import kl_per_position, kl_to_teacher, next_token_loss

StepLoss = Callable[[torch.Generator], torch.Tensor]
"""The loss of one training step, drawn with the data sampler's generator (checkpointed, so a
resumed run draws the same batches)."""


@dataclass(frozen=True)
class LoopSettings:
    """The numbers of one training run (see the module docstring)."""

    objective: str  # "lm" or "distill" (a name only when run_loop is given a step_loss)
    steps: int
    lr: float
    batch_size: int
    seq_len: int
    seed: int
    kl_weight: float = 1.0
    eval_every: int = 25
    stop_gap: float | None = None
    checkpoint_every: int = 50
    autocast_dtype: torch.dtype | None = None  # bf16 autocast on accelerators, None on CPU
    anchor_to: str = "start"  # "start" (the model before repair) or "reference"
    keep_best: bool = True
    tolerance: float = 0.0  # how far a group not repaired may rise; half the noise floor


@dataclass
class LoopResult:
    """What the loop did: losses, monitoring history, where it stopped and why."""

    losses: list[float]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_run: int = 0
    resumed_from: int | None = None
    stopped_early: bool = False
    early_stop_note: str | None = None
    seconds: float = 0.0
    best_step: int | None = None  # the check with the smallest worst effect
    best_worst: float | None = None
    restored_best: bool = False  # the weights of best_step replaced the last step's

    def summary(self) -> dict[str, Any]:
        tail = self.losses[-10:]
        return {
            "steps_run": self.steps_run,
            "resumed_from_step": self.resumed_from,
            "stopped_early": self.stopped_early,
            "early_stop_note": self.early_stop_note,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last_mean": sum(tail) / len(tail) if tail else None,
            "loss_last_mean_of_steps": len(tail),
            "monitor": self.history,
            "best_step": self.best_step,
            "best_worst_effect": self.best_worst,
            "restored_best": self.restored_best,
            "seconds": round(self.seconds, 2),
        }


def token_stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """``EOS text EOS text ... EOS`` as one tensor of ids, shape ``(N,)``."""
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise InputError(
            "the model's tokenizer has no EOS token", "give a tokenizer with an EOS token"
        )
    stream: list[int] = [eos]
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    return torch.tensor(stream, dtype=torch.long)


def _check_stream(stream: torch.Tensor, seq_len: int, role: str) -> None:
    if stream.numel() < seq_len + 1:
        raise InputError(
            f"the {role} repair text has {stream.numel()} tokens, fewer than --seq-len + 1 = "
            f"{seq_len + 1}",
            "give more repair text or a shorter --seq-len",
        )


@dataclass
class Streams:
    """Token streams of one run, and the held-out texts that only monitor it."""

    train: torch.Tensor  # (N,) LM or distillation target text
    anchor: torch.Tensor | None  # (M,) distillation anchor text, or None
    monitor: dict[str, list[list[int]]]  # held-out texts by category: prefix token + ids
    repaired: tuple[str, ...]  # the categories being repaired


def monitor_ids(tokenizer: Any, texts: Sequence[str], prefix: int, seq_len: int) -> list[list[int]]:
    """Each text as the attestation reads it: the prefix token, then its first tokens."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [[prefix, *ids[: seq_len - 1]] for ids in encoded if ids]


@dataclass
class Models:
    """The model being trained and the frozen models its losses and monitoring read."""

    model: Any  # the trainable model (a peft model for LoRA)
    reference: Any | None  # the known-good model, or None
    start: Callable[[], contextlib.AbstractContextManager[Any]]  # context giving the start model
    device: torch.device


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _lr_at(step: int, settings: LoopSettings) -> float:
    warmup = max(1, min(50, settings.steps // 10))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    done = (step - warmup) / max(1, settings.steps - warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * done)))


def _sample_kls(models: Models, rows: list[list[int]]) -> list[float]:
    """Mean KL(reference ‖ model) over the scored positions of each row (batches of 8)."""
    reference = models.reference
    assert reference is not None  # _monitor checks it
    out: list[float] = []
    for first in range(0, len(rows), 8):
        chunk = rows[first : first + 8]
        width = max(len(r) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T), right-padded
        mask = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(models.device), mask.to(models.device)
        student = models.model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
        teacher = reference(input_ids=ids, attention_mask=mask).logits[:, :-1]
        kl = kl_per_position(student, teacher)  # (B, T-1)
        scored = mask[:, 1:].float()  # (B, T-1): positions with a next token
        out.extend((kl * scored).sum(1).div(scored.sum(1).clamp(min=1)).tolist())
    return out


def _monitor(models: Models, streams: Streams, settings: LoopSettings) -> dict[str, Any] | None:
    """Per held-out group, the mean over texts of their mean KL(reference ‖ model); each group's
    effect, the gap (the largest effect of a repaired category) and the worst (the largest effect
    of any group); see the module docstring. None without a reference or with fewer than two
    groups."""
    groups = [c for c in streams.monitor if streams.monitor[c]]
    repaired = [c for c in streams.repaired if c in groups]
    if models.reference is None or len(groups) < 2:
        return None
    models.model.eval()
    levels: dict[str, float] = {}
    with torch.no_grad(), autocast_context(models.device, settings.autocast_dtype):
        for name in groups:
            values = _sample_kls(models, streams.monitor[name])
            levels[name] = sum(values) / len(values)
    models.model.train()
    effects = {
        name: levels[name] - statistics.median(levels[c] for c in groups if c != name)
        for name in groups
    }
    categories = [c for c in groups if c != SAMPLED] or groups
    worst = max(categories, key=lambda c: effects[c])
    return {
        "gap": max(effects[c] for c in repaired) if repaired else None,
        "worst": effects[worst],
        "worst_group": worst,
        "levels": levels,
        "effects": effects,
    }


def _step_loss(
    models: Models, streams: Streams, settings: LoopSettings, generator: torch.Generator
) -> torch.Tensor:
    offsets = torch.arange(settings.seq_len)

    def windows(stream: torch.Tensor) -> torch.Tensor:
        starts = torch.randint(
            0, stream.numel() - settings.seq_len, (settings.batch_size,), generator=generator
        )
        return stream[starts[:, None] + offsets].to(models.device)  # (B, T)

    batch = windows(streams.train)
    with autocast_context(models.device, settings.autocast_dtype):
        ones = torch.ones_like(batch)  # (B, T): windows have no padding
        logits = models.model(input_ids=batch, attention_mask=ones).logits  # (B, T, V)
        if settings.objective == "lm":
            loss = next_token_loss(logits, batch)
        else:
            assert models.reference is not None  # the run checks that distill has a reference
            with torch.no_grad():
                teacher = models.reference(input_ids=batch, attention_mask=ones).logits
            loss = kl_to_teacher(logits, teacher)
        if streams.anchor is not None and settings.kl_weight > 0:
            anchor = windows(streams.anchor)
            with torch.no_grad(), _anchor_target(models, settings) as target:
                target_logits = target(input_ids=anchor, attention_mask=ones).logits  # (B, T, V)
            loss = loss + settings.kl_weight * kl_to_teacher(
                models.model(input_ids=anchor, attention_mask=ones).logits, target_logits
            )
        return loss


def _anchor_target(
    models: Models, settings: LoopSettings
) -> contextlib.AbstractContextManager[Any]:
    """The model the anchor text is pulled toward: the reference, or the start model."""
    if settings.anchor_to == "reference":
        assert models.reference is not None  # the run anchors to the reference only with one
        return contextlib.nullcontext(models.reference)
    return models.start()


def _repaired(result: LoopResult, stop_gap: float | None) -> bool:
    """Whether a held-out check after the first step meets ``stop_gap`` (every group's effect is
    at most it)."""
    if stop_gap is None or not result.history or result.history[-1]["step"] == 0:
        return False
    last = result.history[-1]
    return bool(last["worst"] <= stop_gap and last.get("within_guard", True))


def _effective_stop_gap(result: LoopResult, settings: LoopSettings) -> float | None:
    """``settings.stop_gap``, unless the check before training already meets it: then the
    held-out text does not show the difference the attestation found, and cannot tell when the
    repair is done, so training runs all its steps."""
    first = result.history[0] if result.history and result.history[0]["step"] == 0 else None
    if settings.stop_gap is None or first is None or first["worst"] > settings.stop_gap:
        return settings.stop_gap
    result.early_stop_note = (
        f"no early stop: the held-out worst effect before training, {first['worst']:+.4f}, is "
        f"already at most the stop gap {settings.stop_gap:g} (the held-out repair text does not "
        "show the difference the probes do)"
    )
    return None


class _Best:
    """The trainable weights of the best held-out check so far (see the module docstring)."""

    def __init__(self, step: int | None = None, worst: float | None = None) -> None:
        self.step, self.worst = step, worst
        self.weights: dict[str, torch.Tensor] | None = None

    def offer(
        self,
        step: int,
        history: list[dict[str, Any]],
        trainable: dict[str, torch.Tensor],
        tolerance: float,
    ) -> None:
        """Keep the weights of ``history[-1]`` (the check of ``step``) when it is within the
        collateral guard and its worst effect is within ``tolerance / 2`` of the lowest worst
        effect of the checks within the guard so far (so a later check wins a near tie)."""
        check = history[-1]
        if not check["within_guard"]:
            return
        lowest = min(h["worst"] for h in history if h["within_guard"])
        if self.worst is not None and check["worst"] > lowest + tolerance / 2:
            return
        self.step, self.worst = step, float(check["worst"])
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in trainable.items()}

    def restore(self, trainable: dict[str, torch.Tensor]) -> None:
        assert self.weights is not None  # restored only after a check was offered
        with torch.no_grad():
            for name, tensor in trainable.items():
                tensor.copy_(self.weights[name].to(tensor.device, tensor.dtype))


def _train_step(
    step_loss: StepLoss,
    settings: LoopSettings,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    step: int,
) -> float:
    """One optimizer step at the schedule's learning rate; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = _lr_at(step, settings)
    loss = step_loss(generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return float(loss.detach())


def _resume(
    checkpoints: Path,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    result: LoopResult,
    progress: Progress,
) -> tuple[int, float, _Best]:
    """Load the newest checkpoint, if any, into the optimizer, generator and ``result``; return
    the step it was taken after, the seconds trained before it and the best check so far (0, 0.0
    and no best without one)."""
    found = latest_checkpoint(checkpoints)
    if found is None:
        return 0, 0.0, _Best()
    state = load_checkpoint(found, trainable, optimizer, generator)
    result.losses, result.history, result.resumed_from = state.losses, state.history, state.step
    best = _Best(state.best_step, state.best_worst)
    best.weights = state.best_weights
    progress.log(f"resuming from the checkpoint of step {state.step} ({found})")
    return state.step, state.elapsed_s, best


def _check(
    models: Models,
    streams: Streams,
    settings: LoopSettings,
    step: int,
    result: LoopResult,
    best: _Best,
    trainable: dict[str, torch.Tensor],
) -> None:
    """One held-out check after ``step`` steps: the collateral guard (how far the groups not
    repaired rose since the check before training), recorded, and offered as the best."""
    check = _monitor(models, streams, settings)
    if check is None:
        return
    first = result.history[0]["levels"] if result.history else check["levels"]
    rises = [
        check["levels"][g] - first[g]
        for g in check["levels"]
        if g not in streams.repaired and g in first
    ]
    check["rise"] = max(rises, default=0.0)
    check["within_guard"] = check["rise"] <= settings.tolerance
    result.history.append({"step": step, **check})
    if settings.keep_best:
        best.offer(step, result.history, trainable, settings.tolerance)


def _note(result: LoopResult) -> str:
    note = f"loss {result.losses[-1]:.3f}"
    if result.history:
        last = result.history[-1]
        note += f", held-out worst {last['worst']:+.3f} ({last['worst_group']})"
    return note


def run_loop(
    models: Models,
    streams: Streams,
    settings: LoopSettings,
    checkpoints: Path,
    progress: Progress | None = None,
    *,
    step_loss: StepLoss | None = None,
    label: str = "repair: training",
) -> LoopResult:
    """Train ``models.model`` in place; resume from the newest checkpoint under ``checkpoints``.
    With ``settings.keep_best`` the model ends with the weights of the best held-out check.

    ``step_loss``: the loss of a step, instead of repair's windows of ``streams`` (whose
    ``train`` and ``anchor`` are then not read; ``monitor`` still is). ``label``: the progress
    bar's."""
    progress = progress or NullProgress()
    if step_loss is None:
        _check_stream(streams.train, settings.seq_len, "training")
        if streams.anchor is not None:
            _check_stream(streams.anchor, settings.seq_len, "anchor")
    loss_of = step_loss or (lambda generator: _step_loss(models, streams, settings, generator))
    model = models.model
    trainable: dict[str, torch.Tensor] = {
        name: p for name, p in model.named_parameters() if p.requires_grad
    }
    decay = 0.0 if any("lora_" in name for name in trainable) else 0.01
    optimizer = torch.optim.AdamW(
        list(trainable.values()), lr=settings.lr, betas=(0.9, 0.95), weight_decay=decay
    )
    generator = torch.Generator().manual_seed(settings.seed)
    result = LoopResult(losses=[])
    start_step, elapsed_before, best = _resume(
        checkpoints, trainable, optimizer, generator, result, progress
    )
    update = progress.task(label, settings.steps)
    update(start_step, settings.steps)
    if start_step == 0:
        _check(models, streams, settings, 0, result, best, trainable)
    stop_gap = _effective_stop_gap(result, settings)
    if result.early_stop_note:
        progress.log(result.early_stop_note)
    t0 = time.perf_counter()
    step = start_step
    model.train()
    try:
        while step < settings.steps and not _repaired(result, stop_gap):
            result.losses.append(_train_step(loss_of, settings, generator, optimizer, step))
            step += 1
            if step % settings.eval_every == 0 or step == settings.steps:
                _check(models, streams, settings, step, result, best, trainable)
            update(step, settings.steps, _note(result))
            if step % settings.checkpoint_every == 0 and step < settings.steps:
                elapsed = elapsed_before + time.perf_counter() - t0
                state = TrainingState(
                    step,
                    result.losses,
                    result.history,
                    elapsed,
                    best.step,
                    best.worst,
                    best.weights,
                )
                save_checkpoint(checkpoints, state, trainable, optimizer, generator)
    finally:
        model.eval()
    result.stopped_early = step < settings.steps
    result.steps_run = step
    result.best_step, result.best_worst = best.step, best.worst
    if best.weights is not None and best.step != _last_check_step(result):
        best.restore(trainable)
        result.restored_best = True
        progress.log(
            f"kept the weights of step {best.step} (held-out worst effect {best.worst:+.4f}), "
            f"the best check; later checks were worse"
        )
    result.seconds = elapsed_before + time.perf_counter() - t0
    return result


def _last_check_step(result: LoopResult) -> int | None:
    return result.history[-1]["step"] if result.history else None


# --------------------------------------------------------------------------------------------
# Model set-up, shared by repair (:mod:`lmassay.repair.fine_tune`) and tune (:mod:`lmassay.tune`)


def train_dtypes(dtype: str, method: str, device: str) -> tuple[Dtype, torch.dtype | None]:
    """(load dtype of the trained model, autocast dtype) for ``--dtype`` and ``--method``.

    ``auto`` trains in bfloat16 on a CUDA GPU that supports it and in float32 elsewhere (CPUs
    without native bf16 run it several times slower); ``bfloat16`` is honoured on a CPU too.
    LoRA keeps the frozen base in bf16 (its adapters stay float32); full fine-tuning keeps
    float32 master weights and computes in bf16."""
    bf16 = dtype == "bfloat16" or (
        dtype == "auto" and device.startswith("cuda") and torch.cuda.is_bf16_supported()
    )
    if not bf16:
        return "float32", None
    return ("bfloat16" if method == "lora" else "float32"), torch.bfloat16


def add_lora(model: Any, rank: int, alpha: int) -> Any:
    """``model`` wrapped by peft with LoRA adapters of ``rank`` on every linear layer (no
    dropout, no bias); only the adapters train."""
    import warnings

    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's note that GPT-2's Conv1D sets fan_in_fan_out
        return get_peft_model(model, lora)


def set_activation_checkpointing(model: Any, *, on: bool) -> None:
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


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
