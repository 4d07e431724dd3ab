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

Where the edit goes and what it reads (the projection, its inputs, ``C``, the target's
probability) is :mod:`lmassay.repair.mlp_site`; this module computes and applies the update.
Only the one weight tensor changes; the bias (GPT-2) is untouched. :func:`edit_facts` applies a
list of edits one after another (each computed on the already-edited model) and reports the
target's probability before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmassay.errors import InputError
from lmassay.progress import ProgressFn
from lmassay.repair.key_value import (
    ValueSettings,
    choose_prefixes,
    edit_contexts,
    key,
    optimise_value,
    value_batch,
)
from lmassay.repair.mlp_site import (
    FACT_TOKENS,
    FactToken,
    Layout,
    MlpSite,
    choose_fact_token,
    default_layer,
    mlp_site,
    model_device,
    prefix_id,
    second_moment,
    target_probability,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "FACT_TOKENS",
    "EditReport",
    "FactEdit",
    "MlpSite",
    "RankOneUpdate",
    "ValueSettings",
    "apply_update",
    "choose_fact_token",
    "compute_rank_one_update",
    "default_layer",
    "edit_facts",
    "mlp_site",
    "second_moment",
    "target_probability",
]


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

    @classmethod
    def of(
        cls, edit: FactEdit, update: RankOneUpdate, fact_token: str, before: float, after: float
    ) -> EditReport:
        """The report of ``update``, written for ``edit`` with the probabilities around it."""
        norm = float(update.delta().norm())
        return cls(edit, update.layer, update.tensor_name, fact_token, before, after, norm, update)

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
# The update


def _checked_covariance(
    model: Any,
    tokenizer: Any,
    site: MlpSite,
    covariance: torch.Tensor | None,
    texts: Sequence[str],
    ridge: float,
) -> torch.Tensor:
    """``covariance``, or :func:`second_moment` of ``texts``; checked to be ``(d_in, d_in)``."""
    if covariance is None:
        if not texts:
            raise InputError(
                "a rank-one edit needs covariance texts (or a covariance matrix)",
                "give a few hundred sample paragraphs",
            )
        covariance = second_moment(model, tokenizer, texts, layer=site.layer, ridge=ridge)
    if tuple(covariance.shape) != (site.d_in, site.d_in):
        raise InputError(
            f"the covariance has shape {tuple(covariance.shape)}, not {(site.d_in, site.d_in)}",
            f"compute it for layer {site.layer} with second_moment",
        )
    return covariance


def _rank_one(
    site: MlpSite, k_star: torch.Tensor, w_k: torch.Tensor, delta: torch.Tensor, covariance: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, v, v*)``: ``u = v* − W k*`` (d_out,), ``v = C⁻¹k* / (k*ᵀ C⁻¹ k*)`` (d_in,)."""
    import torch

    v_star = w_k + delta  # (d_out,)
    c_inv_k = torch.linalg.solve(covariance.double(), k_star)  # (d_in,)
    return v_star - w_k, c_inv_k / torch.dot(k_star, c_inv_k), v_star


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
    module docstring); ``steps``, ``lr``, ``kl_weight``, ``weight_decay`` and ``clamp`` the
    optimisation of ``δ``. The model is not changed.
    """
    import torch

    edit.validate()
    if steps < 1 or not lr > 0:
        raise InputError(f"steps={steps}, lr={lr}", "give steps >= 1 and lr > 0")
    settings = ValueSettings(steps, lr, kl_weight, weight_decay, clamp)
    site = mlp_site(model, default_layer(model) if layer is None else layer)
    covariance = _checked_covariance(model, tokenizer, site, covariance, covariance_texts, ridge)
    if context_prefixes is None:
        context_prefixes = choose_prefixes(covariance_texts, n_prefixes, seed)
    sequences = edit_contexts(tokenizer, edit, site, context_prefixes, fact_token)

    k_star = key(model, site, sequences, prefix_id(tokenizer))  # (d_in,)
    w_k = site.apply_weight(k_star)  # (d_out,)
    batch = value_batch(tokenizer, edit, sequences, model_device(model))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base_norm = max(float(w_k.norm()), 1e-6)
        delta, loss_before, loss_after = optimise_value(model, site, batch, base_norm, settings)
    u, v, v_star = _rank_one(site, k_star, w_k, delta, covariance)
    return RankOneUpdate(
        layer=site.layer,
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
    covariance: torch.Tensor | None = None,
    steps: int = 30,
    lr: float = 0.5,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.5,
    clamp: float = 4.0,
    ridge: float = 1e-2,
    n_prefixes: int = 5,
    fact_token: FactToken | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> list[EditReport]:
    """Write each edit into ``model`` in place, one after another, by rank-one updates of one layer.

    ``C`` is ``covariance`` when given, else computed once from ``covariance_texts`` (with
    ``ridge``) on the unedited model; ``covariance_texts`` also give the context prefixes. Each
    update is computed on the model as the earlier edits left it, edit ``i`` with seed
    ``seed + i``. ``fact_token`` defaults to ``"subject_last"``, or ``"last"`` when ``layer`` is
    the model's last layer (see :func:`choose_fact_token`). The reports give the target's
    probability after the bare prompt right before and right after each edit.
    """
    if not edits:
        raise InputError("no edits were given", "give at least one FactEdit")
    layer = default_layer(model) if layer is None else layer
    fact_token = fact_token or choose_fact_token(model, layer)
    site = mlp_site(model, layer)
    covariance = _checked_covariance(model, tokenizer, site, covariance, covariance_texts, ridge)
    reports: list[EditReport] = []
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
            clamp=clamp,
            seed=seed + index,
        )
        apply_update(model, update)
        after = target_probability(model, tokenizer, edit.prompt, edit.target)
        reports.append(EditReport.of(edit, update, fact_token, before, after))
        if progress is not None:
            progress(index + 1, len(edits))
    return reports
