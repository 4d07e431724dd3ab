"""A compact reference cache: the reference's top-K per scored token, so a suspect is scored alone.

Attesting many fine-tunes of one base re-runs the base every time.  ``lmassay reference build``
scores the probe corpus with the reference once and keeps, per scored token (the scoring contract
of :mod:`lmassay.attest.scoring`: same windows, same prefix token, float32 log-softmax over the full
output width):

* the ids and log-probabilities of the reference's ``K`` most likely tokens (largest first);
* its log-probability of the actual token;
* the tail mass ``T_r = Σ_{v ∉ top-K} p_r(v)`` (summed over the complement, not ``1 − Σ top-K``).

``lmassay attest --reference-cache`` then runs only the model under test and computes, per token,

    KL_K(r ‖ m) = Σ_{v ∈ top-K} p_r(v) (log p_r(v) − log p_m(v)) + T_r (log T_r − log T_m)

with ``T_m`` the model's mass outside the reference's top-K: the KL of the two distributions
coarsened to ``K + 1`` outcomes (the top-K tokens and one tail bucket).  By the log-sum inequality
``KL_K ≤ KL``: the cache gives a lower bound, and the part it misses is ``T_r · KL(r|tail ‖ m|tail)``,
the divergence *inside* the tail.  The top-1 agreement uses the reference's top-1 (the first id)
and the log-likelihoods are exact (the actual token's log-prob is stored).

**Calibration rows** make the bound's error measurable on every attestation: the cache also holds
the reference's full log-probability vector for a few scored tokens (``--calibration-tokens``, at
most one per 1,000 scored tokens, chosen with a fixed seed).  At attest time the exact KL is computed on those tokens and the
attestation records the bound's mean error there (``reference_cache.calibration``).

File (``.lmref``): a safetensors file, so no pickle and a header any safetensors reader can parse.
``__metadata__["lmassay"]`` holds the JSON header (:class:`CacheHeader`): the format, ``K``, the
reference (with its content digest), the tokenizer (vocabulary digest and prefix token), the probe
corpus (digest and a digest of the selected samples), a digest of the token ids scored, the
scoring contract (context length, windowing) and provenance.  Tensors, ``N`` scored tokens, ``S``
samples: ``sample_offsets (S+1,) int64``, ``token_logprob (N,) float32``, ``tail_mass (N,)
float32``, ``topk_ids (N, K) uint16`` (``int32`` for vocabularies over 65,536),
``topk_logprobs (N, K) float16``, ``calibration_rows (C,) int64``, ``calibration_logprobs (C, V)
float16``.  The file is written row block by row block into a temporary file at the rows' offsets
(batches arrive in length order, not sample order) and renamed into place
(:func:`lmassay._atomic.atomic_file`); reading maps it and copies only a batch's rows.

``lmassay seal FILE`` signs it like any file and ``lmassay verify`` re-hashes it; its SHA-256 (the
manifest's file digest) is the ``reference_cache.digest`` an attestation records.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np

from lmassay._atomic import atomic_file
from lmassay.attest.model_loading import LoadedModel, ModelOptions
from lmassay.attest.probes import ProbeSample, ProbeSet, load_probes
from lmassay.attest.reduction import _CHUNK_ELEMENTS, RowLogits, output_width, row_logits
from lmassay.attest.scoring import (
    TokenScores,
    empty_results,
    fused_activations,
    store_batch,
    tokenize_texts,
)
from lmassay.attest.windows import (
    Window,
    batch_inputs,
    check_token_lists,
    make_windows,
    plan_batches,
    resolve_token_budget,
)
from lmassay.bounded_read import FileSizeLimit
from lmassay.digests import Digest, digest_bytes, digest_file
from lmassay.errors import InputError, require
from lmassay.progress import NullProgress, Progress, ProgressFn
from lmassay.provenance import provenance, utc_now
from lmassay.scale.options import ray_checks

if TYPE_CHECKING:
    import torch

    from lmassay.scale.ray_scoring import RayPool

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_TOP_K",
    "CacheHeader",
    "CachedScores",
    "ReferenceBuildConfig",
    "ReferenceCache",
    "bounded_kl",
    "build_reference_cache",
    "open_reference_cache",
    "samples_digest",
    "score_against_cache",
    "score_samples_against_cache",
    "tail_mass",
    "tokens_digest",
    "vocabulary_digest",
]

CACHE_FORMAT = "lmassay.reference-cache/v1"
DEFAULT_TOP_K = 64
DEFAULT_CALIBRATION_TOKENS = 128
CALIBRATION_EVERY = 1000
"""At most one calibration token per this many scored tokens."""
WINDOWING = "disjoint rolling windows (lm-evaluation-harness loglikelihood_rolling), prefix token"
LOGITS = "float32 log_softmax over the full output width"
_HEADER_KEY = "lmassay"
_EXACT_TAIL_BELOW = 1e-2
"""Below this model tail mass ``1 − Σ top-K`` loses digits; it is summed over the complement."""
_REBUILD = (
    "build the cache again with `lmassay reference build` for this reference and these probes"
)
_DAMAGED = "build it again with `lmassay reference build`, or check the file was copied whole"


# --------------------------------------------------------------------------------------------
# what a cache binds


def vocabulary_digest(tokenizer: Any) -> Digest:
    """SHA-256 of the tokenizer's vocabulary (token → id, sorted by id): what makes ids mean the
    same thing. Two tokenizers with equal vocabularies (and prefix token) share a cache, as they
    share a paired KL comparison (:func:`lmassay.attest.model_loading.same_tokenizer`)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return digest_bytes(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))


