"""``lmassay edit``: repair (or write) facts in a model by rank-one (ROME-style) edits, and check them.

The recipe reads top to bottom in :func:`edit_model`: check the configuration, read the facts
(:mod:`lmassay.repair.edit_inputs`), load the model, compute the covariance ``C``, apply one
rank-one update per fact (:func:`lmassay.repair.rank_one.edit_facts`, the method the zoo's
``fact-rome`` variant tampers with), verify every fact on the edited model
(:mod:`lmassay.repair.edit_record`, which states the verification contract), save a standard
transformers folder, optionally attest it against a reference, and write ``edit.json``.

``OUT`` is written as one set (:class:`~lmassay.output_folder.OutputFolder`): checked and locked
before the model is loaded, everything written to a hidden staging folder beside it that replaces
``OUT`` only when the run has finished, so a failed or interrupted run leaves no ``OUT`` (or the
old one, with ``overwrite``) behind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lmassay._atomic import atomic_write_json
from lmassay.attest.model_loading import (
    Dtype,
    LoadedModel,
    ModelOptions,
)
from lmassay.bounded_read import FileSizeLimit
from lmassay.digests import model_identity
from lmassay.errors import Check, InputError, require
from lmassay.output_folder import OutputFolder, needed_for_copy
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import utc_now
from lmassay.repair.edit_inputs import (
    COVARIANCE_SOURCES,
    IDENTITY_NOTE,
    FactRequest,
    edit_covariance,
    read_covariance_texts,
    read_fact_edits,
)
from lmassay.repair.edit_record import (
    ATTESTATION_DIR,
    SCHEMA,
    EditedModel,
    EditedTensor,
    EditResult,
    FactOutcome,
    SavedModel,
    describe_input,
    edit_record,
    verify_facts,
)
from lmassay.repair.mlp_site import (
    FACT_TOKENS,
    FactToken,
    choose_fact_token,
    default_layer,
    greedy_continuation,
    mlp_site,
    target_probability,
)
from lmassay.repair.rank_one import edit_facts
from lmassay.repair.saving import save_like_source, source_dtype

if TYPE_CHECKING:
    from lmassay.attest.recipe import AttestationResult

__all__ = [
    "COVARIANCE_SOURCES",
    "IDENTITY_NOTE",
    "SCHEMA",
    "EditConfig",
    "EditResult",
    "FactOutcome",
    "FactRequest",
    "edit_model",
    "greedy_continuation",
    "read_covariance_texts",
    "read_fact_edits",
]

EDIT_FILE = "edit.json"


@dataclass(frozen=True)
class EditConfig(ModelOptions, FileSizeLimit):
    """Everything ``lmassay edit`` needs; :meth:`validate` names the offending flag.

    The model-loading fields are :class:`~lmassay.attest.model_loading.ModelOptions`' (keyword-only);
    ``dtype`` defaults to float32 here.
    """

    model: str
    """The model to edit: a local folder or a Hugging Face hub id (GPT-2 or Llama-shaped)."""
    facts: str
    """JSONL file, one fact a line: {"prompt", "subject", "target"} and an optional "id"."""
    out: str
    """Folder for the edited model, edit.json and (with reference and probes) attestation/."""
    reference: str | None = None
    """Known-good reference to attest the edited model against (needs ``probes``)."""
    probes: str | None = None
    """Probe corpus for the attestation; also the covariance texts when none are given."""
    covariance_texts: str | None = None
    """Texts for the second moment C and the context prefixes: a JSONL file with "text" per line,
    or anything :func:`lmassay.attest.probes.load_probes` reads (category folders of .txt, parquet, a
    saved dataset). Default: the probes' texts, else C = I (see :data:`IDENTITY_NOTE`)."""
    layer: int | None = None
    """The layer whose MLP output projection is edited (default: the middle one)."""
    fact_token: str | None = None
    """Where k* is read: "subject_last" or "last" (default: subject_last, last in the last layer)."""
    min_probability: float = 0.5
    """A fact is verified when P(target | prompt) on the edited model is at least this."""
    seed: int = 0
    dtype: Dtype = field(default="float32", kw_only=True)
    """The dtype the edits are computed in; the edited model is saved in the source's dtype."""
    steps: int = 40
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    ridge: float = 0.01
    n_prefixes: int = 5
    n_covariance_texts: int = 300
    """At most this many covariance texts are used, sampled with ``seed``."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of the attestation."""
    overwrite: bool = False
    """Replace an existing OUT (only after the new one is complete)."""

    def validate(self) -> None:
        super().validate()
        require((*self._value_checks(), *self._combination_checks()))
        self.check_file_size_limit()
        for flag, value in (
            ("--facts", self.facts),
            ("--covariance-texts", self.covariance_texts),
            ("--probes", self.probes),
        ):
            if value is not None and not Path(value).exists():
                raise InputError(f"{flag} {value!r} does not exist", "check the path")
        self._validate_out()

    def _value_checks(self) -> list[Check]:
        """Each flag's own range."""
        return [
            (
                self.layer is None or self.layer >= 0,
                f"--layer {self.layer} is negative",
                "give a layer index from 0, or leave it out for the middle layer",
            ),
            (
                self.fact_token is None or self.fact_token in FACT_TOKENS,
                f"--fact-token {self.fact_token!r} is not known",
                "use subject_last or last",
            ),
            (
                0 < self.min_probability <= 1,
                f"--min-probability {self.min_probability} is outside (0, 1]",
                "use e.g. 0.5",
            ),
            (self.seed >= 0, f"--seed {self.seed} is negative", "use 0 or more"),
            (self.steps >= 1, f"--steps {self.steps} is below 1", "use e.g. 40"),
            (self.lr > 0, f"--lr {self.lr} is not positive", "use e.g. 0.5"),
            (self.kl_weight >= 0, f"--kl-weight {self.kl_weight} is negative", "use 0 or more"),
            (
                self.weight_decay >= 0,
                f"--weight-decay {self.weight_decay} is negative",
                "use 0 or more",
            ),
            (self.clamp > 0, f"--clamp {self.clamp} is not positive", "use e.g. 4"),
            (self.ridge > 0, f"--ridge {self.ridge} is not positive", "use e.g. 0.01"),
            (self.n_prefixes >= 1, f"--n-prefixes {self.n_prefixes} is below 1", "use e.g. 5"),
            (
                self.n_covariance_texts >= 1,
                f"--n-covariance-texts {self.n_covariance_texts} is below 1",
                "use e.g. 300",
            ),
            (
                self.n_bootstrap >= 1,
                f"--n-bootstrap {self.n_bootstrap} is below 1",
                "use e.g. 1000",
            ),
        ]

    def _combination_checks(self) -> list[Check]:
        """Flags that only make sense together."""
        return [
            (
                not (self.reference and not self.probes),
                "--reference was given without --probes",
                "add --probes to attest the edited model against the reference, or drop --reference",
            ),
            (
                not (self.probes and not self.reference),
                "--probes was given without --reference",
                "add --reference to attest the edited model, or pass the texts as "
                "--covariance-texts",
            ),
        ]

    def _validate_out(self) -> None:
        out = Path(self.out).expanduser()
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {self.out!r} is a file", "pass a folder (it is created)")
        if out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise InputError(
                f"--out {self.out!r} already exists and is not empty",
                "choose another folder, or pass --overwrite to replace it",
            )
        source = Path(self.model).expanduser()
        if source.exists():
            src, dst = source.resolve(), out.resolve()
            if src == dst or dst in src.parents or src in dst.parents:
                raise InputError(
                    f"--out {self.out!r} is, holds or lies inside the --model folder",
                    "write the edited model to a folder of its own",
                )


