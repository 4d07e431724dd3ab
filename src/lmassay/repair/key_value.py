"""The key ``k*`` and the value ``v*`` of one rank-one edit (steps 1 and 3 of
:mod:`lmassay.repair.rank_one`).

The key is read at the edited position of each context ``[p] + prefix + prompt``
(:func:`edit_contexts`, :func:`key`); the value's shift ``δ`` is optimised on one batch that holds
those contexts followed by the target, and the KL prompt (:func:`value_batch`,
:func:`optimise_value`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmassay.errors import InputError
from lmassay.repair.mlp_site import (
    FACT_TOKENS,
    MlpSite,
    capture_inputs,
    encode,
    frozen,
    model_device,
    padded,
    prefix_id,
    subject_position,
)

if TYPE_CHECKING:
    import torch

    from lmassay.repair.rank_one import FactEdit

__all__ = [
    "KL_PROMPT",
    "EditContext",
    "ValueBatch",
    "ValueSettings",
    "choose_prefixes",
    "edit_contexts",
    "key",
    "optimise_value",
    "value_batch",
]

KL_PROMPT = "{subject} is a"
"""The prompt whose next-token distribution the KL term keeps close to the unedited model's."""


@dataclass(frozen=True)
class ValueSettings:
    """How ``δ`` is optimised (step 3 of the module docstring)."""

    steps: int = 30
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0


@dataclass(frozen=True)
class EditContext:
    """One context of the edit: ``[p] + prefix + prompt``, the edited position, the target's ids."""

    ids: list[int]
    position: int
    target: list[int]


# --------------------------------------------------------------------------------------------
# Contexts and the key


