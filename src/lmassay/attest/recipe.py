"""``lmassay attest``: score a probe corpus with a model and a reference and find the tampering axis.

The recipe reads top to bottom in :func:`attest`: load the probes, load the models, decide the
comparison, score (the only heavy step), analyse per category, collect evidence, write the outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lmassay._atomic import atomic_write_jsonl
from lmassay.attest.answers import answer_drops
from lmassay.attest.baseline import Baseline, load_baseline
from lmassay.attest.conditioned import ScoringTokens, keep_scored, tokenize_samples
from lmassay.attest.config import AttestConfig
from lmassay.attest.document import (
    KL_DIRECTION,
    SCHEMA,
    STATEMENT_FILE,
    Attestation,
    CategoryRow,
    Evidence,
    EvidenceSample,
    EvidenceToken,
    ModelInfo,
    ProbesInfo,
    Provenance,
    ReferenceCacheInfo,
    Summary,
    Verdict,
    from_json,
)
from lmassay.attest.document import Comparison as Compared
from lmassay.attest.evidence import excerpt, rank_samples, token_evidence
from lmassay.attest.model_loading import LoadedModel, same_tokenizer
from lmassay.attest.probes import ProbeSample, ProbeSet, load_probes
from lmassay.attest.reference_cache import CachedScores, score_samples_against_cache
from lmassay.attest.scoring import TokenScores, bits_per_byte
from lmassay.attest.self_probe import choose_prompts, draw_continuations, score_draws
from lmassay.attest.self_probe_outputs import summarise
from lmassay.attest.statistics import Analysis, SampleStatistic, StatsConfig, analyse
from lmassay.attest.statistics.sparse import tail_statistic
from lmassay.attest.streaming import score_models
from lmassay.attest.suites import BUILTIN_PREFIX, DEFAULT_SUITE
from lmassay.attest.weight_relation import weight_relation
from lmassay.errors import InputError
from lmassay.output_folder import OutputFolder
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now

if TYPE_CHECKING:
    from lmassay.scale.ray_scoring import RayPool, WorkerSpec


@dataclass
class AttestationResult:
    """What :func:`attest` produced: the attestation, the per-sample rows and the files written."""

    document: Attestation
    samples: list[dict[str, Any]]
    paths: dict[str, Path] = field(default_factory=dict)

    @cached_property
    def attestation(self) -> dict[str, Any]:
        """The document as its JSON object (made once), for code that still reads the dict."""
        return self.document.to_json()

    @property
    def verdict(self) -> str:
        return self.document.verdict.value

    @property
    def exit_code(self) -> int:
        """0 when nothing is wrong (consistent, or scored alone), 1 when tampered or a different model."""
        return self.document.exit_code


@dataclass
class _Scored:
    """Scores of every probe sample under the model (and the reference or baseline)."""

    comparison: Literal["kl", "bpb", "none"]
    model: list[TokenScores]
    reference: list[TokenScores] | None = None
    baseline_logprobs: list[float] | None = None
    baseline_n_tokens: list[int] | None = None
    cache: CachedScores | None = None
    """``--reference-cache``: the reference's side was read from this cache."""
    tokens: ScoringTokens | None = None
    """The model's token lists (context + scored tokens), for re-scoring evidence."""

    def reference_n_tokens(self, index: int) -> int | None:
        """Tokens of sample ``index`` under the reference's (or baseline's) own tokenizer, for bpb."""
        if self.comparison != "bpb":
            return None
        if self.baseline_n_tokens is not None:
            return self.baseline_n_tokens[index]
        return self.reference[index].n_tokens if self.reference is not None else None


@dataclass(frozen=True)
class GivenModels:
    """Models already loaded (the Python API's objects), used instead of loading
    ``config.model`` / ``config.reference`` (which then only name them); None: load it."""

    model: LoadedModel | None = None
    reference: LoadedModel | None = None


