"""What ``lmassay attest`` is asked to do: :class:`AttestConfig`, checked once by ``validate``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lmassay.attest.model_loading import ModelOptions
from lmassay.attest.self_probe import SampleSettings
from lmassay.attest.statistics.records import DEFAULT_SPREAD_MULTIPLE
from lmassay.attest.streaming import OFFLOAD_MODES, Offload
from lmassay.bounded_read import FileSizeLimit
from lmassay.choices import COMPARISONS, Comparison
from lmassay.errors import Check, InputError, require
from lmassay.scale.options import ray_checks

__all__ = ["AttestConfig"]


@dataclass(frozen=True)
class AttestConfig(ModelOptions, FileSizeLimit):
    """Everything ``lmassay attest`` needs; :meth:`validate` names the offending flag.

    The model-loading fields (device, dtype, allow_pickle, trust_remote_code, revision) are
    :class:`~lmassay.attest.model_loading.ModelOptions`' and keyword-only.
    """

    model: str
    """Model under test: a local folder or a Hugging Face hub id."""
    probes: str | None
    """Probe corpus: JSONL, a folder of category sub-folders of .txt files, a saved HF dataset,
    parquet, ``hf:`` dataset, suite file, ``builtin:NAME`` or built suite folder; None: the
    shipped offline suite (:data:`lmassay.attest.suites.DEFAULT_SUITE`)."""
    out: str | None
    """Output folder for attestation.json, samples.jsonl, report.html and report.md; None (the
    Python API without ``out=``): nothing is written."""
    reference: str | None = None
    """Known-good reference model (folder or hub id). Without it the model is scored alone."""
    reference_revision: str | None = None
    """Hub revision (branch, tag or commit) of a hub-id reference; ``revision`` is the model's."""
    baseline: str | None = None
    """Without a reference: an earlier attestation folder of a trusted model on the same probes."""
    reference_cache: str | None = None
    """Instead of a reference: a cache of its scores on these probes (``lmassay reference build``);
    only the model runs, and KL is the cache's lower bound (see
    :mod:`lmassay.attest.reference_cache`)."""
    text_field: str = "text"
    category_field: str = "category"
    id_field: str = "id"
    split: str | None = None
    per_category: int | None = None
    seed: int = 0
    max_length: int | None = None
    token_budget: int | None = None
    offload: Offload = "none"
    """``stream``: score one transformer block at a time from the safetensors files (models that
    do not fit in memory; see :mod:`lmassay.attest.streaming`); ``none``: load the whole model."""
    comparison: Comparison = "auto"
    alpha: float = 0.05
    noise_floor: float | None = None
    spread_multiple: float = DEFAULT_SPREAD_MULTIPLE
    """A category's mean effect must also exceed this many spreads between the other
    categories' levels (see :mod:`lmassay.attest.statistics.verdict`); 0: the absolute floor only."""
    sparse_floor: float | None = None
    """Smallest sparse effect that can flag a category (see
    :mod:`lmassay.attest.statistics.sparse`); the comparison's default when unset."""
    answer_floor: float | None = None
    """Smallest answer-test effect that can flag a category (nats; see
    :mod:`lmassay.attest.answers`); the default when unset."""
    different_model_threshold: float | None = None
    n_bootstrap: int = 1000
    n_permutations: int = 999
    """Label permutations calibrating the sparse test; 0 turns it off."""
    min_samples: int = 5
    evidence_samples: int = 3
    evidence_tokens: int = 5
    context_tokens: int = 12
    write_report: bool = True
    chat_template: bool = False
    """Score conversation probes' responses under the model's chat template (see
    :mod:`lmassay.attest.conditioned`)."""
    self_probe: int = 0
    """Continuations per category sampled from the model and scored by both models after the
    first pass (KL(model ‖ reference) on the model's own text; see
    :mod:`lmassay.attest.self_probe`); 0 turns the pass off."""
    self_probe_tokens: int = 48
    """Most new tokens per self-probe continuation."""
    self_probe_prompt_tokens: int = 16
    """Tokens of a probe sample's start given as a self-probe's prompt."""
    self_probe_temperature: float = 1.0
    """Sampling temperature of the self-probes (1.0: the model's own distribution)."""
    ray: str | None = None
    """Score on Ray (see :mod:`lmassay.scale.ray_scoring`): ``"local"`` starts a private local
    cluster for the run, any other value is the address of a running one (``HOST:PORT``,
    ``ray://HOST:PORT`` or ``auto``); None: score in this process."""
    ray_workers: int | None = None
    """Ray workers (actors) that score shards; None: one per GPU the cluster has, else one per CPU."""

    @property
    def self_probe_settings(self) -> SampleSettings:
        """The self-probing pass's sampling settings (``--self-probe``, ``--seed``, ...)."""
        return SampleSettings(
            n_per_category=self.self_probe,
            prompt_tokens=self.self_probe_prompt_tokens,
            new_tokens=self.self_probe_tokens,
            temperature=self.self_probe_temperature,
            seed=self.seed,
        )

    def validate(self) -> None:
        super().validate()
        require((*self._value_checks(), *self._combination_checks()))
        self.check_file_size_limit()
        out = Path(self.out) if self.out is not None else None
        if out is not None and out.exists() and not out.is_dir():
            raise InputError(
                f"--out {self.out!r} is a file", "pass a folder (it is created if missing)"
            )

    def _value_checks(self) -> list[Check]:
        """Each flag's own range."""
        return [
            (
                self.offload in OFFLOAD_MODES,
                f"--offload {self.offload!r} is not known",
                "use none or stream",
            ),
            (
                self.comparison in COMPARISONS,
                f"--comparison {self.comparison!r} is not known",
                "use auto, kl or bpb",
            ),
            (0 < self.alpha < 1, f"--alpha {self.alpha} is outside (0, 1)", "use e.g. 0.05"),
            (
                self.reference_revision is None
                or (
                    bool(self.reference_revision)
                    and self.reference_revision.strip() == self.reference_revision
                ),
                f"--reference-revision {self.reference_revision!r} is not a revision",
                "pass a branch, tag or commit",
            ),
            (
                self.noise_floor is None or self.noise_floor >= 0,
                f"--noise-floor {self.noise_floor} is negative",
                "use 0 or more",
            ),
            (
                self.different_model_threshold is None or self.different_model_threshold > 0,
                f"--different-model-threshold {self.different_model_threshold} is not positive",
                "use a positive number",
            ),
            (
                self.n_bootstrap >= 1,
                f"--n-bootstrap {self.n_bootstrap} is below 1",
                "use e.g. 1000",
            ),
            (self.min_samples >= 2, f"--min-samples {self.min_samples} is below 2", "use e.g. 5"),
            (
                self.n_permutations == 0 or self.n_permutations >= 19,
                f"--n-permutations {self.n_permutations} is neither 0 nor at least 19",
                "use e.g. 999 (0 turns the sparse test off)",
            ),
            (
                math.isfinite(self.spread_multiple) and self.spread_multiple >= 0,
                f"--spread-multiple {self.spread_multiple} is not a number >= 0",
                "use e.g. 3 (0 keeps only the absolute noise floor)",
            ),
            (
                self.sparse_floor is None or self.sparse_floor >= 0,
                f"--sparse-floor {self.sparse_floor} is negative",
                "use 0 or more, or leave it unset",
            ),
            (
                self.answer_floor is None
                or (math.isfinite(self.answer_floor) and self.answer_floor >= 0),
                f"--answer-floor {self.answer_floor} is not a number >= 0",
                "use 0 or more, or leave it unset",
            ),
            (
                self.per_category is None or self.per_category >= 1,
                f"--per-category {self.per_category} is below 1",
                "use 1 or more",
            ),
            (
                self.max_length is None or self.max_length >= 1,
                f"--max-length {self.max_length} is below 1",
                "use 1 or more",
            ),
            (
                self.token_budget is None or self.token_budget >= 1,
                f"--token-budget {self.token_budget} is below 1",
                "use 1 or more",
            ),
            *ray_checks(self.ray, self.ray_workers),
            (
                self.evidence_samples >= 0 and self.evidence_tokens >= 0,
                "--evidence-samples/--evidence-tokens are negative",
                "use 0 or more",
            ),
        ]

    def _self_probe_checks(self) -> list[Check]:
        """``--self-probe`` and its settings (checked only when the pass is on)."""
        if self.self_probe <= 0:
            return [
                (
                    self.self_probe == 0,
                    f"--self-probe {self.self_probe} is negative",
                    "use 0 (off) or the continuations per category, e.g. 8",
                )
            ]
        flags = {
            "n_per_category": "--self-probe",
            "prompt_tokens": "--self-probe-prompt-tokens",
            "new_tokens": "--self-probe-tokens",
            "temperature": "--self-probe-temperature",
        }
        return [
            *self.self_probe_settings.checks(flags),
            (
                self.reference is not None,
                "--self-probe needs --reference",
                "add --reference, or drop --self-probe",
            ),
            (
                self.offload == "none",
                "--self-probe cannot sample from a model streamed with --offload stream",
                "drop --self-probe or --offload stream",
            ),
            (
                self.comparison != "bpb",
                "--self-probe needs a token-level comparison, not --comparison bpb",
                "use --comparison auto or kl with a reference of the same tokenizer",
            ),
        ]

    def _reference_cache_checks(self) -> list[Check]:
        """``--reference-cache`` stands in for the reference (checked only when given)."""
        if self.reference_cache is None:
            return []
        return [
            (
                not (self.reference or self.baseline),
                "--reference-cache was given with --reference or --baseline",
                "give one of them",
            ),
            (
                self.comparison != "bpb",
                "--reference-cache holds token-level scores, not bits per byte (--comparison bpb)",
                "use --comparison auto or kl",
            ),
            (
                self.offload == "none",
                "--reference-cache cannot be used with --offload stream yet",
                "drop --offload stream, or attest with --reference",
            ),
            (
                self.ray is None,
                "--reference-cache cannot be used with --ray yet (only the model runs: one process)",
                "drop --ray, or attest with --reference",
            ),
        ]

    def _combination_checks(self) -> list[Check]:
        """Flags that only make sense together."""
        return [
            *self._self_probe_checks(),
            (
                not (self.reference and self.baseline),
                "--reference and --baseline were both given",
                "give one of them",
            ),
            (
                not (self.comparison == "kl" and not (self.reference or self.reference_cache)),
                "--comparison kl needs --reference",
                "add --reference or use --comparison auto",
            ),
            *self._reference_cache_checks(),
        ]
