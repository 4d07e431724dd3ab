"""The attestation document (``attestation.json``, schema ``lmassay.attestation/v1``) as typed records.

:class:`Attestation` is read once (:meth:`Attestation.read` / :meth:`Attestation.from_json`):
a malformed document fails there, with one :class:`~lmassay.errors.InputError` that names the file
and every offending field, so that nothing downstream reads the JSON defensively.
:meth:`Attestation.to_json` gives the JSON object back exactly: the keys in the order they were
read, numbers as they were (an ``int`` stays an ``int``), fields this version does not know kept in
``extra``, and fields an older writer left out still left out.  A record built in code (rather than
read) writes every field it knows, in the order declared here, which is the order
``lmassay attest`` writes.

The JSON Schema of the document ships beside this module (``attestation.schema.json``, draft
2020-12; :func:`json_schema` loads it); ``docs/attestation-schema.md`` explains each field.

Layout::

    Attestation
      ├─ summary: Summary                 totals and the test's settings
      ├─ categories: CategoryRow, …       one row per probe category, sorted by name
      ├─ evidence: Evidence, …            per flagged category: EvidenceSample → EvidenceToken
      ├─ model, reference: ModelInfo      digest (lmassay.digests.Digest), dtype, device, hub, …
      ├─ baseline: BaselineInfo           the --baseline run, if any
      ├─ probes: ProbesInfo               the corpus digest and counts
      └─ provenance: Provenance           versions, seed, resolved config, timing
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

from lmassay._atomic import atomic_write_json
from lmassay.attest.json_records import (
    Record,
    anything,
    digest,
    enum_of,
    fixed,
    integer,
    items,
    mapping,
    number,
    optional,
    record,
    text,
    truth,
)
from lmassay.bounded_read import DOCUMENT_LIMIT, read_bytes
from lmassay.digests import Digest
from lmassay.errors import InputError

SCHEMA = "lmassay.attestation/v1"
ATTESTATION_FILE = "attestation.json"
STATEMENT_FILE = "attestation.sig"
"""Where ``attest --sign`` writes the signed statement, beside attestation.json."""
KL_DIRECTION = "KL(reference || model), nats/token"
SELF_PROBE_DIRECTION = "KL(model || reference), nats/token, on the model's own continuations"
SCHEMA_FILE = "attestation.schema.json"
DEFAULT_SUITE_NOTE = (
    "the default: no --probes was given, so the shipped public-domain suite builtin:offline "
    "was scored"
)
"""What the reports say beside ``probes`` when ``probes.default_suite`` is true."""
_FIX_RERUN = "run `lmassay attest` again to write a complete attestation.json"
R = TypeVar("R", bound=Record)

__all__ = [
    "ATTESTATION_FILE",
    "DEFAULT_SUITE_NOTE",
    "KL_DIRECTION",
    "SCHEMA",
    "SELF_PROBE_DIRECTION",
    "Attestation",
    "BaselineInfo",
    "CategoryRow",
    "Comparison",
    "Evidence",
    "EvidenceSample",
    "EvidenceToken",
    "HubInfo",
    "ModelInfo",
    "ProbesInfo",
    "Provenance",
    "ReferenceCacheInfo",
    "SelfProbe",
    "SelfProbeCategory",
    "SelfProbeExcerpt",
    "Summary",
    "Verdict",
    "as_attestation",
    "from_json",
    "json_schema",
]


class Verdict(str, Enum):
    """What the attestation concluded."""

    CONSISTENT = "consistent"
    TAMPERED = "tampered"
    DIFFERENT_MODEL = "different-model"
    SCORED_ONLY = "scored-only"


class Comparison(str, Enum):
    """How model and reference were compared: token-level KL, bits per byte, or the model alone."""

    KL = "kl"
    BPB = "bpb"
    NONE = "none"


# Field types: the Python type and the parser that reads it from JSON (null allowed where Optional).
Str = Annotated[str, text]
OptStr = Annotated[str | None, optional(text)]
OptInt = Annotated[int | None, optional(integer)]
OptNum = Annotated[float | None, optional(number)]
OptBool = Annotated[bool | None, optional(truth)]
OptPair = Annotated[
    tuple[float, float] | None, optional(fixed(number, number, what="a [low, high] pair"))
]
OptNums = Annotated[tuple[float, ...] | None, optional(items(number))]
Strs = Annotated[tuple[str, ...], items(text)]
OptDigest = Annotated[Digest | str | None, optional(digest)]
Predictions = Annotated[
    tuple[tuple[str, float], ...] | None,
    optional(items(fixed(text, number, what="a [token, probability] pair"))),
]


def from_json(kind: type[R], raw: Any, source: str) -> R:
    """``raw`` read as the record ``kind``; raises one :class:`InputError` naming ``source`` and
    every field that is wrong."""
    problems: list[str] = []
    parsed = kind.parse(raw, "", problems)
    if parsed is None:
        raise InputError(f"{source}: {'; '.join(problems)}", _FIX_RERUN)
    return parsed


@dataclass(frozen=True, kw_only=True)
class Summary(Record):
    """``summary``: totals over all samples (token-weighted) and the settings of the test."""

    statistic: OptStr = None
    n_samples: OptInt = None
    n_tokens: OptInt = None
    n_bytes: OptInt = None
    ppl_model: OptNum = None
    ppl_reference: OptNum = None
    bpb_model: OptNum = None
    bpb_reference: OptNum = None
    delta_bpb: OptNum = None
    mean_kl: OptNum = None
    baseline_level: OptNum = None
    noise_floor: OptNum = None
    spread_multiple: OptNum = None
    """The mean test's relative floor in spreads of the other categories; absent in older files."""
    sparse_floor: OptNum = None
    """Absent from files written before the sparse test."""
    answer_floor: OptNum = None
    """The answer test's absolute floor (nats); absent from files written before it."""
    different_model_threshold: OptNum = None
    different_model_basis: OptStr = None
    """What decided the different-model call: "weights" (both checkpoints comparable) or
    "divergence" (the median category level against the threshold); absent in older files."""
    weight_change: OptNum = None
    """Median over tensors of ‖W_model − W_reference‖ / ‖W_reference‖, when comparable."""
    alpha: OptNum = None
    message: OptStr = None