def attest(
    config: AttestConfig,
    progress: Progress | None = None,
    *,
    published_as: tuple[str, str] | None = None,
    probes: ProbeSet | None = None,
    models: GivenModels | None = None,
) -> AttestationResult:
    """Run an attestation and write its outputs to ``config.out`` as one set.

    ``config.out`` is checked (writable, not holding other files, room for the outputs) and locked
    before the models are loaded, and the files appear there together only when all are written:
    see :class:`~lmassay.output_folder.OutputFolder`. See :class:`AttestConfig` for the settings.
    With ``config.out`` None nothing is written and the result's ``paths`` are empty.

    ``published_as=(model, out)``: the model at ``config.model`` and the folder ``config.out`` are
    staged copies (``edit`` and ``repair`` attest their output before putting it in place), and
    the document names the model folder and attestation folder they will be published as.
    ``probes`` (a corpus already read) replaces ``config.probes``; ``models`` the loading.
    """
    progress = progress or NullProgress()
    config.validate()
    if config.ray is not None:  # an address that does not answer fails before anything loads
        from lmassay.scale.ray_scoring import check_reachable

        check_reachable(config.ray)
    started, t0 = utc_now(), time.perf_counter()

    probes = probes or _load_probes(config)
    progress.log(f"probes: {len(probes.samples)} samples in {len(probes.categories)} categories")
    baseline = load_baseline(config.baseline, probes) if config.baseline else None
    if config.out is None:
        return _run(config, probes, baseline, progress, started, t0, models)
    with OutputFolder(
        config.out, owned=OUTPUT_FILES, needs_bytes=_output_size(len(probes.samples))
    ) as out:
        result = _run(config, probes, baseline, progress, started, t0, models)
        if published_as is not None:
            result.document = _published_as(result.document, *published_as)
        progress.log(f"writing {config.out}")
        with out.writing():
            written = write_outputs(out.staging, result, render=config.write_report)
        result.paths = {key: out.final(path) for key, path in written.items()}
        out.commit()
    return result


def _run(
    config: AttestConfig,
    probes: ProbeSet,
    baseline: Baseline | None,
    progress: Progress,
    started: str,
    t0: float,
    models: GivenModels | None = None,
) -> AttestationResult:
    """Load the models, score, analyse and collect the evidence: the attestation, not yet written.

    With ``config.ray`` the scoring runs in shards on Ray workers that load the models themselves
    (:mod:`lmassay.scale.ray_scoring`); this process then loads them without their weights."""
    given = models or GivenModels()
    model, reference = _load_models(config, progress, given)
    progress.log(
        f"model: {model.name} ({model.n_parameters:,} parameters, {model.dtype} on {model.device})"
    )
    _check_self_probe(config, model, reference)
    if config.ray is None:
        return _analyse(config, probes, baseline, progress, started, t0, model, reference, None)
    from lmassay.scale.ray_scoring import ray_pool

    with ray_pool(config.ray, _worker_spec(config, given), config.ray_workers, progress) as pool:
        return _analyse(config, probes, baseline, progress, started, t0, model, reference, pool)


def _analyse(
    config: AttestConfig,
    probes: ProbeSet,
    baseline: Baseline | None,
    progress: Progress,
    started: str,
    t0: float,
    model: LoadedModel,
    reference: LoadedModel | None,
    pool: RayPool | None,
) -> AttestationResult:
    """Score (here, or on the Ray workers of ``pool``), analyse and collect the evidence."""
    scored = _score(probes.samples, model, reference, baseline, config, progress, pool)
    stats_input = _statistics_input(probes.samples, scored, model.tokenizer)
    rows = _sample_rows(probes.samples, scored, stats_input)
    progress.log(
        f"testing {len(probes.categories)} categories ({config.n_bootstrap} bootstrap resamples)"
    )
    analysis = analyse(
        stats_input,
        scored.comparison,
        StatsConfig(
            alpha=config.alpha,
            noise_floor=config.noise_floor,
            spread_multiple=config.spread_multiple,
            different_model_threshold=config.different_model_threshold,
            n_bootstrap=config.n_bootstrap,
            sparse_floor=config.sparse_floor,
            answer_floor=config.answer_floor,
            n_permutations=config.n_permutations,
            seed=config.seed,
            min_samples=config.min_samples,
        ),
        weight_change=_weight_change(model, reference, config, progress),
    )
    evidence = _evidence(analysis, probes.samples, rows, scored, model, reference, config, pool)

    prov = _provenance(config, started, time.perf_counter() - t0, scored)
    document = _document(analysis, evidence, probes, model, reference, baseline, prov)
    document = _with_cache(document, scored.cache)
    divergence = {
        sample.id: stat.token_kl
        for sample, stat in zip(probes.samples, stats_input, strict=True)
        if stat.token_kl is not None
    }
    document = _self_probe_pass(document, config, probes, model, reference, progress, divergence)
    return AttestationResult(document=document, samples=rows)


