"""What self-probing produces (see :mod:`.self_probe`): the attestation's ``self_probe`` record
(:func:`summarise`, for ``attest --self-probe``) and a probe file (:func:`write_probe_file`, for
``lmassay probes sample``).

Per category the estimate of KL(model ‖ reference) per token is the ratio
``Σ_i s_i / Σ_i n_i`` over its continuations ``i`` (``s_i`` the summed log-ratio, ``n_i`` its
tokens): token-weighted, like every aggregate of lmassay.  Its standard error is the delta-method
one of a ratio estimator, ``sqrt(m/(m−1) Σ_i (s_i − r n_i)²) / Σ_i n_i`` over ``m`` continuations.
"What the model now says" is the continuations of largest log-ratio per token, overall and per
category, with the end of their prompt and the start of their text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_jsonl
from lmassay.attest.document import (
    SELF_PROBE_DIRECTION,
    SelfProbe,
    SelfProbeCategory,
    SelfProbeExcerpt,
)
from lmassay.attest.model_loading import ModelOptions
from lmassay.attest.probes import load_probes
from lmassay.attest.self_probe import Draw, DrawScore, SampledFrom, SampleSettings, sample_probes
from lmassay.bounded_read import FileSizeLimit
from lmassay.errors import InputError, require
from lmassay.progress import NullProgress, Progress

__all__ = [
    "EXCERPT_CHARS",
    "PROMPT_CHARS",
    "TOP",
    "TOP_PER_CATEGORY",
    "ProbeSampleConfig",
    "summarise",
    "write_probe_file",
]

TOP = 5
"""Excerpts overall."""
TOP_PER_CATEGORY = 3
"""Excerpts per category."""
EXCERPT_CHARS = 240
"""Most characters of a continuation kept in an excerpt."""
PROMPT_CHARS = 80
"""Most characters of a prompt kept in an excerpt (its end)."""


def summarise(
    draws: Sequence[Draw],
    scores: Sequence[DrawScore | None],
    settings: SampleSettings,
    *,
    duration_s: float | None = None,
    top: int = TOP,
    top_per_category: int = TOP_PER_CATEGORY,
) -> SelfProbe:
    """The ``self_probe`` record: settings, per-category estimates and the top excerpts."""
    scored = [(d, s) for d, s in zip(draws, scores, strict=True) if s is not None]
    categories = sorted({d.category for d in draws})
    rows = []
    for name in categories:
        members = [(d, s) for d, s in scored if d.category == name]
        ratio, se = _ratio(members)
        rows.append(
            SelfProbeCategory(
                name=name,
                n_samples=len(members),
                n_tokens=sum(s.n_tokens for _, s in members),
                logratio=ratio,
                logratio_se=se,
                top=tuple(_excerpt(d, s) for d, s in _largest(members, top_per_category)),
            )
        )
    overall, _ = _ratio(scored)
    return SelfProbe(
        direction=SELF_PROBE_DIRECTION,
        sampled_from=draws[0].sampled_from if draws else "model",
        n_per_category=settings.n_per_category,
        prompt_tokens=settings.prompt_tokens,
        new_tokens=settings.new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        n_samples=len(scored),
        n_empty=len(draws) - len(scored),
        n_tokens=sum(s.n_tokens for _, s in scored),
        logratio=overall,
        categories=tuple(rows),
        top=tuple(_excerpt(d, s) for d, s in _largest(scored, top)),
        duration_s=round(duration_s, 3) if duration_s is not None else None,
    )


def _ratio(members: Sequence[tuple[Draw, DrawScore]]) -> tuple[float | None, float | None]:
    """The token-weighted log-ratio and its delta-method standard error (None when undefined)."""
    tokens = sum(s.n_tokens for _, s in members)
    if tokens == 0:
        return None, None
    ratio = sum(s.logratio_sum for _, s in members) / tokens
    m = len(members)
    if m < 2:
        return ratio, None
    spread = sum((s.logratio_sum - ratio * s.n_tokens) ** 2 for _, s in members)
    return ratio, math.sqrt(spread * m / (m - 1)) / tokens


def _largest(members: Sequence[tuple[Draw, DrawScore]], limit: int) -> list[tuple[Draw, DrawScore]]:
    """The ``limit`` continuations of largest log-ratio per token, largest first (ties by id)."""
    return sorted(members, key=lambda pair: (-pair[1].logratio, pair[0].id))[:limit]


def _excerpt(draw: Draw, score: DrawScore) -> SelfProbeExcerpt:
    prompt, text = draw.prompt, draw.continuation
    return SelfProbeExcerpt(
        id=draw.id,
        category=draw.category,
        prompt_id=draw.prompt_id,
        logratio=score.logratio,
        logratio_sum=score.logratio_sum,
        n_tokens=score.n_tokens,
        prompt=prompt if len(prompt) <= PROMPT_CHARS else "…" + prompt[-PROMPT_CHARS:],
        continuation=text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…",
    )


# --------------------------------------------------------------------------------------------
# lmassay probes sample


@dataclass(frozen=True)
class ProbeSampleConfig(ModelOptions, FileSizeLimit):
    """What ``lmassay probes sample`` needs; :meth:`validate` names the offending flag."""

    model: str
    """The model to sample from (folder or hub id)."""
    probes: str
    """The probe corpus whose categories and texts give the prompts."""
    out: str
    """The probe file to write (JSONL)."""
    reference: str | None = None
    """Also sample from this model (rows marked ``sampled_from: reference``)."""
    n_per_category: int = 8
    prompt_tokens: int = 16
    new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0
    text_field: str = "text"
    category_field: str = "category"
    id_field: str = "id"
    split: str | None = None

    @property
    def settings(self) -> SampleSettings:
        return SampleSettings(
            self.n_per_category, self.prompt_tokens, self.new_tokens, self.temperature, self.seed
        )

    def validate(self) -> None:
        super().validate()
        require(self.settings.checks())
        self.check_file_size_limit()
        if Path(self.out).is_dir():
            raise InputError(f"--out {self.out!r} is a folder", "pass the path of a .jsonl file")


def write_probe_file(
    config: ProbeSampleConfig, progress: Progress | None = None
) -> tuple[Path, dict[str, int]]:
    """Sample continuations from the model (and the reference) into the probe file ``config.out``,
    written atomically; returns its path and the rows per ``sampled_from``."""
    progress = progress or NullProgress()
    config.validate()
    probes = load_probes(
        config.probes,
        text_field=config.text_field,
        category_field=config.category_field,
        id_field=config.id_field,
        split=config.split,
        seed=config.seed,
        min_per_category=1,
        max_bytes=config.max_file_bytes,
    )
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    sources: list[tuple[SampledFrom, str, ModelOptions]] = [
        ("model", config.model, config.model_options)
    ]
    if config.reference:
        # --revision names a revision of the model, not of the reference (as in attest)
        sources.append(
            ("reference", config.reference, replace(config.model_options, revision=None))
        )
    total = config.n_per_category * len(probes.categories)
    for role, spec, options in sources:
        progress.log(f"loading the {role} {spec}")
        drawn = sample_probes(
            options.load(spec),
            probes,
            n_per_category=config.n_per_category,
            prompt_tokens=config.prompt_tokens,
            new_tokens=config.new_tokens,
            temperature=config.temperature,
            seed=config.seed,
            sampled_from=role,
            progress=progress.task(f"sampling from the {role}", total),
        )
        counts[role] = len(drawn)
        rows += drawn
    return atomic_write_jsonl(config.out, rows), counts
