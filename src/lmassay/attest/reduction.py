"""Per-token scalars from logits: the one reduction of lmassay, and the logits it reduces.

:func:`reduce_rows` turns the float32 logits of the scored rows of one batch (of one model, or of
a model and a reference in lock-step) into per-token scalars — the log-probability of the actual
token, the top-1 token, ``KL(reference ‖ model)`` and optionally the top-k — chunk by chunk, so the
full-vocabulary logits never outlive the chunk that made them.  The in-memory engine
(:mod:`lmassay.attest.scoring`) and layer streaming (:mod:`lmassay.attest.streaming`) both call it.

The logits come as a :data:`RowLogits` function: :func:`row_logits` runs a model on a batch, and
for the families of :data:`FUSED_HEAD_TYPES` applies the output layer to the scored rows only
(:func:`head_rows`), so the ``(B, T, V)`` logits are never materialised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from lmassay.attest.windows import BatchInputs

# Rows × vocabulary per reduction chunk (float32 logits and log-softmax buffers of this size are
# made once per batch and reused for every chunk). On a CPU 32 MiB: about 166 rows at GPT-2's
# vocabulary — the head's weight is read once per chunk, so fewer rows (41 at 8 MiB) were 1.5x
# slower, and more fall out of the last-level cache; on a GPU 64 MiB keeps the kernels busy.
_CHUNK_ELEMENTS = {"cuda": 1 << 24, "mps": 1 << 24, "cpu": 1 << 23}

FUSED_HEAD_TYPES = frozenset(
    {"gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3"}
)
"""``config.model_type`` values whose logits are exactly ``get_output_embeddings()(last hidden
state of base_model)`` (no soft-capping or logit scaling), so the head can be applied to the scored
rows only."""

RowLogits = Callable[[int, int], "torch.Tensor"]
"""``rows(start, stop)`` → float32 logits ``(stop - start, V)`` of the scored rows ``start:stop``."""


def output_width(model: Any) -> int:
    """The number of logits ``model`` gives per position (its output layer's rows)."""
    out = model.get_output_embeddings()
    return int(out.weight.shape[0]) if out is not None else int(model.config.vocab_size)


def fused_head(model: Any) -> bool:
    """Whether ``model``'s logits are its output layer applied to ``base_model``'s last hidden state."""
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) in FUSED_HEAD_TYPES
        and getattr(model, "base_model", model) is not model
        and model.get_output_embeddings() is not None
    )


def row_logits(model: Any, inputs: BatchInputs) -> RowLogits:
    """Run ``model`` on the batch; return a function giving float32 logits of scored rows."""
    device = next(model.parameters()).device
    ids = inputs.input_ids.to(device)
    mask = inputs.attention_mask.to(device)
    rows = inputs.row_index.to(device)
    if fused_head(model):
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        return head_rows(hidden.reshape(-1, hidden.shape[-1])[rows], model.get_output_embeddings())
    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    return lambda start, stop: flat[rows[start:stop]].float()  # (C, V)


def head_rows(hidden: torch.Tensor, head: Any) -> RowLogits:
    """Row logits from final hidden states ``(N, H)`` of the scored rows and the output layer.

    A float32 linear head writes each chunk into one buffer, made at the first (largest) chunk
    and reused for the rest of the batch; the tensor returned is valid until the next call.
    """
    import torch

    if not (
        isinstance(head, torch.nn.Linear)
        and head.weight.dtype == torch.float32
        and hidden.dtype == torch.float32
    ):
        return lambda start, stop: head(hidden[start:stop]).float()  # (C, V)
    weight, bias = head.weight, head.bias  # (V, H), (V,) or None
    buffers: list[torch.Tensor] = []

    def logits(start: int, stop: int) -> torch.Tensor:
        if not buffers or buffers[0].shape[0] < stop - start:
            buffers[:] = [hidden.new_empty((stop - start, weight.shape[0]))]
        out = buffers[0][: stop - start]  # (C, V)
        if bias is None:
            return torch.matmul(hidden[start:stop], weight.t(), out=out)
        return torch.addmm(bias, hidden[start:stop], weight.t(), out=out)

    return logits


def reduce_rows(
    sources: Sequence[RowLogits],
    targets: torch.Tensor,
    widths: Sequence[int],
    topk: int = 0,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Per-token scalars of the scored rows of one (model) or two (model, reference) sources.

    The one reduction of lmassay: the in-memory engine and layer streaming both call it.  Rows
    are taken in chunks of about ``_CHUNK_ELEMENTS`` logits, in float32, and each chunk is reduced
    before the next is made.  Per model, ``lp = log_softmax(z)`` (one fused kernel, into a buffer
    reused for every chunk) gives ``log p(t) = lp[t]``; the top-1 token is ``argmax z``; and
    ``KL(r ‖ m) = Σ_v exp(lp_r(v)) (lp_r(v) − lp_m(v))``.  When the two output widths differ the KL
    is over the first ``min`` columns, each renormalised.  Identical logits give exactly 0.
    Keys: ``logprob_model``, ``top1_model`` (and ``_reference``), ``kl``, ``topk_*``.
    """
    import torch

    n_rows = int(targets.shape[0])
    elements = _CHUNK_ELEMENTS.get(device, _CHUNK_ELEMENTS["cpu"])
    chunk = max(1, min(n_rows, elements // max(widths)))
    names = ["model", "reference"][: len(sources)]
    common = min(widths)
    buffers: list[torch.Tensor | None] = [None] * len(sources)
    parts: dict[str, list[np.ndarray]] = {}

    def keep(key: str, value: torch.Tensor) -> None:
        parts.setdefault(key, []).append(value.cpu().numpy())

    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        tgt = targets[start:stop]
        for_kl = []
        for i, (name, source) in enumerate(zip(names, sources, strict=True)):
            z = source(start, stop)  # (C, V) float32
            buffer = buffers[i]
            if buffer is None or buffer.shape[1] != z.shape[1] or buffer.device != z.device:
                buffer = buffers[i] = torch.empty((chunk, z.shape[1]), device=z.device)
            keep(f"top1_{name}", z.argmax(dim=-1))  # (C,)
            if len(sources) == 2 and widths[0] != widths[1]:
                for_kl.append(torch.log_softmax(z[:, :common], dim=-1))  # (C, common)
            lp = torch.log_softmax(z, dim=-1, out=buffer[: stop - start])  # (C, V)
            keep(f"logprob_{name}", lp.gather(-1, tgt.to(lp.device)[:, None]).squeeze(-1))
            if topk:
                values, ids = lp.topk(topk, dim=-1)  # (C, k)
                keep(f"topk_{name}_ids", ids)
                keep(f"topk_{name}_logprobs", values)
            if len(sources) == 2 and widths[0] == widths[1]:
                for_kl.append(lp)
        if len(for_kl) == 2:
            keep("kl", _kl_rows(for_kl[0], for_kl[1]))
        del for_kl
    return {key: np.concatenate(values) for key, values in parts.items()}


def _kl_rows(lp_model: torch.Tensor, lp_reference: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ model) per row, in nats, from the two log-softmaxes ``(C, V)``."""
    import torch

    lp_m = lp_model.to(lp_reference.device)
    p_r = lp_reference.exp()  # (C, V)
    diff = torch.sub(lp_reference, lp_m)  # (C, V)
    kl = torch.linalg.vecdot(p_r, diff)  # (C,)
    if not bool(torch.isfinite(kl).all()):  # -inf logits (masked tokens): drop 0 · inf terms
        kl = torch.where(p_r > 0, p_r * diff, torch.zeros_like(p_r)).sum(dim=-1)
    return kl.clamp_min(0.0)