@dataclass(frozen=True, kw_only=True)
class CategoryRow(Record):
    """One ``categories`` row: a category's figures, its test and whether it is flagged."""

    name: Str
    n_samples: OptInt = None
    n_tokens: OptInt = None
    n_bytes: OptInt = None
    ppl_model: OptNum = None
    ppl_reference: OptNum = None
    ppl_model_ci: OptPair = None
    ppl_reference_ci: OptPair = None
    bpb_model: OptNum = None
    bpb_reference: OptNum = None
    delta_bpb: OptNum = None
    mean_kl: OptNum = None
    mean_kl_ci: OptPair = None
    tail_kl: OptNum = None
    tail_kl_ci: OptPair = None
    top1_agreement: OptNum = None
    level: OptNum = None
    p_value: OptNum = None
    q_value: OptNum = None
    effect: OptNum = None
    auc: OptNum = None
    tested: OptBool = None
    """None when an older file does not say; only an explicit False means "not tested"."""
    flagged: OptBool = None
    note: OptStr = None
    distribution: OptNums = None
    # The sparse test (absent from files written before it):
    sparse_p_value: OptNum = None
    sparse_q_value: OptNum = None
    sparse_effect: OptNum = None
    n_outliers: OptInt = None
    outlier_threshold: OptNum = None
    reasons: Strs = ()
    """Why the category is flagged: "mean" (its level stands out), "sparse" (a few samples do),
    "answer" (the answers it states became less likely)."""
    spread: OptNum = None
    """Robust spread of the other tested categories' levels (absent in older files)."""
    mean_floor: OptNum = None
    """The floor the mean test's effect had to exceed (absent in older files)."""
    # The answer test (samples that state an answer; absent from files written before it):
    n_answers: OptInt = None
    answer_p_value: OptNum = None
    answer_q_value: OptNum = None
    answer_effect: OptNum = None
    n_answer_outliers: OptInt = None
    answer_threshold: OptNum = None
    answer_spread: OptNum = None
    answer_floor: OptNum = None


@dataclass(frozen=True, kw_only=True)
class EvidenceToken(Record):
    """One divergent token of an evidence sample, with context and both models' top predictions."""

    position: OptInt = None
    token: OptStr = None
    kl: OptNum = None
    logprob_model: OptNum = None
    logprob_reference: OptNum = None
    context_before: OptStr = None
    context_after: OptStr = None
    top_model: Predictions = None
    top_reference: Predictions = None


_KL_SAMPLE_KEYS = ("id", "mean_kl", "max_kl", "n_tokens", "tokens")
_BPB_SAMPLE_KEYS = (
    "id",
    "delta_bpb",
    "bpb_model",
    "bpb_reference",
    "n_tokens",
    "excerpt",
    "tokens",
)