def _load_models(
    config: AttestConfig, progress: Progress, given: GivenModels
) -> tuple[LoadedModel, LoadedModel | None]:
    """The model under test and the reference (if any): ``given``, or loaded as ``config``
    names them."""
    progress.log(
        f"loading model {config.model}"
        + (f" and reference {config.reference}" if config.reference else "")
    )
    # on Ray the workers score; this process needs the weights only to sample self-probes
    materialise = config.offload == "none" and (config.ray is None or config.self_probe > 0)
    model = given.model or config.load(config.model, materialise=materialise)
    # --revision names a revision of the model under test; the reference's is its own.
    reference_options = replace(config.model_options, revision=config.reference_revision)
    reference = given.reference or (
        reference_options.load(config.reference, materialise=materialise)
        if config.reference
        else None
    )
    return model, reference


def _worker_spec(config: AttestConfig, given: GivenModels) -> WorkerSpec:
    """What each Ray worker loads: the model and the reference as ``config`` names them."""
    from lmassay.scale.ray_scoring import ModelSpec, WorkerSpec

    if given.model is not None or given.reference is not None:
        raise InputError(
            "ray: the workers load the models from their folders or hub ids, and models passed "
            "in memory cannot be sent to them",
            "pass the models as folders or hub ids in the config (no models=), or ray=None",
        )
    roles = [("model", ModelSpec(config.model, config.model_options))]
    if config.reference is not None:
        options = replace(config.model_options, revision=config.reference_revision)
        roles.append(("reference", ModelSpec(config.reference, options)))
    return WorkerSpec(tuple(roles), config.offload)


def _published_as(document: Attestation, model: str, out: str) -> Attestation:
    """``document`` naming the model ``model`` and the run folder ``out`` instead of the staged
    copies it scored and was written to."""
    config_json = {"model": model, "out": out}
    return replace(
        document,
        model=document.model and replace(document.model, name=model, path=model),
        provenance=document.provenance
        and replace(document.provenance, config={**document.provenance.config, **config_json}),
    )


def _weight_change(
    model: LoadedModel, reference: LoadedModel | None, config: AttestConfig, progress: Progress
) -> float | None:
    """The median relative change of the model's tensors against the reference's, when both are
    local safetensors checkpoints of one architecture (see :mod:`lmassay.attest.weight_relation`)."""
    if reference is None or config.different_model_threshold is not None:
        return None  # an explicit threshold asks for the functional call
    if model.folder is None or reference.folder is None:
        return None  # a model passed in memory has no checkpoint files to compare
    relation = weight_relation(str(model.folder), str(reference.folder), progress)
    return relation.median_relative_change if relation is not None else None


def _load_probes(config: AttestConfig) -> ProbeSet:
    return load_probes(
        config.probes or f"{BUILTIN_PREFIX}{DEFAULT_SUITE}",
        text_field=config.text_field,
        category_field=config.category_field,
        id_field=config.id_field,
        split=config.split,
        per_category=config.per_category,
        seed=config.seed,
        min_per_category=config.min_samples,
        max_bytes=config.max_file_bytes,
        default_suite=config.probes is None,
    )


def _provenance(
    config: AttestConfig, started: str, duration: float, scored: _Scored
) -> dict[str, Any]:
    """Tool and library versions, the resolved config, and how long scoring took."""
    ran = scored.reference if scored.cache is None else None  # a reference cache is read, not run
    n_tokens = sum(s.n_tokens for s in scored.model) + sum(s.n_tokens for s in ran or [])
    prov = provenance(_config_json(config), config.seed)
    prov.update(
        started=started,
        finished=utc_now(),
        duration_s=round(duration, 3),
        throughput_tokens_per_s=round(n_tokens / duration, 1) if duration > 0 else None,
    )
    return prov


