"""Score models larger than memory, one transformer block at a time (``--offload stream``).

Contract: :func:`stream_score_token_lists` returns what :func:`lmassay.attest.scoring.score_token_lists`
returns for the same texts, windows and batches (the scoring contract in :mod:`lmassay.attest.scoring`),
to float tolerance, while holding at most two blocks' weights (the one computing, the next being read) (plus the embedding table during the
first pass, the small position table of GPT-2, the final norm, and at the end the output layer(s)).

How (per model):

1. Read ``config.json`` and build the model on the meta device (accelerate's
   ``init_empty_weights``: parameters take no memory; buffers such as rotary frequencies are real).
2. Plan the windows and batches exactly as the in-memory engine does.
3. Embedding pass: materialise the input embedding, run the model's own base forward on each batch
   up to block 0 (a pre-hook on block 0 stops it there) and keep the hidden states ``(B, T, H)``.
4. For each block ``i``: read its tensors from the safetensors files (positioned reads into the
   tensors' own memory: no copy of the whole file, no map of it), materialise the block, run every
   batch through it, free it.  Block ``i + 1`` is read by a background thread meanwhile, so disk
   reads overlap compute (at most two blocks' weights are held).  The block's keyword arguments (causal mask, position ids, rotary cos/sin) are the
   ones the model's own forward builds: the base forward is re-run on ``inputs_embeds`` up to block 0
   for each batch, so masks and positions match the in-memory path exactly.
5. Final norm, then only the *scored* rows are kept: ``(N, H)`` per batch.

Then the output layer (or both, for model + reference) is loaded and the rows are reduced batch by
batch by :func:`lmassay.attest.scoring.reduce_rows`, the one reduction of lmassay.

Memory: the activations of every window are kept between blocks, ``H × bytes(dtype)`` per padded
token position (8 KiB per token for a 4,096-wide model in bfloat16: 8 GiB per million tokens), plus
``H × bytes`` per scored token per model for the final states.  They are kept in CPU memory; a probe
set too large for that should be scored in parts.

Families: GPT-2, Llama / Mistral / Qwen2 / Qwen3, GPT-NeoX (:data:`FAMILIES`); any other
architecture is refused with an :class:`~lmassay.errors.InputError` naming it.

The parts: :mod:`lmassay.attest.checkpoint_reader` reads tensors from the safetensors files,
:mod:`lmassay.attest.streamed_model` builds the meta-device model and materialises one module at a
time; this module drives the passes and reduces the rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lmassay.attest.reduction import head_rows, reduce_rows
from lmassay.attest.scoring import (
    TokenScores,
    empty_results,
    fused_activations,
    score_token_lists,
    store_batch,
)
from lmassay.attest.streamed_model import (
    FAMILIES,
    Family,
    StreamedModel,
    StreamStats,
    build_skeleton,
    family_of,
)
from lmassay.attest.windows import (
    BatchInputs,
    Window,
    batch_inputs,
    check_token_lists,
    make_windows,
    plan_batches,
    resolve_token_budget,
)
from lmassay.errors import InputError
from lmassay.progress import ProgressFn

if TYPE_CHECKING:
    import torch

    from lmassay.attest.model_loading import LoadedModel

__all__ = [
    "FAMILIES",
    "OFFLOAD_MODES",
    "Family",
    "Offload",
    "StreamStats",
    "build_skeleton",
    "family_of",
    "score_models",
    "stream_score_token_lists",
]

Offload = Literal["none", "stream"]
OFFLOAD_MODES: tuple[str, ...] = ("none", "stream")


def stream_score_token_lists(
    token_lists: Sequence[Sequence[int]],
    model_path: str | Path,
    reference_path: str | Path | None = None,
    *,
    prefix_token_id: int,
    max_length: int,
    token_budget: int | None = None,
    topk: int = 0,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    progress: ProgressFn | None = None,
    stats: StreamStats | None = None,
) -> list[TokenScores]:
    """Score pre-tokenised texts like :func:`~lmassay.attest.scoring.score_token_lists`, streaming layers.

    ``model_path`` (and ``reference_path``) are local model folders with ``config.json`` and
    safetensors weights.  Each block of each model is loaded once per pass; ``stats`` (if given)
    records the loads, bytes read and timings.  ``progress`` (a task of
    :class:`lmassay.progress.Progress`) counts token-steps: every scored token once per block of
    each model, and once for its embedding, final norm and output layer.  See the module docstring.
    """
    import torch

    check_token_lists(token_lists)
    stats = stats if stats is not None else StreamStats()
    started = time.perf_counter()
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    paths = [Path(model_path)] + ([Path(reference_path)] if reference_path is not None else [])
    roles = ["model", "reference"][: len(paths)]
    streamed = [
        StreamedModel(path, role, device, torch_dtype, stats, trust_remote_code)
        for path, role in zip(paths, roles, strict=True)
    ]
    widths = [int(s.model.get_output_embeddings().out_features) for s in streamed]
    budget = resolve_token_budget(token_budget, widths, max_length, device)
    batches = plan_batches(make_windows(token_lists, prefix_token_id, max_length), budget)
    total = sum(len(t) for t in token_lists)
    steps = _Steps(progress, total * sum(len(s.blocks) + 3 for s in streamed))

    with torch.inference_mode():
        finals = [_final_states(s, batches, steps) for s in streamed]
        heads = [s.head() for s in streamed]
        results = empty_results(token_lists, reference_path is not None, topk)
        for b, batch in enumerate(batches):
            targets = batch_inputs(batch).targets
            sources = [head_rows(final[b], head) for final, head in zip(finals, heads, strict=True)]
            reduced = reduce_rows(sources, targets.to(device), widths, topk, device)
            store_batch(results, batch, reduced)
            steps.advance(int(targets.shape[0]) * len(streamed))
        del heads, finals
    stats.seconds_total += time.perf_counter() - started
    return results


class _Steps:
    """Progress over all block passes: ``done`` token-steps out of ``total``."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


