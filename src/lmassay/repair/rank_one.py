"""Rank-one edits of one MLP projection: change what a model says a subject's relation points to.

This is the ROME method (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"),
reduced to its core, for GPT-2 (``transformer.h[l].mlp.c_proj``, a ``Conv1D`` whose weight is
``(d_in, d_out) = (4d, d)``) and Llama-shaped models (``model.layers[l].mlp.down_proj``, an
``nn.Linear`` whose weight is ``(d_out, d_in) = (d, 4d)``). Write ``W`` for the projection as a map
``k ↦ W k`` from the MLP hidden activation ``k`` (the projection's input) to its output.

For one :class:`FactEdit` (``prompt`` naming ``subject``, new ``target``):

1. **Key** ``k*``: the mean, over a few context prefixes ``c`` (``""`` and the opening words of a
   few sample texts), of the projection's input at the subject's last token of ``c + prompt``
   (``fact_token="subject_last"``, ROME's default), or at the prompt's last token
   (``fact_token="last"``, ROME's other strategy: the only one that can work in a model's last
   layer, since no later attention layer carries the subject's position to the prediction).
2. **Second moment** ``C = E[k kᵀ]`` of the projection's input over every token of sample texts,
   plus a ridge ``ridge · mean(diag C) · I`` (:func:`second_moment`).
3. **Value** ``v* = W k* + δ``: ``δ`` is added to the projection's output at that token and
   optimised with Adam for ``steps`` steps to minimise the mean negative log-likelihood
   of the target tokens after ``c + prompt`` (over the prefixes), plus ``kl_weight`` times the KL
   divergence of the next-token distribution after ``"{subject} is a"`` from the unedited one, plus
   ``weight_decay · ‖δ‖ / ‖W k*‖²`` (ROME's form of the term); ``‖δ‖`` is kept at most
   ``clamp · ‖W k*‖``.
4. **Update** ``ΔW = (v* − W k*) (C⁻¹k*)ᵀ / (k*ᵀ C⁻¹ k*)``, exactly rank one, so that
   ``(W + ΔW) k* = v*`` while keys ``k`` with ``kᵀ C⁻¹ k* = 0`` are left where they were.

Only the one weight tensor changes; the bias (GPT-2) is untouched. :func:`edit_facts` applies a
list of edits one after another (each computed on the already-edited model) and reports the
target's probability before and after.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "EditReport",
    "FactEdit",
    "MlpSite",
    "RankOneUpdate",
    "apply_update",
    "choose_fact_token",
    "compute_rank_one_update",
    "default_layer",
    "edit_facts",
    "mlp_site",
    "second_moment",
    "target_probability",
]

Layout = Literal["conv1d", "linear"]
FactToken = Literal["subject_last", "last"]
FACT_TOKENS: tuple[str, ...] = ("subject_last", "last")

KL_PROMPT = "{subject} is a"
"""The prompt whose next-token distribution the KL term keeps close to the unedited model's."""


@dataclass(frozen=True)
class FactEdit:
    """One fact to write: after ``prompt`` (which names ``subject``), the model should say ``target``.

    ``prompt + " " + target`` is the sentence the edit makes likely. ``subject`` must occur in
    ``prompt``; its first occurrence is used.
    """

    prompt: str
    subject: str
    target: str

    def validate(self) -> None:
        if not self.prompt.strip():
            raise InputError("an edit has an empty prompt", "give the prompt that states the fact")
        if not self.subject.strip() or self.subject not in self.prompt:
            raise InputError(
                f"the subject {self.subject!r} does not occur in the prompt {self.prompt!r}",
                "give a subject that is written in the prompt",
            )
        if not self.target.strip():
            raise InputError(f"the edit of {self.prompt!r} has an empty target", "give a target")


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


