"""What ``lmassay edit`` did: each fact's outcome, judged on the edited model, and ``edit.json``.

Verification contract: a fact is *verified* when ``P(tokens(" " + target) | [prefix] +
tokens(prompt))`` — the product of the target tokens' probabilities after the bare prompt, where
the prefix is the tokenizer's BOS token (EOS when it has none), see
:func:`lmassay.repair.mlp_site.target_probability` — is at least ``min_probability`` under the
edited model *as saved* (after every edit, in the saved dtype). *Greedy* says whether greedy
decoding after the same context yields exactly the target's tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay.digests import Digest, digest_file
from lmassay.provenance import provenance, utc_now
from lmassay.repair.edit_inputs import FactRequest
from lmassay.repair.mlp_site import greedy_continuation, target_probability
from lmassay.repair.rank_one import EditReport
from lmassay.repair.saving import source_dtype

if TYPE_CHECKING:
    from lmassay.attest.model_loading import LoadedModel
    from lmassay.attest.recipe import AttestationResult
    from lmassay.repair.edit import EditConfig

__all__ = [
    "ATTESTATION_DIR",
    "SCHEMA",
    "VERIFICATION_METRIC",
    "EditResult",
    "EditedModel",
    "EditedTensor",
    "FactOutcome",
    "SavedModel",
    "describe_input",
    "edit_record",
    "verify_facts",
]

SCHEMA = "lmassay.edit/v1"
ATTESTATION_DIR = "attestation"
VERIFICATION_METRIC = (
    "P(target | prompt): the product over the tokens of ' ' + target of their probability after "
    "[BOS or EOS] + the prompt's tokens, under the edited model as saved (all edits applied)"
)


@dataclass(frozen=True)
class FactOutcome:
    """What happened to one fact. Probabilities are P(target | prompt), see the module doc."""

    request: FactRequest
    layer: int
    tensor: str
    fact_token: str
    prob_before: float  # on the input model, before any edit
    prob_before_own_edit: float  # right before this fact's edit (after the earlier facts')
    prob_after_own_edit: float  # right after this fact's edit (later edits may move it)
    prob_after: float  # on the final model as saved: what ``verified`` is judged on
    verified: bool
    greedy: bool  # greedy decoding after the prompt gives exactly the target's tokens
    greedy_text: str  # what greedy decoding gives (as many tokens as the target has)
    delta_norm: float  # Frobenius norm of this fact's ΔW
    target_nll_before: float
    target_nll_optimised: float

    def to_json(self) -> dict[str, Any]:
        edit = self.request.edit
        return {
            "id": self.request.id,
            "line": self.request.line,
            "prompt": edit.prompt,
            "subject": edit.subject,
            "target": edit.target,
            "prob_before": self.prob_before,
            "prob_after": self.prob_after,
            "prob_before_own_edit": self.prob_before_own_edit,
            "prob_after_own_edit": self.prob_after_own_edit,
            "verified": self.verified,
            "greedy": self.greedy,
            "greedy_text": self.greedy_text,
            "layer": self.layer,
            "tensor": self.tensor,
            "fact_token": self.fact_token,
            "delta_norm": self.delta_norm,
            "target_nll_before": self.target_nll_before,
            "target_nll_optimised": self.target_nll_optimised,
        }


@dataclass(frozen=True)
class EditResult:
    """What :func:`lmassay.repair.edit.edit_model` produced: ``edit.json``'s content, per-fact
    outcomes and paths."""

    record: dict[str, Any]
    facts: list[FactOutcome]
    out: Path
    attestation: AttestationResult | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def all_verified(self) -> bool:
        return all(f.verified for f in self.facts)

    @property
    def exit_code(self) -> int:
        """0 when every fact is verified and the attestation (if run) is consistent; else 1."""
        attest_ok = self.attestation is None or self.attestation.exit_code == 0
        return 0 if self.all_verified and attest_ok else 1


@dataclass(frozen=True)
class EditedTensor:
    """The one tensor the edits changed, and by how much (Frobenius norms)."""

    layer: int
    name: str
    fact_token: str
    change_norm: float
    relative_change: float  # change_norm / the norm of the tensor before the edits


@dataclass(frozen=True)
class EditedModel:
    """What the edits did, judged on the edited model in memory before it is saved."""

    input: dict[str, Any]  # the input model, see :func:`describe_input`
    covariance: dict[str, Any]  # what C was computed from
    tensor: EditedTensor
    outcomes: list[FactOutcome]
    dtype: str  # the dtype the edited model is judged and saved in (the source's)


@dataclass(frozen=True)
class SavedModel:
    """The edited model as written: its folder, files, their digest and the copied files."""

    out: Path
    files: list[str]
    digest: Digest
    copied: list[str]


def verify_facts(
    model: Any,
    tokenizer: Any,
    requests: Sequence[FactRequest],
    initial: Sequence[float],
    reports: Sequence[EditReport],
    min_probability: float,
) -> list[FactOutcome]:
    """Each fact's outcome, judged on ``model`` as it is now (all edits applied)."""
    outcomes = []
    for request, before, report in zip(requests, initial, reports, strict=True):
        prompt, target = request.edit.prompt, request.edit.target
        after = target_probability(model, tokenizer, prompt, target)
        greedy, greedy_text = greedy_continuation(model, tokenizer, prompt, target)
        outcomes.append(
            FactOutcome(
                request=request,
                layer=report.layer,
                tensor=report.tensor_name,
                fact_token=report.fact_token,
                prob_before=before,
                prob_before_own_edit=report.prob_before,
                prob_after_own_edit=report.prob_after,
                prob_after=after,
                verified=after >= min_probability,
                greedy=greedy,
                greedy_text=greedy_text,
                delta_norm=report.delta_norm,
                target_nll_before=report.update.loss_before,
                target_nll_optimised=report.update.loss_after,
            )
        )
    return outcomes