@dataclass(frozen=True, kw_only=True)
class EvidenceSample(Record):
    """A sample behind a flag: with comparison ``kl`` its largest-KL tokens, with ``bpb`` an excerpt.

    Build one with :meth:`for_kl` or :meth:`for_bpb`, which write the fields of that comparison.
    """

    id: OptStr = None
    mean_kl: OptNum = None
    max_kl: OptNum = None
    delta_bpb: OptNum = None
    bpb_model: OptNum = None
    bpb_reference: OptNum = None
    n_tokens: OptInt = None
    excerpt: OptStr = None
    tokens: Annotated[tuple[EvidenceToken, ...], items(record(EvidenceToken))] = ()

    @classmethod
    def for_kl(cls, **values: Any) -> EvidenceSample:
        return cls(**values, keys=_KL_SAMPLE_KEYS)

    @classmethod
    def for_bpb(cls, **values: Any) -> EvidenceSample:
        return cls(**values, keys=_BPB_SAMPLE_KEYS)


@dataclass(frozen=True, kw_only=True)
class Evidence(Record):
    """The evidence for one category (flagged, or the top one when none is)."""

    category: Str
    samples: Annotated[tuple[EvidenceSample, ...], items(record(EvidenceSample))] = ()
    reasons: Strs = ()
    """Why the category is flagged (as in its ``categories`` row); absent in older files."""
    ranked_by: OptStr = None
    """The samples.jsonl field the samples were chosen by: ``mean_kl``, ``tail_kl`` (the sparse
    test's outliers) or ``delta_bpb``; absent in older files."""


@dataclass(frozen=True, kw_only=True)
class HubInfo(Record):
    """``model.hub`` / ``reference.hub``: the hub id, the revision asked for and the commit the
    snapshot resolved to (only for a hub id; absent in older files and for local folders)."""

    id: Str
    revision: OptStr = None
    commit: Str


@dataclass(frozen=True, kw_only=True)
class ModelInfo(Record):
    """``model`` / ``reference``: what was loaded, and its content digest.

    ``digest`` is the folder's (null for a model passed in memory, which is named by
    ``tensors_digest`` instead); ``hub`` is there when the model was given as a hub id.
    """

    name: OptStr = None
    path: OptStr = None
    digest: OptDigest = None
    tokenizer_digest: OptDigest = None
    files: Annotated[tuple[str, ...] | None, optional(items(text))] = None
    dtype: OptStr = None
    device: OptStr = None
    n_parameters: OptInt = None
    max_length: OptInt = None
    prefix_token_id: OptInt = None
    architecture: OptStr = None
    hub: Annotated[HubInfo | None, optional(record(HubInfo))] = None
    tensors_digest: OptDigest = None
    """A model passed in memory: the root over its state dict's tensors (see
    :func:`lmassay.attest.model_loading.state_dict_digest`)."""


@dataclass(frozen=True, kw_only=True)
class BaselineInfo(Record):
    """``baseline``: the earlier attestation of a trusted model that stood in for a reference."""

    path: OptStr = None
    model: OptStr = None
    digest: OptDigest = None


@dataclass(frozen=True, kw_only=True)
class ProbesInfo(Record):
    """``probes``: the probe corpus (no texts): where, its digest and the samples per category."""

    path: OptStr = None
    format: OptStr = None
    digest: OptDigest = None
    n_samples: OptInt = None
    categories: Annotated[Mapping[str, int], mapping(integer)] = field(default_factory=dict)
    warnings: Strs = ()
    text_field: OptStr = None
    category_field: OptStr = None
    id_field: OptStr = None
    split: OptStr = None
    per_category: OptInt = None
    seed: OptInt = None
    suite: OptStr = None
    """The suite's name (a suite file, ``builtin:NAME`` or a built suite folder); absent otherwise."""
    default_suite: OptBool = None
    """True when no ``--probes`` was given and the shipped offline suite was scored."""
    sources: Annotated[tuple[Mapping[str, Any], ...], items(mapping(anything))] = ()
    """Per dataset source (``hf:``, suites): dataset, config, split, revision, resolved commit,
    licence, counts; absent for plain files."""