def _document(
    analysis: Analysis,
    evidence: list[Evidence],
    probes: ProbeSet,
    model: LoadedModel,
    reference: LoadedModel | None,
    baseline: Baseline | None,
    prov: dict[str, Any],
) -> Attestation:
    """The attestation document; its fields in the order attestation.json has always had them."""
    summary, where = analysis.summary_json(), "attestation being written"
    return Attestation(
        schema=SCHEMA,
        created=prov["finished"],
        verdict=Verdict(analysis.verdict),
        flagged=tuple(analysis.flagged),
        comparison=Compared(analysis.comparison),
        summary=from_json(Summary, summary, f"{where}: summary"),
        categories=tuple(
            from_json(CategoryRow, c.to_json(), f"{where}: category {c.name!r}")
            for c in analysis.categories
        ),
        warnings=(*probes.warnings, *analysis.warnings),
        kl_direction=KL_DIRECTION,
        evidence=tuple(evidence),
        model=from_json(ModelInfo, model.describe(), f"{where}: model"),
        reference=from_json(ModelInfo, reference.describe(), f"{where}: reference")
        if reference
        else None,
        baseline=baseline.describe() if baseline else None,
        probes=from_json(ProbesInfo, probes.to_json(), f"{where}: probes"),
        provenance=from_json(Provenance, prov, f"{where}: provenance"),
    )


OUTPUT_FILES = (
    "attestation.json",
    "samples.jsonl",
    "report.html",
    "report.md",
    STATEMENT_FILE,  # attest --sign
    "repair.json",  # repair's OUT/repair folder
)
"""What an attestation folder holds; ``--out`` may replace a folder holding only these."""


def _output_size(n_samples: int) -> int:
    """A generous estimate of the bytes an attestation of ``n_samples`` writes (rows, reports)."""
    return 16 * 2**20 + 2048 * n_samples


def write_outputs(out: Path, result: AttestationResult, *, render: bool = True) -> dict[str, Path]:
    """Write samples.jsonl, attestation.json (and the reports) into ``out``, each atomically.

    :func:`attest` writes them into its staging folder, which then replaces ``--out`` whole.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "samples": atomic_write_jsonl(out / "samples.jsonl", result.samples),
        "attestation": result.document.write(out / "attestation.json"),
    }
    if render:
        from lmassay.report import write_report

        paths.update(write_report(out, result.document))
    return paths


def _config_json(config: AttestConfig) -> dict[str, Any]:
    return asdict(config)


# --------------------------------------------------------------------------------------------
# scoring


def _score(
    samples: Sequence[ProbeSample],
    model: LoadedModel,
    reference: LoadedModel | None,
    baseline: Baseline | None,
    config: AttestConfig,
    progress: Progress,
    pool: RayPool | None = None,
) -> _Scored:
    if config.reference_cache is not None:
        return _score_from_cache(config.reference_cache, samples, model, config, progress)
    if reference is not None and config.comparison != "bpb" and same_tokenizer(model, reference):
        max_length = _paired_max_length(config, model, reference)
        tokens = _tokenize(samples, model, config, progress.task("tokenising", len(samples)))
        token_lists = tokens.token_lists
        total = sum(len(t) for t in token_lists)
        scores = _score_tokens(
            token_lists,
            model,
            reference,
            config,
            pool,
            max_length=max_length,
            progress=progress.task("scoring model + reference (tokens)", total),
        )
        scores = keep_scored(scores, tokens)
        return _Scored("kl", scores, scores, tokens=tokens)
    if reference is not None and config.comparison == "kl":
        raise InputError(
            f"--comparison kl needs one tokenizer, but {model.name!r} and {reference.name!r} have different vocabularies",
            "use --comparison auto (bits per byte) or a reference with the same tokenizer",
        )
    own = _score_alone(samples, model, config, progress, "model", pool)
    if reference is not None:
        theirs = _score_alone(samples, reference, config, progress, "reference", pool)
        return _Scored("bpb", own, theirs)
    if baseline is not None:
        return _Scored(
            "bpb", own, baseline_logprobs=baseline.logprobs, baseline_n_tokens=baseline.n_tokens
        )
    return _Scored("none", own)


def _score_from_cache(
    path: str,
    samples: Sequence[ProbeSample],
    model: LoadedModel,
    config: AttestConfig,
    progress: Progress,
) -> _Scored:
    """``--reference-cache``: only the model runs; the reference's top-K, its log-prob of each
    token and its tail mass come from the cache, and KL is the cache's lower bound (see
    :mod:`lmassay.attest.reference_cache`)."""
    cached = score_samples_against_cache(
        path,
        samples,
        model,
        max_length=config.max_length,
        token_budget=config.token_budget,
        progress=progress,
    )
    return _Scored("kl", cached.scores, cached.scores, cache=cached)


def _with_cache(document: Attestation, cached: CachedScores | None) -> Attestation:
    """``document`` naming the cached reference and the cache (its digest, K, measured error)."""
    if cached is None:
        return document
    where = "attestation being written"
    return replace(
        document,
        reference=from_json(ModelInfo, cached.cache.header.reference, f"{where}: reference"),
        reference_cache=from_json(ReferenceCacheInfo, cached.describe(), f"{where}: cache"),
        warnings=(*document.warnings, cached.note()),
    )


def _paired_max_length(config: AttestConfig, model: LoadedModel, reference: LoadedModel) -> int:
    """The one context window both models share when scored together: the user's or the smaller."""
    return config.max_length or min(model.max_length, reference.max_length)


