"""Where a rank-one edit reads and writes: one layer's MLP output projection and its inputs.

For GPT-2 the projection is ``transformer.h[l].mlp.c_proj`` (a ``Conv1D`` whose weight is
``(d_in, d_out) = (4d, d)``); for Llama-shaped models ``model.layers[l].mlp.down_proj`` (an
``nn.Linear`` whose weight is ``(d_out, d_in) = (d, 4d)``). Its input at a token is the *key*
``k`` of :mod:`lmassay.repair.rank_one`.

This module finds the projection (:func:`mlp_site`), tokenises texts the way the edits read them
(``[prefix] + tokens(text)``, the prefix being the tokenizer's BOS, else its EOS), captures the
projection's inputs, estimates their second moment ``C`` (:func:`second_moment`) and measures a
target's probability after a prompt (:func:`target_probability`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lmassay.attest.model_loading import prefix_token
from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FACT_TOKENS",
    "FactToken",
    "Layout",
    "MlpSite",
    "capture_inputs",
    "choose_fact_token",
    "default_layer",
    "encode",
    "frozen",
    "mlp_site",
    "model_device",
    "padded",
    "prefix_id",
    "second_moment",
    "subject_position",
    "target_probability",
]

Layout = Literal["conv1d", "linear"]
FactToken = Literal["subject_last", "last"]
FACT_TOKENS: tuple[str, ...] = ("subject_last", "last")


@dataclass(frozen=True)
class MlpSite:
    """The MLP output projection of one layer: the module, its weight's name and layout."""

    layer: int
    module: Any  # torch.nn.Module: transformers' Conv1D or torch.nn.Linear
    tensor_name: str  # e.g. "transformer.h.0.mlp.c_proj.weight"
    layout: Layout  # conv1d: weight (d_in, d_out); linear: weight (d_out, d_in)
    n_layers: int

    @property
    def d_in(self) -> int:
        weight = self.module.weight
        return int(weight.shape[0] if self.layout == "conv1d" else weight.shape[1])

    @property
    def d_out(self) -> int:
        weight = self.module.weight
        return int(weight.shape[1] if self.layout == "conv1d" else weight.shape[0])

    def apply_weight(self, k: torch.Tensor) -> torch.Tensor:
        """``W k`` without the bias, for ``k`` of shape ``(d_in,)``, in float64."""
        weight = self.module.weight.detach().double()
        return k.double() @ weight if self.layout == "conv1d" else weight @ k.double()  # (d_out,)


# --------------------------------------------------------------------------------------------
# Where the edit goes