def samples_digest(samples: Sequence[ProbeSample]) -> Digest:
    """SHA-256 of the selected samples (id, category, text), in the order they are scored."""
    hasher = hashlib.sha256()
    for sample in samples:
        hasher.update(json.dumps(sample.to_json(), ensure_ascii=False, sort_keys=True).encode())
        hasher.update(b"\n")
    return Digest("sha256", hasher.hexdigest())


def tokens_digest(token_lists: Sequence[Sequence[int]]) -> Digest:
    """SHA-256 of the token ids scored: each text's length, then its ids (int64 little-endian)."""
    hasher = hashlib.sha256()
    for tokens in token_lists:
        hasher.update(struct.pack("<q", len(tokens)))
        hasher.update(np.asarray(tokens, dtype="<i8").tobytes())
    return Digest("sha256", hasher.hexdigest())


@dataclass(frozen=True)
class CacheHeader:
    """The JSON header of a cache: what it was built from and how (see the module docstring)."""

    top_k: int
    vocab_size: int
    n_samples: int
    n_tokens: int
    reference: dict[str, Any]
    tokenizer: dict[str, Any]
    probes: dict[str, Any]
    tokens: dict[str, Any]
    contract: dict[str, Any]
    calibration: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = CACHE_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "top_k": self.top_k,
            "vocab_size": self.vocab_size,
            "n_samples": self.n_samples,
            "n_tokens": self.n_tokens,
            "reference": self.reference,
            "tokenizer": self.tokenizer,
            "probes": self.probes,
            "tokens": self.tokens,
            "contract": self.contract,
            "calibration": self.calibration,
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, raw: Any, source: str) -> CacheHeader:
        """Read a header; one :class:`InputError` naming the file for anything malformed."""
        if not isinstance(raw, dict):
            raise InputError(f"{source} has a header that is not a JSON object", _DAMAGED)
        if raw.get("format") != CACHE_FORMAT:
            raise InputError(
                f"{source} has format {raw.get('format')!r}, expected {CACHE_FORMAT!r}",
                "pass a cache written by `lmassay reference build` of this version",
            )
        ints = ("top_k", "vocab_size", "n_samples", "n_tokens")
        dicts = ("reference", "tokenizer", "probes", "tokens", "contract", "calibration")
        bad = [k for k in ints if not isinstance(raw.get(k), int) or raw[k] < 0]
        bad += [k for k in dicts if not isinstance(raw.get(k), dict)]
        if bad or raw["top_k"] < 1:
            raise InputError(
                f"{source} has a malformed header ({', '.join(bad) or 'top_k'})", _DAMAGED
            )
        return cls(
            **{k: raw[k] for k in ints + dicts},
            provenance=raw.get("provenance") or {},
        )


# --------------------------------------------------------------------------------------------
# the bounded KL: one function for build (tail mass), attest and the tests


def tail_mass(lp: torch.Tensor, ids: torch.Tensor, lp_at_ids: torch.Tensor) -> torch.Tensor:
    """``Σ_{v ∉ ids} exp(lp[v])`` per row, float64 ``(C,)``, from a log-softmax ``lp (C, V)``.

    ``1 − Σ exp(lp_at_ids)`` (in float64) where that keeps its digits; rows whose tail is below
    1 % are summed over the complement exactly (the float32 log-softmax is normalised to about
    1e-6, which would be a large relative error of a small tail).
    """
    import torch

    tail = 1.0 - lp_at_ids.double().exp().sum(dim=-1)  # (C,)
    low = torch.nonzero(tail < _EXACT_TAIL_BELOW).squeeze(-1)
    if low.numel():
        p = lp[low].exp()  # (c, V)
        p.scatter_(1, ids[low], 0.0)
        tail[low] = p.double().sum(dim=-1)
    return tail.clamp_min(0.0)


def bounded_kl(
    lp_ref_topk: torch.Tensor,
    lp_model_topk: torch.Tensor,
    tail_ref: torch.Tensor,
    tail_model: torch.Tensor,
) -> torch.Tensor:
    """``KL_K(r ‖ m)`` per row (float32 ``(C,)``, nats): the KL over the reference's top-K tokens
    plus one tail bucket, a lower bound of the full KL (see the module docstring).

    ``lp_*_topk (C, K)``: both models' log-probs of the reference's top-K ids; ``tail_* (C,)``:
    each model's mass outside them.  ``0 · log 0 = 0``; a tail the model gives no mass is
    bounded by float64's smallest normal number rather than made infinite.

    The reference's ``K + 1`` probabilities are renormalised to sum to 1 first: the cache keeps
    its log-probs in float16, and an unnormalised distribution would turn their rounding
    (~5e-4 relative) into a first-order error of the KL (1.8e-5 nats/token for identical models
    on the demo world); a normalised one makes it second order.
    """
    import torch

    lr, lm = lp_ref_topk.double(), lp_model_topk.double()
    t_r = tail_ref.double()
    total = lr.exp().sum(dim=-1) + t_r  # (C,) 1 up to the float16 rounding of lr
    lr, t_r = lr - total.log()[:, None], t_r / total
    p_r = lr.exp()  # (C, K)
    terms = torch.where(p_r > 0, p_r * (lr - lm), torch.zeros_like(p_r))  # (C, K)
    t_m = tail_model.double().clamp_min(torch.finfo(torch.float64).tiny)
    tail = torch.where(t_r > 0, t_r * (t_r.log() - t_m.log()), torch.zeros_like(t_r))  # (C,)
    return (terms.sum(dim=-1) + tail).clamp_min(0.0).float()