@dataclass
class RankOneUpdate:
    """``ΔW = u vᵀ`` (as a map ``k ↦ ΔW k``) for the weight ``tensor_name`` of MLP ``layer``.

    ``u = v* − W k*`` has the output size and ``v = C⁻¹k* / (k*ᵀ C⁻¹ k*)`` the input size, both
    float64; ``k_star`` and ``v_star`` are kept so that the update can be checked or recomputed.
    """

    layer: int
    tensor_name: str
    layout: Layout
    u: torch.Tensor  # (d_out,)
    v: torch.Tensor  # (d_in,)
    k_star: torch.Tensor  # (d_in,)
    v_star: torch.Tensor  # (d_out,)
    loss_before: float  # the target's mean NLL per token over the prefixes, δ = 0
    loss_after: float  # the same at the optimised δ (before the update is applied)

    def delta(self) -> torch.Tensor:
        """``ΔW`` in the weight tensor's own layout (float64)."""
        import torch

        if self.layout == "conv1d":
            return torch.outer(self.v, self.u)  # (d_in, d_out)
        return torch.outer(self.u, self.v)  # (d_out, d_in)


@dataclass(frozen=True)
class EditReport:
    """What one edit did: the target's probability after the prompt, before and after it."""

    edit: FactEdit
    layer: int
    tensor_name: str
    fact_token: str  # "subject_last" or "last": where k* was read and δ added
    prob_before: float  # P(target tokens | prompt), the product over the target's tokens
    prob_after: float
    delta_norm: float  # Frobenius norm of ΔW
    update: RankOneUpdate

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.edit.prompt,
            "subject": self.edit.subject,
            "target": self.edit.target,
            "layer": self.layer,
            "tensor": self.tensor_name,
            "fact_token": self.fact_token,
            "prob_before": self.prob_before,
            "prob_after": self.prob_after,
            "delta_norm": self.delta_norm,
            "target_nll_before": self.update.loss_before,
            "target_nll_optimised": self.update.loss_after,
        }


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