def _n_layers(model: Any) -> int:
    config = model.config
    for name in ("num_hidden_layers", "n_layer"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise InputError(
        f"cannot tell how many layers {type(model).__name__} has",
        "rank-one edits support GPT-2 and Llama-shaped models",
    )


def default_layer(model: Any) -> int:
    """The layer edited when none is named: the middle one, rounded down (layer 0 of 2)."""
    return max(0, (_n_layers(model) - 1) // 2)


def choose_fact_token(model: Any, layer: int) -> FactToken:
    """``"subject_last"`` (ROME's choice), except ``"last"`` in the model's last layer."""
    return "last" if layer == _n_layers(model) - 1 else "subject_last"


def mlp_site(model: Any, layer: int) -> MlpSite:
    """The MLP output projection of ``layer``; :class:`InputError` for other architectures."""
    import torch
    from transformers.pytorch_utils import Conv1D

    n_layers = _n_layers(model)
    if not 0 <= layer < n_layers:
        raise InputError(
            f"layer {layer} does not exist (the model has {n_layers} layers)",
            f"give a layer from 0 to {n_layers - 1}",
        )
    candidates: tuple[tuple[str, type, Layout], ...] = (
        (f"transformer.h.{layer}.mlp.c_proj", Conv1D, "conv1d"),
        (f"model.layers.{layer}.mlp.down_proj", torch.nn.Linear, "linear"),
    )
    for name, kind, layout in candidates:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, kind):
            return MlpSite(layer, module, f"{name}.weight", layout, n_layers)
    raise InputError(
        f"rank-one edits do not support {type(model).__name__}: it has neither "
        "transformer.h[l].mlp.c_proj (GPT-2) nor model.layers[l].mlp.down_proj (Llama)",
        "use a GPT-2 or Llama-shaped model",
    )


# --------------------------------------------------------------------------------------------
# Tokens and activations


def prefix_id(tokenizer: Any) -> int:
    """The token every text starts from: BOS, else EOS (as the attestation reads probes)."""
    return prefix_token(tokenizer, "model")


def encode(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def subject_position(tokenizer: Any, text: str, subject_end: int) -> tuple[list[int], int]:
    """``[prefix] + tokens(text)`` and the index in it of the last token that overlaps the subject.

    ``subject_end`` is the character offset just after the subject in ``text``.
    """
    ids = [prefix_id(tokenizer)]
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        tokens, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
        last = max(i for i, (start, _) in enumerate(offsets) if start < subject_end)
        return ids + tokens, 1 + last
    tokens = encode(tokenizer, text)
    last = len(encode(tokenizer, text[:subject_end])) - 1
    return ids + tokens, 1 + last


@contextmanager
def capture_inputs(site: MlpSite) -> Iterator[list[torch.Tensor]]:
    """Collect the projection's input ``(B, T, d_in)`` of every forward pass inside the block."""
    captured: list[torch.Tensor] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach())

    handle = site.module.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def frozen(model: Any) -> Iterator[None]:
    """No parameter of ``model`` needs a gradient inside the block; restored after."""
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in before:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def _context_limit(model: Any) -> int:
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1024


def padded(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask``, both ``(B, T)``."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def second_moment(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    layer: int,
    ridge: float = 1e-2,
    max_tokens: int = 20_000,
    batch_size: int = 16,
) -> torch.Tensor:
    """``C = E[k kᵀ] + ridge · mean(diag E[k kᵀ]) · I`` over the tokens of ``texts``, float64.

    ``k`` is the input of layer ``layer``'s MLP output projection at each token of
    ``[prefix] + tokens(text)`` (the prefix token included; texts cut to the model's context;
    run in right-padded batches whose padding is never counted), averaged over all tokens of the
    texts, stopping after the batch in which ``max_tokens`` are reached. Shape ``(d_in, d_in)``.
    """
    import torch

    site = mlp_site(model, layer)
    limit = _context_limit(model)
    prefix = prefix_id(tokenizer)
    total = torch.zeros(site.d_in, site.d_in, dtype=torch.float64)  # (d_in, d_in)
    count = 0
    with torch.no_grad(), capture_inputs(site) as captured:
        for start in range(0, len(texts), batch_size):
            rows = [
                [prefix, *encode(tokenizer, t)][:limit] for t in texts[start : start + batch_size]
            ]
            ids, mask = padded(rows, prefix, model_device(model))
            model(input_ids=ids, attention_mask=mask)
            hidden = captured.pop()  # (B, T, d_in)
            keys = hidden[mask.bool()].double().cpu()  # (real tokens, d_in)
            total += keys.T @ keys
            count += keys.shape[0]
            if count >= max_tokens:
                break
    if count == 0:
        raise InputError("no covariance text was given", "give a few sample texts")
    moment = total / count
    scale = float(torch.diagonal(moment).mean())
    return moment + ridge * max(scale, 1e-12) * torch.eye(site.d_in, dtype=torch.float64)


def target_probability(model: Any, tokenizer: Any, prompt: str, target: str) -> float:
    """``P(tokens(" " + target) | [prefix] + tokens(prompt))``, the product over the target tokens."""
    import torch

    context = [prefix_id(tokenizer), *encode(tokenizer, prompt)]
    target_ids = encode(tokenizer, " " + target)
    ids = torch.tensor([context + target_ids], device=model_device(model))  # (1, T)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)  # (n_target, V)
    picked = logprobs[torch.arange(len(target_ids)), torch.tensor(target_ids)]  # (n_target,)
    return float(torch.exp(picked.double().sum()))


def greedy_continuation(model: Any, tokenizer: Any, prompt: str, target: str) -> tuple[bool, str]:
    """Whether greedy decoding after ``[prefix] + tokens(prompt)`` gives exactly the tokens of
    ``" " + target``, and the decoded greedy continuation of that many tokens."""
    import torch

    context = [prefix_id(tokenizer), *encode(tokenizer, prompt)]
    target_ids = encode(tokenizer, " " + target)
    generated: list[int] = []
    with torch.no_grad():
        for _ in target_ids:
            ids = torch.tensor([context + generated], device=model_device(model))  # (1, T)
            logits = model(input_ids=ids).logits[0, -1]  # (V,)
            generated.append(int(logits.argmax()))
    return generated == target_ids, str(tokenizer.decode(generated))