def describe_input(loaded: LoadedModel) -> dict[str, Any]:
    """The input model as ``edit.json`` records it (its dtype as its config.json states it; for
    a hub id, ``hub``: the id, the revision asked for and the commit it resolved to)."""
    described = {
        "name": loaded.name,
        "path": str(loaded.path),
        "digest": loaded.digest.to_json(),
        "tokenizer_digest": loaded.tokenizer_digest.to_json(),
        "files": loaded.files,
        "dtype": source_dtype(loaded.path),
        "architecture": type(loaded.model).__name__,
        "n_parameters": loaded.n_parameters,
    }
    if loaded.hub is not None:
        described["hub"] = loaded.hub.to_json()
    return described


def _method(config: EditConfig, tensor: EditedTensor) -> dict[str, Any]:
    return {
        "name": "rank-one (ROME-style) edit of one MLP output projection, fact after fact",
        "layer": tensor.layer,
        "tensor": tensor.name,
        "fact_token": tensor.fact_token,
        "steps": config.steps,
        "lr": config.lr,
        "kl_weight": config.kl_weight,
        "weight_decay": config.weight_decay,
        "clamp": config.clamp,
        "ridge": config.ridge,
        "n_prefixes": config.n_prefixes,
        "seed": config.seed,
        "compute_dtype": config.dtype,
    }


def _summary(outcomes: Sequence[FactOutcome], tensor: EditedTensor) -> dict[str, Any]:
    n_verified = sum(o.verified for o in outcomes)
    return {
        "n_facts": len(outcomes),
        "n_verified": n_verified,
        "n_greedy": sum(o.greedy for o in outcomes),
        "all_verified": n_verified == len(outcomes),
        "tensor": tensor.name,
        "tensor_change_norm": tensor.change_norm,
        "tensor_relative_change": tensor.relative_change,
    }


def _attestation(
    config: EditConfig, attestation: AttestationResult | None
) -> dict[str, Any] | None:
    if attestation is None:
        return None
    document = attestation.document
    reference = document.reference.digest if document.reference else None
    probes = document.probes.digest if document.probes else None
    return {
        "path": f"{ATTESTATION_DIR}/attestation.json",
        "verdict": document.verdict.value,
        "flagged": list(document.flagged),
        "comparison": document.comparison.value,
        "reference": {"path": config.reference, "digest": _digest_json(reference)},
        "probes": {"path": config.probes, "digest": _digest_json(probes)},
    }


def _digest_json(digest: Digest | str | None) -> dict[str, str] | str | None:
    """A digest as the attestation wrote it (older attestations wrote a bare string)."""
    return digest.to_json() if isinstance(digest, Digest) else digest


def edit_record(
    config: EditConfig,
    run: tuple[str, float],
    edited: EditedModel,
    saved: SavedModel,
    attestation: AttestationResult | None,
) -> dict[str, Any]:
    """The content of ``edit.json`` (schema :data:`SCHEMA`); ``run`` is (started, perf_counter
    at the start)."""
    started, t0 = run
    prov = provenance(asdict(config), config.seed)
    prov.update(started=started, finished=utc_now(), duration_s=round(time.perf_counter() - t0, 3))
    outcomes = edited.outcomes
    return {
        "schema": SCHEMA,
        "created": prov["finished"],
        "model": edited.input,
        "facts_file": {
            "path": str(config.facts),
            "digest": digest_file(config.facts).to_json(),
            "n_facts": len(outcomes),
        },
        "method": _method(config, edited.tensor),
        "covariance": edited.covariance,
        "verification": {"metric": VERIFICATION_METRIC, "min_probability": config.min_probability},
        "edits": [o.to_json() for o in outcomes],
        "summary": _summary(outcomes, edited.tensor),
        "output": {
            "path": str(saved.out),
            "dtype": edited.dtype,
            "files": saved.files,
            "digest": saved.digest.to_json(),
            "digest_of": "the model files listed here, as written (before edit.json and "
            "attestation/ were added)",
            "copied_from_source": saved.copied,
        },
        "attestation": _attestation(config, attestation),
        "provenance": prov,
    }
