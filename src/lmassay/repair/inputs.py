"""The inputs of ``lmassay repair``, checked before any model is loaded.

:func:`read_judgement` reads the attestation that flagged the model (a typed
:class:`~lmassay.attest.document.Attestation`) and decides what to repair: the categories, the
reference, the attest settings to judge the repair with. :func:`read_repair_data` re-reads the
probes that judged the model (checked against the digest the attestation recorded), reads the
repair text, refuses it when it holds any of those probes and splits it into its roles
(:func:`lmassay.repair.data.split_repair_texts`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.attest.document import ATTESTATION_FILE, Attestation, ModelInfo, ProbesInfo
from lmassay.attest.probes import ProbeSet, load_probes
from lmassay.attest.recipe import AttestConfig
from lmassay.bounded_read import FileLimitError
from lmassay.digests import Digest
from lmassay.errors import InputError
from lmassay.progress import Progress
from lmassay.repair.config import RepairConfig
from lmassay.repair.data import ProbeOverlap, RepairTexts, find_probe_overlap, split_repair_texts

__all__ = [
    "Judgement",
    "RepairData",
    "attestation_file",
    "read_judgement",
    "read_repair_data",
    "recorded_digest",
]


@dataclass(frozen=True)
class Judgement:
    """The attestation being answered and what it asks of the repair."""

    before: Attestation
    settings: dict[str, Any]  # the AttestConfig fields it was made with (provenance.config)
    categories: tuple[str, ...]  # the categories to repair
    reference: str | None  # the known-good model: --reference, else the attestation's


@dataclass(frozen=True)
class RepairData:
    """The repair text, split into its roles, and its check against the judging probes."""

    data: ProbeSet
    texts: RepairTexts
    overlap: ProbeOverlap
    probes: ProbeSet  # the probes that judge the repair (no repair text may contain them)


def recorded_digest(info: ModelInfo | ProbesInfo | None) -> str | None:
    """The digest value an attestation recorded for a model or the probes (None if it did not)."""
    found = info.digest if info is not None else None
    return found.value if isinstance(found, Digest) else found


def _attest_settings(before: Attestation, path: str) -> dict[str, Any]:
    config = before.provenance.config if before.provenance is not None else {}
    if not config.get("probes"):
        raise InputError(
            f"attestation {path} records no attest configuration (provenance.config)",
            "pass an attestation written by lmassay attest",
        )
    known = {f.name for f in dataclasses.fields(AttestConfig)}
    return {k: v for k, v in config.items() if k in known}


def _categories(config: RepairConfig, before: Attestation) -> tuple[str, ...]:
    known = [c.name for c in before.categories]
    chosen = tuple(config.categories) or tuple(before.flagged)
    if not chosen:
        raise InputError(
            f"the attestation {config.attestation} flagged no category "
            f"(verdict {before.verdict.value})",
            "there is nothing to repair; pass --categories to repair chosen categories anyway",
        )
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise InputError(
            f"--categories names {', '.join(unknown)}, not a category of the attestation",
            f"use some of {', '.join(known)}",
        )
    return chosen


def read_judgement(config: RepairConfig) -> Judgement:
    """The attestation of ``config.attestation`` and what to repair; a distillation without a
    reference is refused here."""
    before = Attestation.read(config.attestation)
    settings = _attest_settings(before, config.attestation)
    categories = _categories(config, before)
    recorded = before.reference.name if before.reference is not None else None
    reference = config.reference or recorded or None
    if config.mode == "distill" and reference is None:
        raise InputError(
            "--mode distill needs a reference, and the attestation records none",
            "pass --reference MODEL, or use --mode narrow or wide",
        )
    return Judgement(before, settings, categories, reference)


def _judging_probes(judgement: Judgement, max_bytes: int) -> ProbeSet:
    """The attestation's probes, re-read (at most ``max_bytes``) and checked against the digest it
    recorded."""
    settings = judgement.settings
    try:
        probes = load_probes(
            settings["probes"],
            text_field=settings.get("text_field", "text"),
            category_field=settings.get("category_field", "category"),
            id_field=settings.get("id_field", "id"),
            split=settings.get("split"),
            per_category=settings.get("per_category"),
            seed=settings.get("seed", 0),
            min_per_category=0,
            max_bytes=max_bytes,
        )
    except InputError as err:
        fix = (
            err.fix  # raising --max-file-size is the way out
            if isinstance(err, FileLimitError)
            else "repair needs the probes that judged the model, at the path the attestation "
            "records"
        )
        raise InputError(
            f"the attestation's probes {settings['probes']!r} cannot be read ({err.what})", fix
        ) from err
    recorded = recorded_digest(judgement.before.probes)
    if recorded and probes.digest.value != recorded:
        raise InputError(
            f"the probes at {settings['probes']!r} changed since the attestation (digest "
            f"{probes.digest.value[:12]} ≠ {recorded[:12]})",
            "restore the probe file the attestation used, or attest the model again",
        )
    return probes


def read_repair_data(config: RepairConfig, judgement: Judgement, progress: Progress) -> RepairData:
    """The repair text of ``--data``, refused when it holds a judging probe, split into roles."""
    probes = _judging_probes(judgement, config.max_file_bytes)
    data = load_probes(
        config.data,
        text_field=config.text_field,
        category_field=config.category_field,
        min_per_category=0,
        max_bytes=config.max_file_bytes,
    )
    overlap = find_probe_overlap(probes.samples, (s.text for s in data.samples))
    if overlap.overlapping:
        shown = ", ".join(i for i, _ in overlap.overlapping[:5])
        raise InputError(
            f"--data {config.data} contains {len(overlap.overlapping)} of the {len(probes.samples)} "
            f"probes that judge the repair (e.g. {shown})",
            "remove those texts from the repair data, or attest with other probes first",
        )
    texts = split_repair_texts(
        data.samples,
        mode=config.mode,
        categories=judgement.categories,
        holdout=config.holdout,
        seed=config.seed,
    )
    progress.log(
        f"repair data: {len(data.samples)} texts; training on {len(texts.train)}"
        + (f", anchoring on {len(texts.anchor)}" if texts.anchor else "")
        + f"; {texts.n_heldout} held out to monitor the repair"
    )
    return RepairData(data, texts, overlap, probes)


def attestation_file(path: str) -> Path:
    """The attestation.json that ``path`` (the file or its run folder) names."""
    given = Path(path)
    return given / ATTESTATION_FILE if given.is_dir() else given