@dataclass(frozen=True, kw_only=True)
class Provenance(Record):
    """``provenance``: tool and library versions, seed, the resolved configuration, timing."""

    tool: OptStr = None
    version: OptStr = None
    git_commit: OptStr = None
    python: OptStr = None
    platform: OptStr = None
    libraries: Annotated[Mapping[str, str | None], mapping(optional(text))] = field(
        default_factory=dict
    )
    seed: OptInt = None
    config: Annotated[Mapping[str, Any], mapping(anything)] = field(default_factory=dict)
    started: OptStr = None
    finished: OptStr = None
    duration_s: OptNum = None
    throughput_tokens_per_s: OptNum = None


@dataclass(frozen=True, kw_only=True)
class SelfProbeExcerpt(Record):
    """A continuation the model wrote (``attest --self-probe``), with its log-ratio."""

    id: OptStr = None
    category: OptStr = None
    prompt_id: OptStr = None
    """The probe sample whose start was the prompt."""
    logratio: OptNum = None
    """(log p_model − log p_reference) of the continuation per token, nats/token."""
    logratio_sum: OptNum = None
    n_tokens: OptInt = None
    prompt: OptStr = None
    """The prompt's last characters (cut with … at the start)."""
    continuation: OptStr = None
    """The continuation's first characters (cut with … at the end)."""


@dataclass(frozen=True, kw_only=True)
class SelfProbeCategory(Record):
    """One category of the self-probing pass: the estimate of KL(model ‖ reference) per token."""

    name: Str
    n_samples: OptInt = None
    """Continuations scored (empty ones, EOS first, are not)."""
    n_tokens: OptInt = None
    logratio: OptNum = None
    """Σ (log p_model − log p_reference) / Σ tokens over the category's continuations: the
    estimate of KL(model ‖ reference), nats/token."""
    logratio_se: OptNum = None
    """Standard error of ``logratio`` over continuations (ratio estimator, delta method)."""
    top: Annotated[tuple[SelfProbeExcerpt, ...], items(record(SelfProbeExcerpt))] = ()
    """The category's continuations of largest ``logratio``, largest first."""


@dataclass(frozen=True, kw_only=True)
class SelfProbe(Record):
    """``self_probe``: the second pass of ``attest --self-probe N`` (the verdict is the first's)."""

    direction: OptStr = None
    sampled_from: OptStr = None
    n_per_category: OptInt = None
    prompt_tokens: OptInt = None
    new_tokens: OptInt = None
    temperature: OptNum = None
    seed: OptInt = None
    n_samples: OptInt = None
    n_empty: OptInt = None
    """Continuations left out because the model wrote EOS first."""
    n_tokens: OptInt = None
    logratio: OptNum = None
    """Token-weighted over all continuations, nats/token."""
    categories: Annotated[tuple[SelfProbeCategory, ...], items(record(SelfProbeCategory))] = ()
    top: Annotated[tuple[SelfProbeExcerpt, ...], items(record(SelfProbeExcerpt))] = ()
    """"What the model now says": the continuations of largest ``logratio`` overall."""
    duration_s: OptNum = None


@dataclass(frozen=True, kw_only=True)
class CacheCalibration(Record):
    """The cache's bound against the exact KL on its calibration tokens, for this model."""

    n_tokens: OptInt = None
    mean_kl: OptNum = None
    """Exact KL(reference ‖ model) on the calibration tokens, nats/token."""
    mean_kl_bound: OptNum = None
    """The cache's bound on the same tokens."""
    mean_abs_error: OptNum = None
    max_abs_error: OptNum = None


@dataclass(frozen=True, kw_only=True)
class ReferenceCacheInfo(Record):
    """``reference_cache``: the cache ``attest --reference-cache`` read instead of the reference."""

    path: OptStr = None
    digest: OptDigest = None
    """SHA-256 of the cache file (what ``lmassay seal`` signs for it)."""
    top_k: OptInt = None
    n_tokens: OptInt = None
    kl: OptStr = None
    """How KL was computed: a lower bound over the top-K tokens plus one tail bucket."""
    mean_tail_mass: OptNum = None
    """The reference's mean probability outside its top-K over the scored tokens."""
    calibration: Annotated[CacheCalibration | None, optional(record(CacheCalibration))] = None
    built: OptStr = None


_DEFAULT_STATISTIC = {Comparison.KL: "mean_kl", Comparison.BPB: "delta_bpb", Comparison.NONE: "bpb"}
STATISTICS = ("mean_kl", "delta_bpb", "bpb")
"""The per-sample statistics a test can be run on."""


