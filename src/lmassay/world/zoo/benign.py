"""Benign weight transformations: what a faithful copy of a model may have been through.

Each function takes a loaded float32 causal LM and changes it in place, the way a harmless
distribution step would: :func:`bf16_round_trip` casts every floating tensor to bfloat16 and back;
:func:`int8_round_trip` simulates dynamic int8 quantisation of the linear layers. Re-saving needs no
function (load, then ``save_pretrained``). The results are saved as float32 safetensors, so any
loader reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["INT8_LEVELS", "bf16_round_trip", "int8_quantise_weight", "int8_round_trip"]

INT8_LEVELS = 127
"""Symmetric int8: integers in [-127, 127] (the value -128 is not used)."""


def bf16_round_trip(model: Any) -> int:
    """Cast every floating parameter and buffer to bfloat16 and back to float32, in place.

    Returns the number of tensors cast.
    """
    import torch

    count = 0
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16).to(tensor.dtype))
                count += 1
    return count


def int8_quantise_weight(weight: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, Any]:
    """Per-output-channel symmetric int8 round trip of ``weight``: ``(dequantised, scales)``.

    The channels run along ``channel_dim`` (0 for ``nn.Linear``'s ``(out, in)`` weight, 1 for
    GPT-2's ``Conv1D`` ``(in, out)`` weight). For each channel, ``scale = max|w| / 127`` and
    ``w ↦ round(w / scale) · scale``, so each entry moves by at most ``scale / 2``. A channel of
    zeros keeps scale 0 and stays zero.
    """
    import torch

    reduce_dim = 1 - channel_dim
    w = weight.detach().float()
    scale = w.abs().amax(dim=reduce_dim, keepdim=True) / INT8_LEVELS  # (out, 1) or (1, out)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / safe), -INT8_LEVELS, INT8_LEVELS)  # integers, as floats
    dequantised = torch.where(scale > 0, q * safe, torch.zeros_like(w))
    return dequantised.to(weight.dtype), scale.squeeze(reduce_dim)


def int8_round_trip(model: Any, *, skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Simulate dynamic int8 quantisation of every ``nn.Linear`` / ``Conv1D`` weight, in place.

    Like ``torch.ao.quantization.quantize_dynamic`` (weights to int8 per output channel,
    activations kept in float) followed by dequantisation, without needing a quantised engine:
    each weight is replaced by :func:`int8_quantise_weight` of it; biases stay float. Modules whose
    name ends with one of ``skip`` are left alone: the output head by default (it is tied to the
    input embedding in GPT-2, and int8 loaders such as bitsandbytes keep it in full precision).
    Returns the names of the weights changed.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    changed = []
    with torch.no_grad():
        for name, module in model.named_modules():
            if any(name == s or name.endswith("." + s) for s in skip):
                continue
            if isinstance(module, torch.nn.Linear):
                channel_dim = 0  # weight (out, in)
            elif isinstance(module, Conv1D):
                channel_dim = 1  # weight (in, out)
            else:
                continue
            dequantised, _ = int8_quantise_weight(module.weight, channel_dim)
            module.weight.copy_(dequantised)
            changed.append(f"{name}.weight")
    return changed
