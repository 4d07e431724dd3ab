"""Resumable training state, written without pickle.

A checkpoint is a folder ``step-NNNNNNN`` holding

- ``trainable.safetensors``: the trainable parameters by name (LoRA factors, or every weight);
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW's per-parameter tensors, and its
  hyper-parameters and parameter order;
- ``rng.safetensors``: the states of the data sampler's generator and torch's CPU (and CUDA) RNGs;
- ``state.json``: the step, the losses so far, the monitoring history and the best check's step;
- ``best.safetensors`` (when a held-out check was made): the trainable parameters at the best
  check (see :mod:`lmassay.repair.training`), so a resumed run restores the same weights.

It is written into a temporary folder and renamed, and only the newest complete one is kept, so a
kill at any moment leaves either the previous or the new checkpoint, never a half-written one.

The checkpoints of a command's run live in its work folder (``OUT.partial/``), which
:func:`prepare_work` ties to the run's request, so only the same request resumes them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmassay._atomic import atomic_write_json
from lmassay.cached_build import matching_card
from lmassay.errors import InputError

_PREFIX = "step-"
REQUEST_FILE = "request.json"


def prepare_work(work: Path, request: dict[str, Any], restart: bool, *, what: str) -> None:
    """Create the work folder ``work`` holding ``request``, or check that the one there belongs to
    this request (so its checkpoints can be resumed); ``restart`` discards it first. ``what``
    names the run in the message (``"repair"``, ``"tune"``)."""
    if work.exists() and restart:
        shutil.rmtree(work)
    if work.exists():
        if matching_card(work, request, card_name=REQUEST_FILE, key=None) is None:
            raise InputError(
                f"{work} holds an interrupted {what} with other settings or inputs",
                "rerun with the same settings to resume it, or pass --restart to discard it",
            )
        return
    work.mkdir(parents=True)
    atomic_write_json(work / REQUEST_FILE, request)


@dataclass
class TrainingState:
    """What a resumed run needs besides the tensors."""

    step: int
    losses: list[float]
    history: list[dict[str, Any]]
    elapsed_s: float
    best_step: int | None = None
    best_worst: float | None = None
    best_weights: dict[str, torch.Tensor] | None = None


def _rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {"sampler": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{index}"] = state
    return tensors


def save_checkpoint(
    folder: Path,
    state: TrainingState,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> Path:
    """Write the checkpoint of ``state.step`` under ``folder`` and drop the older ones."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{_PREFIX}{state.step:07d}"
    tmp = folder / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in trainable.items()},
        tmp / "trainable.safetensors",
    )
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    save_file(tensors, tmp / "optimizer.safetensors")
    atomic_write_json(tmp / "optimizer.json", {"param_groups": opt["param_groups"]})
    save_file(_rng_tensors(generator), tmp / "rng.safetensors")
    if state.best_weights is not None:
        save_file(
            {k: v.contiguous() for k, v in state.best_weights.items()}, tmp / "best.safetensors"
        )
    atomic_write_json(
        tmp / "state.json",
        {
            "step": state.step,
            "losses": state.losses,
            "history": state.history,
            "elapsed_s": state.elapsed_s,
            "best_step": state.best_step,
            "best_worst": state.best_worst,
        },
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in folder.glob(f"{_PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder``, or None."""
    found = sorted(p for p in folder.glob(f"{_PREFIX}*") if (p / "state.json").is_file())
    return found[-1] if found else None


def load_checkpoint(
    path: Path,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> TrainingState:
    """Restore the parameters (in place), the optimizer and the RNGs from ``path``.

    A checkpoint that cannot be read back (a file cut short, ``state.json`` that is not JSON, other
    parameters than this run trains) raises :class:`InputError` naming it; ``--restart`` discards it.
    """
    try:
        return _restore(path, trainable, optimizer, generator)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        detail = str(exc) if isinstance(exc, _Mismatch) else f"{type(exc).__name__}: {exc}"
        raise InputError(
            f"the training checkpoint {path} cannot be resumed ({detail})",
            "pass --restart to discard the interrupted run and train from the start",
        ) from exc


class _Mismatch(ValueError):
    """A checkpoint that reads back but does not fit this run."""


def _restore(
    path: Path,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> TrainingState:
    info = json.loads((path / "state.json").read_text(encoding="utf-8"))  # first: the cheapest
    saved = load_file(path / "trainable.safetensors")
    if set(saved) != set(trainable):
        raise _Mismatch("it holds other parameters than this run trains")
    with torch.no_grad():
        for name, tensor in trainable.items():
            tensor.copy_(saved[name].to(tensor.device, tensor.dtype))
    flat = load_file(path / "optimizer.safetensors")
    groups = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))["param_groups"]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = load_file(path / "rng.safetensors")
    generator.set_state(rng["sampler"])
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    best_step = info.get("best_step")
    best_weights = None
    if best_step is not None:
        best_weights = load_file(path / "best.safetensors")
        if set(best_weights) != set(trainable):
            raise _Mismatch("its best weights are other parameters than this run trains")
    return TrainingState(
        step=int(info["step"]),
        losses=[float(x) for x in info["losses"]],
        history=list(info["history"]),
        elapsed_s=float(info["elapsed_s"]),
        best_step=None if best_step is None else int(best_step),
        best_worst=None if best_step is None else float(info["best_worst"]),
        best_weights=best_weights,
    )