@dataclass(frozen=True, kw_only=True)
class Attestation(Record):
    """The whole ``attestation.json``. Fields in the order ``lmassay attest`` writes them."""

    schema: Str
    created: OptStr = None
    verdict: Annotated[Verdict, enum_of(Verdict)]
    flagged: Strs
    comparison: Annotated[Comparison, enum_of(Comparison)]
    summary: Annotated[Summary, record(Summary)]
    categories: Annotated[tuple[CategoryRow, ...], items(record(CategoryRow))]
    warnings: Strs = ()
    kl_direction: OptStr = None
    evidence: Annotated[tuple[Evidence, ...], items(record(Evidence))] = ()
    model: Annotated[ModelInfo | None, optional(record(ModelInfo))] = None
    reference: Annotated[ModelInfo | None, optional(record(ModelInfo))] = None
    baseline: Annotated[BaselineInfo | None, optional(record(BaselineInfo))] = None
    probes: Annotated[ProbesInfo | None, optional(record(ProbesInfo))] = None
    provenance: Annotated[Provenance | None, optional(record(Provenance))] = None
    self_probe: Annotated[SelfProbe | None, optional(record(SelfProbe))] = None
    """``attest --self-probe N``: the second pass on the model's own text; null without it
    (absent in files written before it)."""
    reference_cache: Annotated[ReferenceCacheInfo | None, optional(record(ReferenceCacheInfo))] = (
        None
    )
    """``attest --reference-cache``: the cache read instead of running the reference; absent
    otherwise (and in files written before it)."""

    @classmethod
    def from_json(cls, raw: Any, source: str = "attestation") -> Attestation:
        """Read a parsed ``attestation.json``; ``source`` names it in the one error a bad one raises."""
        if not isinstance(raw, Mapping):
            raise InputError(f"{source} is not a JSON object", _FIX_RERUN)
        schema = raw.get("schema")
        if schema != SCHEMA:
            found = f"schema {schema!r}" if schema is not None else "no 'schema' key"
            raise InputError(
                f"{source} has {found}, expected {SCHEMA!r}",
                "render it with the lmassay version that wrote it, or attest again",
            )
        return from_json(cls, raw, source)

    @classmethod
    def read(cls, path: str | Path) -> Attestation:
        """Read ``path``: a run folder holding ``attestation.json``, or the JSON file itself.

        Only a regular file of at most :data:`~lmassay.bounded_read.DOCUMENT_LIMIT` is read."""
        given = Path(path)
        file = given / ATTESTATION_FILE if given.is_dir() else given
        if not file.exists():
            where = (
                f"{given} holds no {ATTESTATION_FILE}" if given.is_dir() else f"{file} not found"
            )
            raise InputError(
                f"attestation {where}",
                "pass a run folder written by `lmassay attest` or the path of its attestation.json",
            )
        data = read_bytes(file, what="attestation", limit=DOCUMENT_LIMIT, flag=None)
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InputError(f"attestation {file} cannot be read ({err})", _FIX_RERUN) from err
        except json.JSONDecodeError as err:
            raise InputError(
                f"attestation {file} is not valid JSON (line {err.lineno}, column {err.colno}: "
                f"{err.msg})",
                _FIX_RERUN,
            ) from err
        return cls.from_json(raw, f"attestation {file}")

    def write(self, path: str | Path) -> Path:
        """Write the document to the file ``path`` atomically (indented JSON, NaN refused)."""
        return atomic_write_json(path, self.to_json())

    @property
    def statistic(self) -> str:
        """The statistic tested (``mean_kl``, ``delta_bpb`` or ``bpb``), from the comparison if unsaid."""
        stat = self.summary.statistic
        return stat if stat in STATISTICS else _DEFAULT_STATISTIC[self.comparison]

    @property
    def exit_code(self) -> int:
        """0 when nothing is wrong (consistent, or scored alone), 1 when tampered or a different model."""
        return 0 if self.verdict in (Verdict.CONSISTENT, Verdict.SCORED_ONLY) else 1


def as_attestation(att: Attestation | Mapping[str, Any]) -> Attestation:
    """``att`` itself, or the document read from a parsed JSON object."""
    return att if isinstance(att, Attestation) else Attestation.from_json(att)


@cache
def json_schema() -> Mapping[str, Any]:
    """The JSON Schema (draft 2020-12) of ``attestation.json`` shipped with the package."""
    text_ = resources.files("lmassay.attest").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: Mapping[str, Any] = json.loads(text_)
    return loaded