# --------------------------------------------------------------------------------------------
# The recipe


def edit_model(config: EditConfig, progress: Progress | None = None) -> EditResult:
    """Write the facts of ``config.facts`` into ``config.model`` and save the result to
    ``config.out`` with ``edit.json`` (and ``attestation/`` with a reference and probes).

    Raises :class:`InputError` for unusable input before anything is written. A fact that is
    not verified is not an error: the edited model is saved, ``edit.json`` says which facts fall
    short and :attr:`EditResult.exit_code` is 1.
    """
    progress = progress or NullProgress()
    config.validate()
    run = utc_now(), time.perf_counter()
    requests = read_fact_edits(config.facts, max_bytes=config.max_file_bytes)
    progress.log(f"facts: {len(requests)} from {config.facts}")
    out = Path(config.out).expanduser()
    with OutputFolder(out, owned=None, needs_bytes=needed_for_copy(config.model)) as folder:
        progress.log(f"loading model {config.model}")
        loaded = config.load(config.model)
        edited = _edit_and_verify(config, loaded, requests, progress)
        staging = folder.staging
        progress.log(f"saving the edited model ({edited.dtype} safetensors)")
        with folder.writing():
            saved = _save(loaded, staging, out)
        del loaded  # the attestation loads the edited model from the folder
        attestation = None
        if config.reference is not None and config.probes is not None:
            progress.log("attesting the edited model against the reference")
            attestation = _attest(config, config.reference, config.probes, staging, out, progress)
        record = edit_record(config, run, edited, saved, attestation)
        with folder.writing():
            atomic_write_json(staging / EDIT_FILE, record)
        folder.commit()
    progress.log(f"wrote {out}")
    paths = {"model": out, "edit": out / EDIT_FILE}
    if attestation is not None:
        paths["attestation"] = out / ATTESTATION_DIR / "attestation.json"
    return EditResult(record, edited.outcomes, out, attestation, paths)