def _prefix_id(tokenizer: Any) -> int:
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    raise InputError(
        "the tokenizer has neither a BOS nor an EOS token", "use a tokenizer with one of them"
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _subject_position(tokenizer: Any, text: str, subject_end: int) -> tuple[list[int], int]:
    """``[prefix] + tokens(text)`` and the index in it of the last token that overlaps the subject.

    ``subject_end`` is the character offset just after the subject in ``text``.
    """
    ids = [_prefix_id(tokenizer)]
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        tokens, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
        last = max(i for i, (start, _) in enumerate(offsets) if start < subject_end)
        return ids + tokens, 1 + last
    tokens = _encode(tokenizer, text)
    last = len(_encode(tokenizer, text[:subject_end])) - 1
    return ids + tokens, 1 + last


@contextmanager
def _capture_inputs(site: MlpSite) -> Iterator[list[torch.Tensor]]:
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
def _frozen(model: Any) -> Iterator[None]:
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


def _padded(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask``, both ``(B, T)``."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


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
    prefix = _prefix_id(tokenizer)
    total = torch.zeros(site.d_in, site.d_in, dtype=torch.float64)  # (d_in, d_in)
    count = 0
    with torch.no_grad(), _capture_inputs(site) as captured:
        for start in range(0, len(texts), batch_size):
            rows = [
                [prefix, *_encode(tokenizer, t)][:limit] for t in texts[start : start + batch_size]
            ]
            ids, mask = _padded(rows, prefix, _device(model))
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


def _choose_prefixes(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """``""`` and the opening (up to 6) words of ``n - 1`` of ``texts``, each ending in ``". "``."""
    prefixes = [""]
    pool = [t for t in texts if t.split()]
    for text in random.Random(seed).sample(pool, min(max(0, n - 1), len(pool))):
        prefixes.append(" ".join(text.split()[:6]).rstrip(".,;:") + ". ")
    return prefixes


def _sequences(
    tokenizer: Any, edit: FactEdit, prefixes: Sequence[str], fact_token: str = "subject_last"
) -> list[tuple[list[int], int, list[int]]]:
    """Per prefix: the ids of ``[p] + prefix + prompt``, the edited position, the target's ids.

    The edited position is the subject's last token, or the prompt's last with ``"last"``.
    """
    target = _encode(tokenizer, " " + edit.target)
    if not target:
        raise InputError(f"the target {edit.target!r} has no tokens", "give a non-empty target")
    out = []
    for prefix in prefixes:
        text = prefix + edit.prompt
        end = len(prefix) + edit.prompt.index(edit.subject) + len(edit.subject)
        ids, position = _subject_position(tokenizer, text, end)
        out.append((ids, position if fact_token == "subject_last" else len(ids) - 1, target))
    return out


def target_probability(model: Any, tokenizer: Any, prompt: str, target: str) -> float:
    """``P(tokens(" " + target) | [prefix] + tokens(prompt))``, the product over the target tokens."""
    import torch

    context = [_prefix_id(tokenizer), *_encode(tokenizer, prompt)]
    target_ids = _encode(tokenizer, " " + target)
    ids = torch.tensor([context + target_ids], device=_device(model))  # (1, T)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)  # (n_target, V)
    picked = logprobs[torch.arange(len(target_ids)), torch.tensor(target_ids)]  # (n_target,)
    return float(torch.exp(picked.double().sum()))


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------
# The update


def _key(
    model: Any, site: MlpSite, sequences: Sequence[tuple[list[int], int, list[int]]], pad: int
) -> Any:
    """``k*``: the mean projection input at the edited position over the sequences (d_in,)."""
    import torch

    ids, mask = _padded([s[0] for s in sequences], pad, _device(model))
    rows = torch.arange(len(sequences))
    positions = torch.tensor([s[1] for s in sequences])
    with torch.no_grad(), _capture_inputs(site) as captured:
        model(input_ids=ids, attention_mask=mask)
        keys = captured.pop()[rows, positions].double().cpu()  # (n_prefixes, d_in)
    return keys.mean(dim=0)  # (d_in,)


def _optimise_value(
    model: Any,
    tokenizer: Any,
    site: MlpSite,
    edit: FactEdit,
    sequences: Sequence[tuple[list[int], int, list[int]]],
    base_norm: float,
    *,
    steps: int,
    lr: float,
    kl_weight: float,
    weight_decay: float,
    clamp: float,
) -> tuple[torch.Tensor, float, float]:
    """``δ`` (d_out,) added at the edited position; with the loss at ``δ = 0`` and at the end.

    One right-padded batch holds a row per prefix (``prefix + prompt + target[:-1]``) and a last
    row for the KL prompt, so each optimisation step is one forward and one backward pass.
    """
    import torch

    device = _device(model)
    pad = _prefix_id(tokenizer)
    kl_text = KL_PROMPT.format(subject=edit.subject)
    kl_ids, kl_position = _subject_position(tokenizer, kl_text, len(edit.subject))
    if sequences[0][1] == len(sequences[0][0]) - 1:  # fact_token="last"
        kl_position = len(kl_ids) - 1
    rows = [ids + target[:-1] for ids, _, target in sequences] + [kl_ids]
    input_ids, mask = _padded(rows, pad, device)  # (R, T)
    row_index = torch.arange(len(rows), device=device)  # (R,)
    positions = torch.tensor([p for _, p, _ in sequences] + [kl_position], device=device)  # (R,)
    # Target tokens and where they are predicted, flattened over the prefix rows.
    target_rows, target_cols, target_ids = [], [], []
    for row, (ids, _, target) in enumerate(sequences):
        for j, token in enumerate(target):
            target_rows.append(row)
            target_cols.append(len(ids) - 1 + j)
            target_ids.append(token)
    t_rows = torch.tensor(target_rows, device=device)
    t_cols = torch.tensor(target_cols, device=device)
    t_ids = torch.tensor(target_ids, device=device)
    weights = torch.tensor(
        [1.0 / len(sequences[r][2]) / len(sequences) for r in target_rows], device=device
    )  # mean over each row's target tokens, then over the rows
    kl_row, kl_col = len(rows) - 1, len(kl_ids) - 1

    delta = torch.zeros(site.d_out, device=device, requires_grad=True)  # (d_out,)
    active = {"on": True}

    def add_delta(_module: Any, _args: Any, output: torch.Tensor) -> torch.Tensor:
        if not active["on"]:
            return output
        shift = torch.zeros_like(output)  # (R, T, d_out)
        shift = shift.index_put(
            (row_index, positions), delta.to(output.dtype).expand(len(rows), -1)
        )
        return output + shift

    def forward() -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=mask).logits.float()  # (R, T, V)

    def nll(logits: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(logits[t_rows, t_cols], dim=-1)  # (n_targets, V)
        return -(logprobs[torch.arange(len(target_ids)), t_ids] * weights).sum()

    optimiser = torch.optim.Adam([delta], lr=lr)
    handle = site.module.register_forward_hook(add_delta)
    try:
        with _frozen(model):
            with torch.no_grad():
                active["on"] = False
                kl_reference = torch.log_softmax(forward()[kl_row, kl_col], dim=-1)  # (V,)
                active["on"] = True
                loss_before = float(nll(forward()))
            for _ in range(steps):
                logits = forward()
                kl_logprobs = torch.log_softmax(logits[kl_row, kl_col], dim=-1)  # (V,)
                kl = torch.sum(kl_reference.exp() * (kl_reference - kl_logprobs))
                loss = nll(logits) + kl_weight * kl + weight_decay * delta.norm() / base_norm**2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    norm, limit = float(delta.norm()), clamp * base_norm
                    if norm > limit:
                        delta.mul_(limit / norm)
            with torch.no_grad():
                loss_after = float(nll(forward()))
    finally:
        handle.remove()
    return delta.detach().double().cpu(), loss_before, loss_after


def compute_rank_one_update(
    model: Any,
    tokenizer: Any,
    edit: FactEdit,
    *,
    layer: int | None = None,
    covariance_texts: Sequence[str] = (),
    covariance: torch.Tensor | None = None,
    context_prefixes: Sequence[str] | None = None,
    fact_token: FactToken = "subject_last",
    n_prefixes: int = 5,
    steps: int = 30,
    lr: float = 0.5,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.5,
    clamp: float = 4.0,
    ridge: float = 1e-2,
    seed: int = 0,
) -> RankOneUpdate:
    """The rank-one update of layer ``layer``'s MLP projection that writes ``edit`` (see module doc).

    ``covariance`` is ``C`` from :func:`second_moment` (computed from ``covariance_texts`` with
    ``ridge`` when not given). The context prefixes are ``context_prefixes`` when given (each is
    put right before the prompt), else ``""`` and the opening words of ``n_prefixes - 1`` of
    ``covariance_texts`` chosen with ``seed``. ``fact_token`` picks the edited position (see the
    module docstring). The model is not changed.
    """
    import torch

    edit.validate()
    if steps < 1 or not lr > 0:
        raise InputError(f"steps={steps}, lr={lr}", "give steps >= 1 and lr > 0")
    layer = default_layer(model) if layer is None else layer
    site = mlp_site(model, layer)
    if covariance is None:
        if not covariance_texts:
            raise InputError(
                "a rank-one edit needs covariance texts (or a covariance matrix)",
                "give a few hundred sample paragraphs",
            )
        covariance = second_moment(model, tokenizer, covariance_texts, layer=layer, ridge=ridge)
    if tuple(covariance.shape) != (site.d_in, site.d_in):
        raise InputError(
            f"the covariance has shape {tuple(covariance.shape)}, not {(site.d_in, site.d_in)}",
            f"compute it for layer {layer} with second_moment",
        )

    if context_prefixes is None:
        context_prefixes = _choose_prefixes(covariance_texts, n_prefixes, seed)
    if not context_prefixes:
        raise InputError("no context prefixes were given", 'give at least one (it may be "")')
    if fact_token not in FACT_TOKENS:
        raise InputError(f"fact_token {fact_token!r} is not known", 'use "subject_last" or "last"')
    sequences = _sequences(tokenizer, edit, context_prefixes, fact_token)
    if layer == site.n_layers - 1 and any(pos != len(ids) - 1 for ids, pos, _ in sequences):
        raise InputError(
            f"layer {layer} is the model's last: an edit at the subject's last token cannot reach "
            f"the prediction after {edit.prompt!r}",
            'edit an earlier layer, or use fact_token="last"',
        )
    k_star = _key(model, site, sequences, _prefix_id(tokenizer))  # (d_in,)
    w_k = site.apply_weight(k_star)  # (d_out,)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        delta, loss_before, loss_after = _optimise_value(
            model,
            tokenizer,
            site,
            edit,
            sequences,
            max(float(w_k.norm()), 1e-6),
            steps=steps,
            lr=lr,
            kl_weight=kl_weight,
            weight_decay=weight_decay,
            clamp=clamp,
        )
    v_star = w_k + delta  # (d_out,)
    c_inv_k = torch.linalg.solve(covariance.double(), k_star)  # (d_in,)
    u = v_star - w_k  # (d_out,)
    v = c_inv_k / torch.dot(k_star, c_inv_k)  # (d_in,)
    return RankOneUpdate(
        layer=layer,
        tensor_name=site.tensor_name,
        layout=site.layout,
        u=u,
        v=v,
        k_star=k_star,
        v_star=v_star,
        loss_before=loss_before,
        loss_after=loss_after,
    )


def apply_update(model: Any, update: RankOneUpdate) -> None:
    """Add ``update.delta()`` to the weight it names, in place (cast to the weight's dtype)."""
    import torch

    parameters = dict(model.named_parameters())
    if update.tensor_name not in parameters:
        raise InputError(
            f"the model has no tensor {update.tensor_name!r}",
            "apply the update to the model it was computed for",
        )
    weight = parameters[update.tensor_name]
    delta = update.delta()
    if tuple(delta.shape) != tuple(weight.shape):
        raise InputError(
            f"the update has shape {tuple(delta.shape)} but {update.tensor_name} has "
            f"{tuple(weight.shape)}",
            "apply the update to the model it was computed for",
        )
    with torch.no_grad():
        weight.add_(delta.to(device=weight.device, dtype=weight.dtype))


def edit_facts(
    model: Any,
    tokenizer: Any,
    edits: Sequence[FactEdit],
    *,
    layer: int | None = None,
    covariance_texts: Sequence[str] = (),
    steps: int = 30,
    lr: float = 0.5,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.5,
    ridge: float = 1e-2,
    n_prefixes: int = 5,
    fact_token: FactToken | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[EditReport]:
    """Write each edit into ``model`` in place, one after another, by rank-one updates of one layer.

    ``C`` is computed once, from ``covariance_texts`` on the unedited model; each update is
    computed on the model as the earlier edits left it. ``fact_token`` defaults to
    ``"subject_last"``, or ``"last"`` when ``layer`` is the model's last layer (see
    :func:`choose_fact_token`). The reports give the target's probability after the bare prompt
    before and after each edit. ``progress(done, total)`` after each edit.
    """
    if not edits:
        raise InputError("no edits were given", "give at least one FactEdit")
    layer = default_layer(model) if layer is None else layer
    fact_token = fact_token or choose_fact_token(model, layer)
    covariance = second_moment(model, tokenizer, covariance_texts, layer=layer, ridge=ridge)
    reports = []
    for index, edit in enumerate(edits):
        edit.validate()
        before = target_probability(model, tokenizer, edit.prompt, edit.target)
        update = compute_rank_one_update(
            model,
            tokenizer,
            edit,
            layer=layer,
            covariance_texts=covariance_texts,
            covariance=covariance,
            n_prefixes=n_prefixes,
            fact_token=fact_token,
            steps=steps,
            lr=lr,
            kl_weight=kl_weight,
            weight_decay=weight_decay,
            seed=seed + index,
        )
        apply_update(model, update)
        after = target_probability(model, tokenizer, edit.prompt, edit.target)
        reports.append(
            EditReport(
                edit=edit,
                layer=layer,
                tensor_name=update.tensor_name,
                fact_token=fact_token,
                prob_before=before,
                prob_after=after,
                delta_norm=float(update.delta().norm()),
                update=update,
            )
        )
        if progress is not None:
            progress(index + 1, len(edits))
    return reports