def _tokenize(
    samples: Sequence[ProbeSample], loaded: LoadedModel, config: AttestConfig, progress: Any
) -> ScoringTokens:
    """``loaded``'s token lists of the samples (conversations: see :mod:`.conditioned`)."""
    return tokenize_samples(
        loaded.tokenizer,
        samples,
        prefix_token_id=loaded.prefix_token_id,
        chat_template=config.chat_template,
        name=repr(loaded.name),
        progress=progress,
    )


def _score_alone(
    samples: Sequence[ProbeSample],
    loaded: LoadedModel,
    config: AttestConfig,
    progress: Progress,
    role: Literal["model", "reference"],
    pool: RayPool | None = None,
) -> list[TokenScores]:
    tokens = _tokenize(
        samples, loaded, config, progress.task(f"tokenising for {role}", len(samples))
    )
    token_lists = tokens.token_lists
    scores = _score_tokens(
        token_lists,
        loaded,
        None,
        config,
        pool,
        role=role,
        max_length=config.max_length or loaded.max_length,
        progress=progress.task(f"scoring {role} (tokens)", sum(len(t) for t in token_lists)),
    )
    return keep_scored(scores, tokens)


def _score_tokens(
    token_lists: Sequence[Sequence[int]],
    model: LoadedModel,
    reference: LoadedModel | None,
    config: AttestConfig,
    pool: RayPool | None,
    *,
    role: Literal["model", "reference"] = "model",
    max_length: int,
    topk: int = 0,
    progress: Any = None,
) -> list[TokenScores]:
    """:func:`~lmassay.attest.streaming.score_models` of ``model`` (the ``role`` it plays) and
    ``reference`` here, or the same in shards on the Ray workers of ``pool``, which hold them."""
    if pool is not None:
        return pool.score(
            token_lists,
            (role, "reference") if reference is not None else (role,),
            prefix_token_id=model.prefix_token_id,
            max_length=max_length,
            token_budget=config.token_budget,
            topk=topk,
            progress=progress,
        )
    return score_models(
        token_lists,
        model,
        reference,
        offload=config.offload,
        prefix_token_id=model.prefix_token_id,
        max_length=max_length,
        token_budget=config.token_budget,
        topk=topk,
        progress=progress,
    )


def _reference_logprob(scored: _Scored, index: int) -> float | None:
    if scored.baseline_logprobs is not None:
        return scored.baseline_logprobs[index]
    if scored.reference is None:
        return None
    ref = scored.reference[index]
    values = ref.logprob_reference if scored.comparison == "kl" else ref.logprob_model
    return float(np.sum(values, dtype=np.float64)) if values is not None else None


def _sample_rows(
    samples: Sequence[ProbeSample], scored: _Scored, stats: Sequence[SampleStatistic]
) -> list[dict[str, Any]]:
    """One ``samples.jsonl`` row per sample, from its scores and its summed log-probs in ``stats``."""
    rows = []
    for sample, own, stat in zip(samples, scored.model, stats, strict=True):
        logprob_model, logprob_reference = stat.logprob_model, stat.logprob_reference
        n_bytes = sample.n_bytes
        kl = own.kl if scored.comparison == "kl" else None
        agree = own.top1_agree if scored.comparison == "kl" else None
        row: dict[str, Any] = {
            "id": sample.id,
            "category": sample.category,
            "n_tokens": own.n_tokens,
            "n_bytes": n_bytes,
            "logprob_model": logprob_model,
            "logprob_reference": logprob_reference,
            "bpb_model": bits_per_byte(logprob_model, n_bytes),
            "bpb_reference": bits_per_byte(logprob_reference, n_bytes)
            if logprob_reference is not None
            else None,
            "mean_kl": float(np.mean(kl, dtype=np.float64)) if kl is not None else None,
            "max_kl": float(np.max(kl)) if kl is not None else None,
            "tail_kl": tail_statistic(kl) if kl is not None else None,
            "answer_drop": stat.answer_drop,
            "top1_agreement": float(np.mean(agree)) if agree is not None else None,
            "n_windows": own.n_windows,
        }
        if scored.comparison == "bpb":
            row["n_tokens_reference"] = stat.n_tokens_reference
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
        rows.append(row)
    return rows