def _edit_and_verify(
    config: EditConfig, loaded: LoadedModel, requests: Sequence[FactRequest], progress: Progress
) -> EditedModel:
    """Edit ``loaded.model`` in place, fact after fact; cast it to the source's dtype and judge
    every fact on it (see :mod:`lmassay.repair.edit_record`)."""
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    layer = default_layer(model) if config.layer is None else config.layer
    tensor_name = mlp_site(model, layer).tensor_name  # InputError for a layer out of range
    fact_token = _fact_token(config, model, layer)
    initial = [target_probability(model, tokenizer, r.edit.prompt, r.edit.target) for r in requests]
    covariance = edit_covariance(config, loaded, layer, progress)
    original = model.get_parameter(tensor_name).detach().double().cpu().clone()

    reports = edit_facts(
        model,
        tokenizer,
        [r.edit for r in requests],
        layer=layer,
        covariance_texts=covariance.texts,
        covariance=covariance.matrix,
        steps=config.steps,
        lr=config.lr,
        kl_weight=config.kl_weight,
        weight_decay=config.weight_decay,
        clamp=config.clamp,
        n_prefixes=config.n_prefixes,
        fact_token=fact_token,
        seed=config.seed,
        progress=progress.task("rank-one edits", len(requests)),
    )

    saved_dtype = source_dtype(loaded.path) or loaded.dtype
    model.to(getattr(torch, saved_dtype))
    progress.log(f"verifying {len(requests)} facts on the edited model ({saved_dtype})")
    outcomes = verify_facts(model, tokenizer, requests, initial, reports, config.min_probability)
    change = float((model.get_parameter(tensor_name).detach().double().cpu() - original).norm())
    relative = change / max(float(original.norm()), 1e-12)
    tensor = EditedTensor(layer, tensor_name, fact_token, change, relative)
    return EditedModel(describe_input(loaded), covariance.record, tensor, outcomes, saved_dtype)


def _fact_token(config: EditConfig, model: Any, layer: int) -> FactToken:
    """``--fact-token`` (checked by :meth:`EditConfig.validate`), else the layer's default."""
    if config.fact_token is None:
        return choose_fact_token(model, layer)
    return cast(FactToken, config.fact_token)


def _save(loaded: LoadedModel, staging: Path, out: Path) -> SavedModel:
    """The edited model as safetensors in ``staging`` (which becomes ``out``), like its source."""
    copied = save_like_source(loaded.model, loaded.path, staging)
    identity = model_identity(staging)  # the digest attestations and seals name it by
    return SavedModel(out, identity.names, identity.root, copied)


def _attest(
    config: EditConfig, reference: str, probes: str, staging: Path, final: Path, progress: Progress
) -> AttestationResult:
    """Attest the edited model in ``staging`` against ``reference`` into ``staging/attestation``;
    the document names the folder the model is published to (``final``)."""
    from lmassay.attest.recipe import AttestConfig, attest

    folder = staging / ATTESTATION_DIR
    result = attest(
        AttestConfig(
            model=str(staging),
            probes=probes,
            out=str(folder),
            reference=reference,
            seed=config.seed,
            n_bootstrap=config.n_bootstrap,
            max_file_size=config.max_file_size,
            **asdict(config.model_options),
        ),
        progress,
        published_as=(str(final), str(final / ATTESTATION_DIR)),
    )
    return result