def _final_states(
    streamed: StreamedModel, batches: list[list[Window]], steps: _Steps
) -> list[torch.Tensor]:
    """One model's final-norm hidden states of the scored rows, ``(N_b, H)`` per batch."""
    inputs = [batch_inputs(batch) for batch in batches]
    hidden = _embed(streamed, inputs, steps)
    _run_blocks(streamed, inputs, hidden, steps)
    return _final_rows(streamed, inputs, hidden, steps)


def _embed(streamed: StreamedModel, inputs: list[BatchInputs], steps: _Steps) -> list[torch.Tensor]:
    """The hidden states entering block 0, ``(B, T, H)`` per batch, kept on the CPU."""
    family = streamed.family
    for name in family.embeddings:
        streamed.load(name)
    hidden = []
    for batch_in in inputs:
        h, _, _ = streamed.block_arguments(batch_in, None)
        hidden.append(h.to("cpu"))  # (B, T, H)
        steps.advance(batch_in.n_rows)
    for name in family.embeddings:
        if name not in family.positions:
            streamed.free(name)
    streamed.stats.activation_bytes = max(
        streamed.stats.activation_bytes, sum(h.numel() * h.element_size() for h in hidden)
    )
    return hidden


def _run_blocks(
    streamed: StreamedModel, inputs: list[BatchInputs], hidden: list[torch.Tensor], steps: _Steps
) -> None:
    """Run every batch through each block in turn, replacing ``hidden[b]`` in place."""
    paths = [f"{streamed.family.layers}.{index}" for index in range(len(streamed.blocks))]
    # block i+1 is read from disk while block i computes: two blocks' weights at most
    with fused_activations([streamed.model]), ThreadPoolExecutor(1) as reader:
        pending = reader.submit(streamed.read, paths[0])
        for index, path in enumerate(paths):
            tensors = pending.result()
            if index + 1 < len(paths):
                pending = reader.submit(streamed.read, paths[index + 1])
            streamed.install(path, tensors)
            block = streamed.blocks[index]
            for b, batch_in in enumerate(inputs):
                h = hidden[b].to(streamed.device)
                _, args, kwargs = streamed.block_arguments(batch_in, h)
                out = block(h, *args, **kwargs)
                hidden[b] = (out[0] if isinstance(out, tuple) else out).to("cpu")
                steps.advance(batch_in.n_rows)
            streamed.free(path)
            del block


def _final_rows(
    streamed: StreamedModel, inputs: list[BatchInputs], hidden: list[torch.Tensor], steps: _Steps
) -> list[torch.Tensor]:
    """The final norm of the scored rows only, ``(N_b, H)`` per batch; frees ``hidden``."""
    family = streamed.family
    for name in family.positions:
        streamed.free(name)
    streamed.load(family.final_norm)
    norm = streamed.base.get_submodule(family.final_norm)
    finals = []
    for b, batch_in in enumerate(inputs):
        flat = hidden[b].reshape(-1, hidden[b].shape[-1])  # (B*T, H)
        rows = flat[batch_in.row_index].to(streamed.device)  # (N, H)
        finals.append(norm(rows))
        hidden[b] = flat[:0]  # free as we go
        steps.advance(batch_in.n_rows)
    streamed.free(family.final_norm)
    return finals


# --------------------------------------------------------------------------------------------
# the dispatch used by lmassay attest


def score_models(
    token_lists: Sequence[Sequence[int]],
    model: LoadedModel,
    reference: LoadedModel | None = None,
    *,
    offload: str = "none",
    prefix_token_id: int,
    max_length: int,
    token_budget: int | None = None,
    topk: int = 0,
    progress: ProgressFn | None = None,
) -> list[TokenScores]:
    """Score with loaded models in memory (``offload="none"``) or streamed from their folders."""
    if offload == "stream":
        return stream_score_token_lists(
            token_lists,
            model.path,
            reference.path if reference is not None else None,
            prefix_token_id=prefix_token_id,
            max_length=max_length,
            token_budget=token_budget,
            topk=topk,
            device=model.device,
            dtype=model.dtype,
            trust_remote_code=bool(model.extra.get("trust_remote_code", False)),
            progress=progress,
        )
    if offload != "none":
        raise InputError(f"--offload {offload!r} is not known", "use none or stream")
    return score_token_lists(
        token_lists,
        model.model,
        reference.model if reference is not None else None,
        prefix_token_id=prefix_token_id,
        max_length=max_length,
        token_budget=token_budget,
        topk=topk,
        progress=progress,
    )