def _statistics_input(
    samples: Sequence[ProbeSample], scored: _Scored, tokenizer: Any
) -> list[SampleStatistic]:
    drops: list[float | None] = [None] * len(samples)
    if scored.comparison == "kl" and scored.reference is not None:
        drops = answer_drops(
            tokenizer,
            samples,
            [own.token_ids for own in scored.model],
            [own.logprob_model for own in scored.model],
            [ref.logprob_reference for ref in scored.reference],
        )
    out = []
    for index, (sample, own) in enumerate(zip(samples, scored.model, strict=True)):
        out.append(
            SampleStatistic(
                category=sample.category,
                n_tokens=own.n_tokens,
                n_bytes=sample.n_bytes,
                logprob_model=float(np.sum(own.logprob_model, dtype=np.float64)),
                logprob_reference=_reference_logprob(scored, index),
                token_kl=own.kl if scored.comparison == "kl" else None,
                token_top1_agree=own.top1_agree if scored.comparison == "kl" else None,
                n_tokens_reference=scored.reference_n_tokens(index),
                answer_drop=drops[index],
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# evidence


def _evidence_categories(analysis: Analysis) -> list[str]:
    if analysis.flagged:
        return list(analysis.flagged)
    tested = [c for c in analysis.categories if c.level is not None]
    if not tested or analysis.comparison == "none":
        return []
    return [max(tested, key=lambda c: (c.level, c.name)).name]


_RANKED_BY = {
    ("sparse",): "tail_kl",
    ("answer",): "answer_drop",
    ("sparse", "answer"): "tail_kl",
}
"""The samples.jsonl field a flagged category's evidence is ranked by, by its reasons; a
category flagged by the mean test shows the samples of largest mean KL."""


def _evidence(
    analysis: Analysis,
    samples: Sequence[ProbeSample],
    rows: Sequence[dict[str, Any]],
    scored: _Scored,
    model: LoadedModel,
    reference: LoadedModel | None,
    config: AttestConfig,
    pool: RayPool | None = None,
) -> list[Evidence]:
    if config.evidence_samples == 0:
        return []
    out = []
    reasons = {c.name: c.reasons for c in analysis.categories}
    for category in _evidence_categories(analysis):
        members = [i for i, s in enumerate(samples) if s.category == category]
        # a category flagged for a few samples (or answers) shows those, not its average ones
        ranked_by = _RANKED_BY.get(reasons.get(category, ()), "mean_kl")
        if scored.comparison == "kl" and (reference is not None or scored.cache is not None):
            entries = _kl_evidence(members, rows, scored, model, reference, config, ranked_by, pool)
        else:
            entries = _bpb_evidence(members, samples, rows, config)
        out.append(
            Evidence(
                category=category,
                reasons=reasons.get(category, ()),
                ranked_by=ranked_by if scored.comparison == "kl" else "delta_bpb",
                samples=tuple(entries),
            )
        )
    return out


def _kl_evidence(
    members: list[int],
    rows: Sequence[dict[str, Any]],
    scored: _Scored,
    model: LoadedModel,
    reference: LoadedModel | None,
    config: AttestConfig,
    ranked_by: str = "mean_kl",
    pool: RayPool | None = None,
) -> list[EvidenceSample]:
    """The samples of largest ``ranked_by`` (a samples.jsonl field: ``mean_kl``, or ``tail_kl``
    for the outliers of the sparse test), each with its largest-KL tokens (re-scored with top-k)."""
    values = [r[ranked_by] if r[ranked_by] is not None else -math.inf for r in rows]
    chosen = rank_samples(members, values, config.evidence_samples)
    rescored = _rescore_with_topk(chosen, scored, model, reference, config, pool)
    return [
        EvidenceSample.for_kl(
            id=rows[i]["id"],
            mean_kl=rows[i]["mean_kl"],
            max_kl=rows[i]["max_kl"],
            n_tokens=rows[i]["n_tokens"],
            tokens=tuple(
                from_json(EvidenceToken, token, f"evidence token of sample {rows[i]['id']!r}")
                for token in token_evidence(
                    s, model.tokenizer, config.evidence_tokens, config.context_tokens
                )
            ),
        )
        for i, s in zip(chosen, rescored, strict=True)
    ]


def _bpb_evidence(
    members: list[int],
    samples: Sequence[ProbeSample],
    rows: Sequence[dict[str, Any]],
    config: AttestConfig,
) -> list[EvidenceSample]:
    """The samples of largest Δ bits per byte, with an excerpt of their text."""
    deltas = [
        r["bpb_model"] - r["bpb_reference"] if r["bpb_reference"] is not None else -math.inf
        for r in rows
    ]
    chosen = rank_samples(members, deltas, config.evidence_samples)
    return [
        EvidenceSample.for_bpb(
            id=rows[i]["id"],
            delta_bpb=deltas[i],
            bpb_model=rows[i]["bpb_model"],
            bpb_reference=rows[i]["bpb_reference"],
            n_tokens=rows[i]["n_tokens"],
            excerpt=excerpt(samples[i].text),
        )
        for i in chosen
    ]


def _rescore_with_topk(
    chosen: Sequence[int],
    scored: _Scored,
    model: LoadedModel,
    reference: LoadedModel | None,
    config: AttestConfig,
    pool: RayPool | None = None,
) -> list[TokenScores]:
    if scored.cache is not None:
        return scored.cache.rescore(chosen, model, topk=5)
    if reference is None:
        raise ValueError("a KL comparison has neither a reference nor a reference cache")
    tokens = (
        scored.tokens.subset(chosen)
        if scored.tokens is not None
        else ScoringTokens(
            [scored.model[i].token_ids.tolist() for i in chosen],
            [scored.model[i].n_tokens for i in chosen],
        )
    )
    scores = _score_tokens(
        tokens.token_lists,
        model,
        reference,
        config,
        pool,
        max_length=_paired_max_length(config, model, reference),
        topk=5,
    )
    return keep_scored(scores, tokens)


# --------------------------------------------------------------------------------------------
# the self-probing pass (--self-probe N): KL(model ‖ reference) on text the model writes


def _check_self_probe(
    config: AttestConfig, model: LoadedModel, reference: LoadedModel | None
) -> None:
    """Before the first pass: refuse a self-probing pass that could not run, and say why."""
    if config.self_probe == 0 or reference is None:
        return
    if not same_tokenizer(model, reference):
        raise InputError(
            f"--self-probe scores the model's text token by token, but {model.name!r} and "
            f"{reference.name!r} have different vocabularies",
            "drop --self-probe, or use a reference with the same tokenizer",
        )
    config.self_probe_settings.check_fits(model, _paired_max_length(config, model, reference))


def _self_probe_pass(
    document: Attestation,
    config: AttestConfig,
    probes: ProbeSet,
    model: LoadedModel,
    reference: LoadedModel | None,
    progress: Progress,
    divergence: Mapping[str, np.ndarray],
) -> Attestation:
    """``document`` with its ``self_probe`` record: ``config.self_probe`` continuations per
    category sampled from the model under test, scored by both models (continuation tokens
    only); half of a category's prompts stop where the first pass's per-token KL
    (``divergence``) peaks. The verdict and flags stay the first pass's."""
    if config.self_probe == 0 or reference is None:
        return document
    t0 = time.perf_counter()
    settings = config.self_probe_settings
    prompts = choose_prompts(probes, settings.n_per_category, settings.seed, divergence)
    progress.log(
        f"self-probing: {len(prompts)} continuations of {settings.new_tokens} tokens from the model"
    )
    draws = draw_continuations(
        model, prompts, settings, progress=progress.task("sampling self-probes", len(prompts))
    )
    scores = score_draws(
        draws,
        model,
        reference,
        max_length=_paired_max_length(config, model, reference),
        token_budget=config.token_budget,
        progress=progress.task(
            "scoring self-probes (tokens)",
            sum(len(d.prompt_ids) + len(d.continuation_ids) for d in draws),
        ),
    )
    record = summarise(draws, scores, settings, duration_s=time.perf_counter() - t0)
    return replace(document, self_probe=record)