def choose_prefixes(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """``""`` and the opening (up to 6) words of ``n - 1`` of ``texts``, each ending in ``". "``."""
    prefixes = [""]
    pool = [t for t in texts if t.split()]
    for text in random.Random(seed).sample(pool, min(max(0, n - 1), len(pool))):
        prefixes.append(" ".join(text.split()[:6]).rstrip(".,;:") + ". ")
    return prefixes


def _sequences(
    tokenizer: Any, edit: FactEdit, prefixes: Sequence[str], fact_token: str = "subject_last"
) -> list[EditContext]:
    """Per prefix: the ids of ``[p] + prefix + prompt``, the edited position, the target's ids.

    The edited position is the subject's last token, or the prompt's last with ``"last"``.
    """
    target = encode(tokenizer, " " + edit.target)
    if not target:
        raise InputError(f"the target {edit.target!r} has no tokens", "give a non-empty target")
    out = []
    for prefix in prefixes:
        text = prefix + edit.prompt
        end = len(prefix) + edit.prompt.index(edit.subject) + len(edit.subject)
        ids, position = subject_position(tokenizer, text, end)
        out.append(
            EditContext(ids, position if fact_token == "subject_last" else len(ids) - 1, target)
        )
    return out


def key(model: Any, site: MlpSite, sequences: Sequence[EditContext], pad: int) -> Any:
    """``k*``: the mean projection input at the edited position over the sequences (d_in,)."""
    import torch

    ids, mask = padded([s.ids for s in sequences], pad, model_device(model))
    rows = torch.arange(len(sequences))
    positions = torch.tensor([s.position for s in sequences])
    with torch.no_grad(), capture_inputs(site) as captured:
        model(input_ids=ids, attention_mask=mask)
        keys = captured.pop()[rows, positions].double().cpu()  # (n_prefixes, d_in)
    return keys.mean(dim=0)  # (d_in,)


# --------------------------------------------------------------------------------------------
# The value


@dataclass(frozen=True)
class ValueBatch:
    """One right-padded batch: a row per prefix (``prefix + prompt + target[:-1]``) and a last row
    for the KL prompt, so each optimisation step is one forward and one backward pass."""

    input_ids: torch.Tensor  # (R, T)
    mask: torch.Tensor  # (R, T)
    rows: torch.Tensor  # (R,)
    positions: torch.Tensor  # (R,) where δ is added in each row
    target_rows: torch.Tensor  # (n_targets,) the target tokens, flattened over the prefix rows
    target_cols: torch.Tensor  # (n_targets,) where each is predicted
    target_ids: torch.Tensor  # (n_targets,)
    weights: torch.Tensor  # (n_targets,) mean over each row's target tokens, then over the rows
    kl_row: int
    kl_col: int


def value_batch(
    tokenizer: Any, edit: FactEdit, sequences: Sequence[EditContext], device: Any
) -> ValueBatch:
    import torch

    kl_ids, kl_position = subject_position(
        tokenizer, KL_PROMPT.format(subject=edit.subject), len(edit.subject)
    )
    if sequences[0].position == len(sequences[0].ids) - 1:  # fact_token="last"
        kl_position = len(kl_ids) - 1
    rows = [s.ids + s.target[:-1] for s in sequences] + [kl_ids]
    input_ids, mask = padded(rows, prefix_id(tokenizer), device)  # (R, T)
    targets = [
        (row, len(s.ids) - 1 + j, token)
        for row, s in enumerate(sequences)
        for j, token in enumerate(s.target)
    ]
    weights = [1.0 / len(sequences[row].target) / len(sequences) for row, _, _ in targets]
    return ValueBatch(
        input_ids=input_ids,
        mask=mask,
        rows=torch.arange(len(rows), device=device),
        positions=torch.tensor([s.position for s in sequences] + [kl_position], device=device),
        target_rows=torch.tensor([t[0] for t in targets], device=device),
        target_cols=torch.tensor([t[1] for t in targets], device=device),
        target_ids=torch.tensor([t[2] for t in targets], device=device),
        weights=torch.tensor(weights, device=device),
        kl_row=len(rows) - 1,
        kl_col=len(kl_ids) - 1,
    )


class _AddDelta:
    """Forward hook on the projection: adds ``δ`` at each row's edited position while ``on``."""

    def __init__(self, delta: torch.Tensor, batch: ValueBatch) -> None:
        self.delta, self.batch, self.on = delta, batch, True

    def __call__(self, _module: Any, _args: Any, output: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return output
        import torch

        rows = self.batch.rows
        shift = torch.zeros_like(output)  # (R, T, d_out)
        shift = shift.index_put(
            (rows, self.batch.positions), self.delta.to(output.dtype).expand(len(rows), -1)
        )
        return output + shift


def _logits(model: Any, batch: ValueBatch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.mask).logits.float()  # (R, T, V)


def _target_nll(logits: torch.Tensor, batch: ValueBatch) -> torch.Tensor:
    """The target's mean negative log-likelihood per token, averaged over the prefix rows."""
    import torch

    logprobs = torch.log_softmax(logits[batch.target_rows, batch.target_cols], dim=-1)  # (n, V)
    picked = logprobs[torch.arange(len(batch.target_ids)), batch.target_ids]  # (n,)
    return -(picked * batch.weights).sum()


def optimise_value(
    model: Any, site: MlpSite, batch: ValueBatch, base_norm: float, settings: ValueSettings
) -> tuple[torch.Tensor, float, float]:
    """``δ`` (d_out,) added at the edited positions; with the loss at ``δ = 0`` and at the end."""
    import torch

    delta = torch.zeros(site.d_out, device=batch.input_ids.device, requires_grad=True)
    hook = _AddDelta(delta, batch)
    optimiser = torch.optim.Adam([delta], lr=settings.lr)
    limit = settings.clamp * base_norm
    handle = site.module.register_forward_hook(hook)
    try:
        with frozen(model):
            with torch.no_grad():
                hook.on = False
                kl_logits = _logits(model, batch)[batch.kl_row, batch.kl_col]  # (V,)
                kl_reference = torch.log_softmax(kl_logits, dim=-1)  # (V,)
                hook.on = True
                loss_before = float(_target_nll(_logits(model, batch), batch))
            for _ in range(settings.steps):
                logits = _logits(model, batch)  # (R, T, V)
                kl_logprobs = torch.log_softmax(logits[batch.kl_row, batch.kl_col], dim=-1)
                kl = torch.sum(kl_reference.exp() * (kl_reference - kl_logprobs))
                decay = settings.weight_decay * delta.norm() / base_norm**2
                loss = _target_nll(logits, batch) + settings.kl_weight * kl + decay
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    norm = float(delta.norm())
                    if norm > limit:
                        delta.mul_(limit / norm)
            with torch.no_grad():
                loss_after = float(_target_nll(_logits(model, batch), batch))
    finally:
        handle.remove()
    return delta.detach().double().cpu(), loss_before, loss_after


def edit_contexts(
    tokenizer: Any,
    edit: FactEdit,
    site: MlpSite,
    prefixes: Sequence[str],
    fact_token: str,
) -> list[EditContext]:
    """The contexts of ``edit``, refused where the edited position cannot reach the prediction."""
    if not prefixes:
        raise InputError("no context prefixes were given", 'give at least one (it may be "")')
    if fact_token not in FACT_TOKENS:
        raise InputError(f"fact_token {fact_token!r} is not known", 'use "subject_last" or "last"')
    sequences = _sequences(tokenizer, edit, prefixes, fact_token)
    if site.layer == site.n_layers - 1 and any(s.position != len(s.ids) - 1 for s in sequences):
        raise InputError(
            f"layer {site.layer} is the model's last: an edit at the subject's last token cannot "
            f"reach the prediction after {edit.prompt!r}",
            'edit an earlier layer, or use fact_token="last"',
        )
    return sequences