def full_kl(lp_ref: torch.Tensor, lp_model: torch.Tensor) -> torch.Tensor:
    """The exact ``KL(r ‖ m)`` per row from two full log-softmaxes ``(C, V)`` (float32 ``(C,)``);
    ``lp_ref`` is renormalised first (the cache keeps it in float16; see :func:`bounded_kl`)."""
    import torch

    lr, lm = lp_ref.double(), lp_model.double()
    lr = lr - torch.logsumexp(lr, dim=-1, keepdim=True)
    p_r = lr.exp()  # (C, V)
    terms = torch.where(p_r > 0, p_r * (lr - lm), torch.zeros_like(p_r))
    return terms.sum(dim=-1).clamp_min(0.0).float()


def _chunks(n_rows: int, width: int, device: str) -> Iterator[tuple[int, int]]:
    """Row ranges of about ``_CHUNK_ELEMENTS`` logits, as :func:`reduce_rows` takes them."""
    elements = _CHUNK_ELEMENTS.get(device, _CHUNK_ELEMENTS["cpu"])
    chunk = max(1, min(n_rows, elements // width))
    for start in range(0, n_rows, chunk):
        yield start, min(n_rows, start + chunk)


# --------------------------------------------------------------------------------------------
# building a cache


@dataclass(frozen=True)
class ReferenceBuildConfig(ModelOptions, FileSizeLimit):
    """What ``lmassay reference build`` is asked to do; :meth:`validate` names the offending flag."""

    reference: str
    """The known-good reference model: a local folder or a hub id."""
    out: str
    """The cache file to write (``.lmref``)."""
    probes: str | None = None
    """The probe corpus the cache is built for (the suspect is attested on the same); None: the
    shipped offline suite, as ``attest`` without ``--probes``."""
    top_k: int = DEFAULT_TOP_K
    """Reference tokens kept per scored token (the rest is one tail bucket)."""
    calibration_tokens: int = DEFAULT_CALIBRATION_TOKENS
    """Scored tokens whose full reference distribution is kept, to measure the bound's error."""
    text_field: str = "text"
    category_field: str = "category"
    id_field: str = "id"
    split: str | None = None
    per_category: int | None = None
    seed: int = 0
    max_length: int | None = None
    token_budget: int | None = None
    ray: str | None = None
    """Score on Ray: ``local`` or a cluster's address (as ``AttestConfig.ray``)."""
    ray_workers: int | None = None
    """Ray workers (actors); None: one per GPU of the cluster, else one per CPU."""

    def validate(self) -> None:
        super().validate()
        require(
            [
                *ray_checks(self.ray, self.ray_workers),
                (self.top_k >= 1, f"--top-k {self.top_k} is below 1", "use e.g. 64"),
                (
                    self.calibration_tokens >= 0,
                    f"--calibration-tokens {self.calibration_tokens} is negative",
                    "use 0 (none) or e.g. 128",
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
                (
                    self.per_category is None or self.per_category >= 1,
                    f"--per-category {self.per_category} is below 1",
                    "use 1 or more",
                ),
            ]
        )
        self.check_file_size_limit()
        out = Path(self.out)
        if out.is_dir():
            raise InputError(f"--out {self.out!r} is a folder", "pass the path of a file to write")


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_reference_cache` wrote."""

    path: Path
    digest: Digest
    header: CacheHeader
    n_bytes: int
    seconds: float

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(1, self.header.n_tokens)


def load_cache_probes(config: ReferenceBuildConfig) -> ProbeSet:
    """The probe corpus as attest reads it (the same fields, selection, seed and default)."""
    from lmassay.attest.suites import BUILTIN_PREFIX, DEFAULT_SUITE

    return load_probes(
        config.probes or f"{BUILTIN_PREFIX}{DEFAULT_SUITE}",
        text_field=config.text_field,
        category_field=config.category_field,
        id_field=config.id_field,
        split=config.split,
        per_category=config.per_category,
        seed=config.seed,
        max_bytes=config.max_file_bytes,
        default_suite=config.probes is None,
    )


def build_reference_cache(
    config: ReferenceBuildConfig, progress: Progress | None = None
) -> BuildResult:
    """Score ``config.probes`` with the reference and write the cache to ``config.out``.

    Rows are reduced batch by batch and written at their offsets, so memory does not grow with the
    corpus; the file appears at ``config.out`` only when complete.
    """
    progress = progress or NullProgress()
    config.validate()
    t0 = time.perf_counter()
    probes = load_cache_probes(config)
    progress.log(f"probes: {len(probes.samples)} samples in {len(probes.categories)} categories")
    _refuse_conversations(probes.samples, "--probes:")
    progress.log(f"loading reference {config.reference}")
    # on Ray the workers score and this process reads no weights (see lmassay.scale.ray_scoring)
    reference = config.load(config.reference, materialise=config.ray is None)
    width = output_width(reference.model)
    if config.top_k > width:
        raise InputError(
            f"--top-k {config.top_k} exceeds the reference's {width} output tokens",
            f"use --top-k {width} or less",
        )
    texts = [s.text for s in probes.samples]
    token_lists = tokenize_texts(
        reference.tokenizer, texts, progress.task("tokenising", len(texts))
    )
    check_token_lists(token_lists)
    max_length = config.max_length or reference.max_length
    n_tokens = sum(len(t) for t in token_lists)
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)  # (S+1,)
    offsets[1:] = np.cumsum([len(t) for t in token_lists])
    calibration = _calibration_rows(n_tokens, config.calibration_tokens, config.seed)
    header = CacheHeader(
        top_k=config.top_k,
        vocab_size=width,
        n_samples=len(token_lists),
        n_tokens=n_tokens,
        reference=reference.describe(),
        tokenizer={
            "vocabulary_digest": vocabulary_digest(reference.tokenizer).to_json(),
            "tokenizer_digest": reference.tokenizer_digest.to_json(),
            "prefix_token_id": reference.prefix_token_id,
        },
        probes={**probes.to_json(), "samples_digest": samples_digest(probes.samples).to_json()},
        tokens={"digest": tokens_digest(token_lists).to_json(), "n_tokens": n_tokens},
        contract={
            "max_length": max_length,
            "prefix_token_id": reference.prefix_token_id,
            "windowing": WINDOWING,
            "add_special_tokens": False,
            "logits": LOGITS,
        },
        calibration={"n_tokens": int(calibration.shape[0]), "seed": config.seed},
        provenance={**provenance(_config_json(config), config.seed), "created": utc_now()},
    )
    ids_dtype = "U16" if width <= 1 << 16 else "I32"
    layout = _Layout(
        {
            "sample_offsets": ("I64", (len(offsets),)),
            "token_logprob": ("F32", (n_tokens,)),
            "tail_mass": ("F32", (n_tokens,)),
            "topk_ids": (ids_dtype, (n_tokens, config.top_k)),
            "topk_logprobs": ("F16", (n_tokens, config.top_k)),
            "calibration_rows": ("I64", (int(calibration.shape[0]),)),
            "calibration_logprobs": ("F16", (int(calibration.shape[0]), width)),
        },
        {_HEADER_KEY: json.dumps(header.to_json(), ensure_ascii=False, allow_nan=False)},
    )
    out = Path(config.out)
    progress.log(f"writing {out} (top-{config.top_k}, {layout.n_bytes / 2**20:.1f} MiB)")
    with _reference_pool(config, progress) as pool, atomic_file(out) as handle:
        layout.start(handle)
        layout.write_rows(handle, "sample_offsets", 0, offsets)
        layout.write_rows(handle, "calibration_rows", 0, calibration)
        batches = _reference_batches(
            pool,
            token_lists,
            reference,
            offsets=offsets,
            calibration=calibration,
            top_k=config.top_k,
            ids_dtype=ids_dtype,
            max_length=max_length,
            token_budget=config.token_budget,
        )
        _write_batches(
            batches, layout, handle, progress.task("scoring reference (tokens)", n_tokens)
        )
    return BuildResult(
        path=out,
        digest=digest_file(out),
        header=header,
        n_bytes=out.stat().st_size,
        seconds=time.perf_counter() - t0,
    )


def _reference_pool(
    config: ReferenceBuildConfig, progress: Progress
) -> ContextManager[RayPool | None]:
    """``--ray``: Ray workers holding the reference (see :mod:`lmassay.scale.ray_scoring`);
    else None (this process scores)."""
    if config.ray is None:
        return nullcontext(None)
    from lmassay.scale.ray_scoring import ModelSpec, WorkerSpec, ray_pool

    spec = WorkerSpec((("reference", ModelSpec(config.reference, config.model_options)),))
    return ray_pool(config.ray, spec, config.ray_workers, progress)


def _reference_batches(
    pool: RayPool | None,
    token_lists: Sequence[Sequence[int]],
    reference: LoadedModel,
    **settings: Any,
) -> Iterable[BatchRows]:
    """:func:`reference_batches` here, or the same in shards on the Ray workers of ``pool``."""
    if pool is None:
        return reference_batches(token_lists, reference, **settings)
    return pool.reference_batches(token_lists, reference.prefix_token_id, **settings)


def _config_json(config: ReferenceBuildConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)


def _calibration_rows(n_tokens: int, wanted: int, seed: int) -> np.ndarray:
    """Sorted flat indices of the calibration tokens, drawn without replacement with ``seed``:
    ``wanted``, but at most one per 1,000 scored tokens (and at least one), so that their full
    distributions add at most 0.1 % of llama.cpp's 2 bytes × vocabulary per token."""
    count = min(wanted, max(1, n_tokens // CALIBRATION_EVERY)) if wanted else 0
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_tokens, size=count, replace=False)).astype(np.int64)


def _window_rows(batch: Sequence[Window], offsets: np.ndarray) -> np.ndarray:
    """Flat cache row of every scored position of a batch, in the batch's row order ``(N,)``."""
    return np.concatenate(
        [offsets[w.sample] + w.offset + np.arange(w.n_scored, dtype=np.int64) for w in batch]
    )


@dataclass(frozen=True)
class BatchRows:
    """One batch of the reference's cache rows, ready to write: where they go and what they are."""

    flat: np.ndarray  # (N,) int64 cache row of each scored position
    rows: dict[str, np.ndarray]
    """``token_logprob`` (N,), ``tail_mass`` (N,), ``topk_ids`` (N, K), ``topk_logprobs`` (N, K)."""
    calibration: list[tuple[int, np.ndarray]]
    """``(index in calibration_rows, full log-probabilities (1, V) float16)`` of the batch's
    calibration tokens."""
    n_rows: int


def reference_batches(
    token_lists: Sequence[Sequence[int]],
    reference: LoadedModel,
    *,
    offsets: np.ndarray,
    calibration: np.ndarray,
    top_k: int,
    ids_dtype: str,
    max_length: int,
    token_budget: int | None,
) -> Iterator[BatchRows]:
    """The reference's cache rows, batch by batch (batches in the scoring engine's order).

    ``offsets[i]`` is the cache row of text ``i``'s first token (``token_lists`` may be a part of
    the corpus: a Ray shard); ``calibration`` the sorted cache rows whose full distribution is
    kept; ``ids_dtype`` the file's ``topk_ids`` type (``U16`` or ``I32``).
    """
    import torch

    model = reference.model
    width = output_width(model)
    device = next(model.parameters()).device.type
    budget = resolve_token_budget(token_budget, [width], max_length, device)
    windows = make_windows(token_lists, reference.prefix_token_id, max_length)
    calibration_index = {int(row): i for i, row in enumerate(calibration)}
    ids_np = np.uint16 if ids_dtype == "U16" else np.int32
    buffer: torch.Tensor | None = None
    with torch.inference_mode(), fused_activations([model]):
        for batch in plan_batches(windows, budget):
            inputs = batch_inputs(batch)
            flat = _window_rows(batch, offsets)  # (N,)
            source = row_logits(model, inputs)
            parts: dict[str, list[np.ndarray]] = {}
            full_rows: list[tuple[int, np.ndarray]] = []
            for start, stop in _chunks(inputs.n_rows, width, device):
                z = source(start, stop)  # (C, V)
                if (
                    buffer is None
                    or buffer.shape[0] < stop - start  # a later batch can have more rows
                    or buffer.shape[1] != z.shape[1]
                    or buffer.device != z.device
                ):
                    buffer = torch.empty((stop - start, z.shape[1]), device=z.device)
                lp = torch.log_softmax(z, dim=-1, out=buffer[: stop - start])  # (C, V)
                values, ids = lp.topk(top_k, dim=-1)  # (C, K)
                target = inputs.targets[start:stop].to(lp.device)[:, None]
                rows = {
                    "token_logprob": lp.gather(-1, target).squeeze(-1).cpu().numpy(),
                    "tail_mass": tail_mass(lp, ids, values).float().cpu().numpy(),
                    "topk_ids": ids.cpu().numpy().astype(ids_np),
                    "topk_logprobs": values.cpu().numpy().astype(np.float16),
                }
                for name, value in rows.items():
                    parts.setdefault(name, []).append(value)
                chunk_rows = flat[start:stop]
                for row in np.flatnonzero(np.isin(chunk_rows, calibration)).tolist():
                    full = lp[row].cpu().numpy().astype(np.float16)[None, :]  # (1, V)
                    full_rows.append((calibration_index[int(chunk_rows[row])], full))
            yield BatchRows(
                flat=flat,
                rows={name: np.concatenate(values) for name, values in parts.items()},
                calibration=full_rows,
                n_rows=inputs.n_rows,
            )


def _write_batches(
    batches: Iterable[BatchRows],
    layout: _Layout,
    handle: BinaryIO,
    progress: ProgressFn,
) -> None:
    """Write each batch's rows at their offsets (batches come in any order)."""
    done = 0
    for batch in batches:
        for name, value in batch.rows.items():
            layout.write_scattered(handle, name, batch.flat, value)
        for at, full in batch.calibration:
            layout.write_rows(handle, "calibration_logprobs", at, full)
        done += batch.n_rows
        progress(done, layout.n_tokens)


class _Layout:
    """A safetensors file laid out before its data exists: header, then each tensor's bytes.

    Rows are written at their byte offsets (``pwrite``), so a tensor can be filled in any order.
    """

    _BYTES: ClassVar[dict[str, int]] = {"I64": 8, "F32": 4, "F16": 2, "U16": 2, "I32": 4}

    def __init__(
        self, tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict[str, str]
    ) -> None:
        self.tensors = tensors
        entries: dict[str, Any] = {"__metadata__": metadata}
        self.offsets: dict[str, int] = {}
        position = 0
        for name, (dtype, shape) in tensors.items():
            size = self._BYTES[dtype] * math.prod(shape)
            entries[name] = {
                "dtype": dtype,
                "shape": list(shape),
                "data_offsets": [position, position + size],
            }
            self.offsets[name] = position
            position += size
        header = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned
        self.prefix = struct.pack("<Q", len(header)) + header
        self.n_bytes = len(self.prefix) + position
        self.n_tokens = tensors["token_logprob"][1][0]

    def dtype(self, name: str) -> str:
        return self.tensors[name][0]

    def start(self, handle: BinaryIO) -> None:
        handle.write(self.prefix)
        handle.truncate(self.n_bytes)

    def _row_bytes(self, name: str) -> int:
        dtype, shape = self.tensors[name]
        return self._BYTES[dtype] * math.prod(shape[1:])

    def write_rows(self, handle: BinaryIO, name: str, first: int, rows: np.ndarray) -> None:
        """Write consecutive rows ``first …`` of tensor ``name``."""
        if rows.size == 0:
            return
        handle.seek(len(self.prefix) + self.offsets[name] + first * self._row_bytes(name))
        handle.write(np.ascontiguousarray(rows).astype(rows.dtype.newbyteorder("<")).tobytes())

    def write_scattered(
        self, handle: BinaryIO, name: str, rows_at: np.ndarray, rows: np.ndarray
    ) -> None:
        """Write ``rows[i]`` at row ``rows_at[i]``, one write per run of consecutive rows."""
        breaks = np.flatnonzero(np.diff(rows_at) != 1) + 1
        for part in np.split(np.arange(len(rows_at)), breaks):
            if part.size:
                self.write_rows(handle, name, int(rows_at[part[0]]), rows[part[0] : part[-1] + 1])


# --------------------------------------------------------------------------------------------
# reading a cache


@dataclass
class CacheRows:
    """The cache's rows of one batch, in the batch's row order (float32/int64 tensors)."""

    flat: np.ndarray  # (N,) int64 cache row of each scored position
    topk_ids: torch.Tensor  # (N, K) int64
    topk_logprobs: torch.Tensor  # (N, K) float32
    token_logprob: torch.Tensor  # (N,) float32
    tail_mass: torch.Tensor  # (N,) float32


class ReferenceCache:
    """An open cache file: its header, digest and memory-mapped arrays (rows read per batch)."""

    def __init__(self, path: Path, header: CacheHeader, digest: Digest, handle: Any) -> None:
        self.path = path
        self.header = header
        self.digest = digest
        self._handle = handle
        self.offsets = np.asarray(handle.get_tensor("sample_offsets"), dtype=np.int64)
        self.calibration_rows = np.asarray(handle.get_tensor("calibration_rows"), dtype=np.int64)

    def rows(self, batch: Sequence[Window], samples: Sequence[int] | None = None) -> CacheRows:
        """The rows of the scored positions of ``batch``; ``samples`` maps the batch's sample
        numbers to the cache's (when a subset of the corpus is re-scored for evidence)."""
        import torch

        mapped = [
            (
                self.offsets[samples[w.sample] if samples is not None else w.sample] + w.offset,
                w.n_scored,
            )
            for w in batch
        ]
        flat = np.concatenate([np.arange(a, a + n, dtype=np.int64) for a, n in mapped])

        def gather(name: str) -> np.ndarray:
            view = self._handle.get_slice(name)
            return np.concatenate([view[int(a) : int(a) + n] for a, n in mapped])

        return CacheRows(
            flat=flat,
            topk_ids=torch.from_numpy(gather("topk_ids").astype(np.int64)),
            topk_logprobs=torch.from_numpy(gather("topk_logprobs").astype(np.float32)),
            token_logprob=torch.from_numpy(gather("token_logprob").astype(np.float32)),
            tail_mass=torch.from_numpy(gather("tail_mass").astype(np.float32)),
        )

    def calibration_logprobs(self, index: int) -> np.ndarray:
        """The full reference log-probs ``(V,)`` of calibration row ``index``."""
        view = self._handle.get_slice("calibration_logprobs")
        return np.asarray(view[index : index + 1], dtype=np.float32)[0]

    def check(
        self,
        model: LoadedModel,
        samples: Sequence[ProbeSample],
        token_lists: Sequence[Sequence[int]],
        max_length: int | None,
    ) -> int:
        """Refuse a cache that was not built for these probes, this tokenizer and this contract,
        naming the field; return the context length to score with (the cache's)."""
        head, name = self.header, f"--reference-cache {self.path}"
        built = head.probes.get("samples_digest", {}).get("value")
        if built != samples_digest(samples).value:
            raise InputError(
                f"{name} was built for other probes (field probes: {head.probes.get('path')!r}, "
                f"{head.n_samples} samples)",
                "pass the --probes (and --per-category/--seed/fields) it was built with, or "
                + _REBUILD,
            )
        if (
            head.tokenizer.get("vocabulary_digest", {}).get("value")
            != vocabulary_digest(model.tokenizer).value
        ):
            raise InputError(
                f"{name} was built with another tokenizer (field tokenizer: the vocabulary "
                f"differs from {model.name!r}'s)",
                "attest with --reference instead (bits per byte), or " + _REBUILD,
            )
        contract = head.contract
        if contract.get("prefix_token_id") != model.prefix_token_id:
            raise InputError(
                f"{name} was built under another scoring contract (field contract.prefix_token_id: "
                f"{contract.get('prefix_token_id')}, the model's is {model.prefix_token_id})",
                _REBUILD,
            )
        if head.tokens.get("digest", {}).get("value") != tokens_digest(token_lists).value:
            raise InputError(
                f"{name} was built from other token ids (field tokens: the tokenizer of "
                f"{model.name!r} splits these probes differently)",
                _REBUILD,
            )
        built_length = contract.get("max_length")
        if not isinstance(built_length, int) or (
            max_length is not None and max_length != built_length
        ):
            raise InputError(
                f"{name} was built under another scoring contract (field contract.max_length: "
                f"{built_length}, asked for {max_length})",
                f"drop --max-length or pass --max-length {built_length}, or " + _REBUILD,
            )
        if model.max_length < built_length:
            raise InputError(
                f"{name} scores windows of {built_length} tokens (field contract.max_length) but "
                f"{model.name!r} takes at most {model.max_length}",
                f"build the cache with --max-length {model.max_length}",
            )
        width = output_width(model.model)
        if width != head.vocab_size:
            raise InputError(
                f"{name} holds a reference of {head.vocab_size} output tokens (field vocab_size) "
                f"but {model.name!r} has {width}",
                "attest with --reference instead",
            )
        return built_length

    def describe(self, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``reference_cache`` record of ``attestation.json``."""
        return {
            "path": str(self.path),
            "digest": self.digest.to_json(),
            "top_k": self.header.top_k,
            "n_tokens": self.header.n_tokens,
            "kl": "lower bound: top-K tokens of the reference plus one tail bucket",
            "mean_tail_mass": self.mean_tail_mass(),
            "calibration": calibration,
            "built": self.header.provenance.get("created"),
        }

    def mean_tail_mass(self) -> float:
        """The reference's mean mass outside its top-K over the scored tokens (read in blocks)."""
        view, total, n = self._handle.get_slice("tail_mass"), 0.0, self.header.n_tokens
        for start in range(0, n, 1 << 20):
            total += float(np.sum(view[start : min(n, start + (1 << 20))], dtype=np.float64))
        return total / max(1, n)


def open_reference_cache(path: str | Path) -> ReferenceCache:
    """Open a cache file (memory-mapped; the map lives as long as the returned object); one
    :class:`InputError` naming the file if it is unusable."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise InputError(
            f"--reference-cache {file} is not a file",
            "pass a file written by `lmassay reference build`",
        )
    digest = digest_file(file)
    try:
        handle = safe_open(str(file), framework="numpy")
        metadata = handle.metadata() or {}
        if _HEADER_KEY not in metadata:
            raise InputError(
                f"--reference-cache {file} is a safetensors file without an lmassay header",
                "pass a file written by `lmassay reference build`",
            )
        try:
            raw = json.loads(metadata[_HEADER_KEY])
        except json.JSONDecodeError as err:
            raise InputError(
                f"--reference-cache {file} has an unreadable header ({err.msg})", _DAMAGED
            ) from err
        header = CacheHeader.from_json(raw, f"--reference-cache {file}")
        _check_shapes(handle, header, file)
        return ReferenceCache(file, header, digest, handle)
    except SafetensorError as err:
        raise InputError(f"--reference-cache {file} cannot be read ({err})", _DAMAGED) from err


def _check_shapes(handle: Any, header: CacheHeader, file: Path) -> None:
    n, k, s, v = header.n_tokens, header.top_k, header.n_samples, header.vocab_size
    c = int(header.calibration.get("n_tokens", -1))
    expected = {
        "sample_offsets": [s + 1],
        "token_logprob": [n],
        "tail_mass": [n],
        "topk_ids": [n, k],
        "topk_logprobs": [n, k],
        "calibration_rows": [c],
        "calibration_logprobs": [c, v],
    }
    keys = set(handle.keys())
    for name, shape in expected.items():
        if name not in keys or list(handle.get_slice(name).get_shape()) != shape:
            raise InputError(
                f"--reference-cache {file}: tensor {name} is missing or not of shape {shape}",
                _DAMAGED,
            )
    offsets = np.asarray(handle.get_tensor("sample_offsets"))
    rows = np.asarray(handle.get_tensor("calibration_rows"))
    if (
        offsets[0] != 0
        or offsets[-1] != n
        or bool(np.any(np.diff(offsets) < 1))
        or bool(np.any((rows < 0) | (rows >= max(n, 1))))
    ):
        raise InputError(f"--reference-cache {file}: its sample offsets are inconsistent", _DAMAGED)


# --------------------------------------------------------------------------------------------
# scoring the suspect against a cache


@dataclass
class Calibration:
    """The bound against the exact KL on the cache's calibration tokens (filled while scoring)."""

    bound: list[float] = field(default_factory=list)
    exact: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any] | None:
        if not self.exact:
            return None
        bound, exact = np.asarray(self.bound), np.asarray(self.exact)
        return {
            "n_tokens": len(exact),
            "mean_kl": float(exact.mean()),
            "mean_kl_bound": float(bound.mean()),
            "mean_abs_error": float(np.abs(exact - bound).mean()),
            "max_abs_error": float(np.abs(exact - bound).max()),
        }


def score_against_cache(
    token_lists: Sequence[Sequence[int]],
    model: LoadedModel,
    cache: ReferenceCache,
    *,
    max_length: int,
    token_budget: int | None = None,
    topk: int = 0,
    samples: Sequence[int] | None = None,
    calibration: Calibration | None = None,
    progress: ProgressFn | None = None,
) -> list[TokenScores]:
    """Score pre-tokenised texts with ``model`` alone, the reference's side read from ``cache``.

    Returns what a paired :func:`~lmassay.attest.scoring.score_token_lists` returns, with ``kl``
    the bounded KL (:func:`bounded_kl`), ``logprob_reference`` the cached log-prob of the actual
    token and ``top1_reference`` the cached top-1.  The same windows and batches as a paired run.
    ``samples`` maps each text to its sample number in the cache (default: text ``i`` is sample
    ``i``); ``calibration`` collects the exact KL on the cache's calibration tokens.
    """
    import torch

    check_token_lists(token_lists)
    width = output_width(model.model)
    device = next(model.model.parameters()).device.type
    budget = resolve_token_budget(token_budget, [width], max_length, device)
    windows = make_windows(token_lists, model.prefix_token_id, max_length)
    results = empty_results(token_lists, True, topk)
    measure = _calibrator(cache, calibration)
    total, done = sum(len(t) for t in token_lists), 0
    with torch.inference_mode(), fused_activations([model.model]):
        for batch in plan_batches(windows, budget):
            inputs = batch_inputs(batch)
            rows = cache.rows(batch, samples)
            source = row_logits(model.model, inputs)
            reduced = _reduce_against_cache(
                source, inputs.targets, rows, width, topk, device, measure
            )
            store_batch(results, batch, reduced)
            done += inputs.n_rows
            if progress is not None:
                progress(done, total)
    return results


def _reduce_against_cache(
    source: RowLogits,
    targets: torch.Tensor,
    rows: CacheRows,
    width: int,
    topk: int,
    device: str,
    measure: Measure | None = None,
) -> dict[str, np.ndarray]:
    """The keys :func:`~lmassay.attest.reduction.reduce_rows` gives for a model and a reference,
    the reference's from the cache and the KL bounded; ``measure`` sees each chunk's log-softmax.
    As in ``reduce_rows`` the log-softmax goes into one buffer reused for every chunk."""
    import torch

    parts: dict[str, list[np.ndarray]] = {}
    buffer: torch.Tensor | None = None

    def keep(key: str, value: torch.Tensor) -> None:
        parts.setdefault(key, []).append(value.cpu().numpy())

    for start, stop in _chunks(int(targets.shape[0]), width, device):
        z = source(start, stop)  # (C, V) float32
        keep("top1_model", z.argmax(dim=-1))
        if buffer is None or buffer.shape[1] != z.shape[1] or buffer.device != z.device:
            buffer = torch.empty((stop - start, z.shape[1]), device=z.device)  # the largest chunk
        lp = torch.log_softmax(z, dim=-1, out=buffer[: stop - start])  # (C, V)
        keep("logprob_model", lp.gather(-1, targets[start:stop].to(lp.device)[:, None]).squeeze(-1))
        ids = rows.topk_ids[start:stop].to(lp.device)  # (C, K)
        lp_m = lp.gather(-1, ids)  # (C, K)
        lp_r = rows.topk_logprobs[start:stop].to(lp.device)  # (C, K)
        tail_r = rows.tail_mass[start:stop].to(lp.device)  # (C,)
        kl = bounded_kl(lp_r, lp_m, tail_r, tail_mass(lp, ids, lp_m))  # (C,)
        keep("kl", kl)
        if measure is not None:
            measure(rows.flat[start:stop], lp, kl)
        if topk:
            values, top = lp.topk(topk, dim=-1)  # (C, k)
            keep("topk_model_ids", top)
            keep("topk_model_logprobs", values)
            keep("topk_reference_ids", ids[:, :topk])
            keep("topk_reference_logprobs", lp_r[:, :topk])
    keep_np = {key: np.concatenate(values) for key, values in parts.items()}
    keep_np["logprob_reference"] = rows.token_logprob.numpy()
    keep_np["top1_reference"] = rows.topk_ids[:, 0].numpy()
    return keep_np


Measure = Callable[[np.ndarray, "torch.Tensor", "torch.Tensor"], None]
"""``measure(cache rows (C,), model log-softmax (C, V), bound (C,))`` of one chunk."""


def _calibrator(cache: ReferenceCache, calibration: Calibration | None) -> Measure | None:
    """For the chunks' calibration tokens: the exact KL from the cached full distribution."""
    if calibration is None or cache.calibration_rows.size == 0:
        return None
    index = {int(row): i for i, row in enumerate(cache.calibration_rows)}

    def measure(flat: np.ndarray, lp: torch.Tensor, bound: torch.Tensor) -> None:
        import torch

        for row in np.flatnonzero(np.isin(flat, cache.calibration_rows)).tolist():
            full = cache.calibration_logprobs(index[int(flat[row])])  # (V,)
            lp_r = torch.from_numpy(full)[None, :].to(lp.device)  # (1, V)
            calibration.exact.append(float(full_kl(lp_r, lp[row : row + 1])[0]))
            calibration.bound.append(float(bound[row]))

    return measure


@dataclass
class CachedScores:
    """A corpus scored against a cache: the scores, and what evidence and the document need."""

    cache: ReferenceCache
    scores: list[TokenScores]
    max_length: int
    token_budget: int | None
    calibration: Calibration

    def rescore(self, chosen: Sequence[int], model: LoadedModel, topk: int) -> list[TokenScores]:
        """Samples ``chosen`` again with the top-``topk`` of both sides (for evidence)."""
        return score_against_cache(
            [self.scores[i].token_ids.tolist() for i in chosen],
            model,
            self.cache,
            max_length=self.max_length,
            token_budget=self.token_budget,
            topk=topk,
            samples=chosen,
        )

    def describe(self) -> dict[str, Any]:
        """The ``reference_cache`` record of ``attestation.json``."""
        return self.cache.describe(self.calibration.to_json())

    def note(self) -> str:
        """The sentence the reports show: what KL is here, and its measured error."""
        k, name = self.cache.header.top_k, self.cache.path.name
        text = (
            f"KL is read against the reference cache {name} ({self.cache.digest}): a lower bound "
            f"over the reference's top-{k} tokens plus one tail bucket"
        )
        measured = self.calibration.to_json()
        if measured is None:
            return text + "; the cache has no calibration tokens, so its error was not measured"
        return text + (
            f"; on {measured['n_tokens']} calibration tokens the bound's mean error was "
            f"{measured['mean_abs_error']:.2g} nats/token (exact mean KL "
            f"{measured['mean_kl']:.3g}, bound {measured['mean_kl_bound']:.3g})"
        )


def _refuse_conversations(samples: Sequence[ProbeSample], where: str) -> None:
    """A cache holds plain texts scored whole; conversation probes (response-only) are refused."""
    if any(sample.messages is not None for sample in samples):
        raise InputError(
            f"{where} the probes hold conversations (prompt and response), which a reference "
            "cache does not take yet",
            "attest conversation probes with --reference",
        )


def score_samples_against_cache(
    path: str | Path,
    samples: Sequence[ProbeSample],
    model: LoadedModel,
    *,
    max_length: int | None,
    token_budget: int | None,
    progress: Progress,
) -> CachedScores:
    """Open the cache at ``path``, check it was built for these samples, this tokenizer and this
    contract (exit 2 naming the field otherwise), and score ``samples`` with ``model`` against it."""
    cache = open_reference_cache(path)
    _refuse_conversations(samples, f"--reference-cache {path}:")
    texts = [sample.text for sample in samples]
    token_lists = tokenize_texts(model.tokenizer, texts, progress.task("tokenising", len(texts)))
    length = cache.check(model, samples, token_lists, max_length)
    calibration = Calibration()
    scores = score_against_cache(
        token_lists,
        model,
        cache,
        max_length=length,
        token_budget=token_budget,
        calibration=calibration,
        progress=progress.task(
            "scoring model against the reference cache (tokens)", sum(map(len, token_lists))
        ),
    )
    return CachedScores(cache, scores, length, token_budget, calibration)
