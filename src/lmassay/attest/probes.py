"""Load, validate and subsample a probe corpus.

A probe corpus is a set of texts, each with a *category* (the axis along which tampering is
looked for) and a stable *id*.  :func:`load_probes` reads any of four forms, detected from the
path:

``jsonl``
    A ``.jsonl`` / ``.ndjson`` / ``.json`` file holding one JSON object per line,
    ``{"text": ..., "category": ..., "id"?: ..., "source"?: ...}``.  The text, category and id
    field names are configurable.  A line without an id (or with ``"id": null``) gets
    ``"line-N"``, N being its 1-based line number, so ids do not change when other lines are
    removed or the corpus is subsampled.  Blank lines are skipped.
``txt-dir``
    A folder whose sub-folders are categories holding ``.txt`` files, one sample per file
    (nested folders below a category are allowed).  The id is ``"<category>/<relative path
    without .txt>"`` with ``/`` separators.  Entries whose names start with ``.`` are skipped,
    like in :func:`lmassay.digests.list_files`; other files that are not ``.txt`` are ignored
    with a warning.
``hf-dataset``
    A folder written by ``datasets.Dataset.save_to_disk`` (a ``DatasetDict`` needs ``split``).
``parquet``
    A ``.parquet`` file.

For the two tabular forms a row without an id column (or with a null id) gets ``"row-N"``,
N being its 0-based row index.  An optional ``source`` field / column is kept as metadata.

``per_category=N`` keeps N samples of each category.  Which ones depends only on the seed, the
category name and the category's ids: the ids are sorted, permuted by
``numpy.random.default_rng([seed, crc32(category)])`` and the first N are kept, so the choice does
not depend on other categories or on the order of the input, and a larger N keeps a superset of a
smaller one.

Texts are kept exactly as given (no stripping, no newline normalisation) because byte counts
and tokenisation depend on them; only a UTF-8 byte-order mark at the start of a file is
dropped.  Texts that are empty or only whitespace are skipped with a warning.  Every other
problem is a :class:`~lmassay.errors.ProbeError` naming the file and the line, row, or id.

The samples are returned sorted by ``(category, id)``, and the corpus digest is::

    sha256( for each sample in (category, id) order:
            json.dumps([id, category, text], ensure_ascii=False) + "\\n"   encoded as UTF-8 )

over the samples actually used (after skipping empty texts and subsampling).  It names the
content, not its container: the same samples give the same digest whether they came from
JSONL, a folder of ``.txt`` files, a saved dataset or parquet.  ``source`` is not part of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmassay._atomic import atomic_write_jsonl
from lmassay.attest.probe_readers import Fields, Record, detect_format, read_records
from lmassay.bounded_read import DATA_LIMIT
from lmassay.digests import Digest
from lmassay.errors import ProbeError

__all__ = [
    "FORMATS",
    "ProbeSample",
    "ProbeSet",
    "load_probes",
    "probes_digest",
    "write_probes_jsonl",
]

FORMATS = ("jsonl", "txt-dir", "hf-dataset", "parquet")

_MAX_LISTED = 10


@dataclass(frozen=True)
class ProbeSample:
    """One probe text with its category and stable id."""

    id: str
    category: str
    text: str
    source: str | None = None

    @property
    def n_bytes(self) -> int:
        """Length of the text in UTF-8 bytes (the denominator of bits per byte)."""
        return len(self.text.encode("utf-8"))


@dataclass(frozen=True)
class ProbeSet:
    """A loaded probe corpus: its samples sorted by ``(category, id)`` and how they were read."""

    samples: tuple[ProbeSample, ...]
    path: str
    format: str
    digest: Digest
    warnings: tuple[str, ...] = ()
    text_field: str = "text"
    category_field: str = "category"
    id_field: str = "id"
    split: str | None = None
    per_category: int | None = None
    seed: int = 0

    @property
    def categories(self) -> dict[str, int]:
        """Number of samples per category, sorted by category name."""
        counts: dict[str, int] = {}
        for sample in self.samples:
            counts[sample.category] = counts.get(sample.category, 0) + 1
        return dict(sorted(counts.items()))

    def __len__(self) -> int:
        return len(self.samples)

    def to_json(self) -> dict[str, Any]:
        """The corpus description recorded in ``attestation.json`` (no texts)."""
        return {
            "path": self.path,
            "format": self.format,
            "digest": self.digest.to_json(),
            "n_samples": len(self.samples),
            "categories": self.categories,
            "warnings": list(self.warnings),
            "text_field": self.text_field,
            "category_field": self.category_field,
            "id_field": self.id_field,
            "split": self.split,
            "per_category": self.per_category,
            "seed": self.seed,
        }


def load_probes(
    path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    category_field: str = "category",
    id_field: str = "id",
    split: str | None = None,
    per_category: int | None = None,
    seed: int = 0,
    min_per_category: int = 5,
    max_bytes: int = DATA_LIMIT,
) -> ProbeSet:
    """Load a probe corpus from ``path`` (format detected; see the module docstring).

    Args:
        path: a JSONL file, a folder of category sub-folders of ``.txt`` files, a saved
            Hugging Face dataset folder, or a parquet file.
        text_field: field / column holding the text (``--text-field``).
        category_field: field / column holding the category (``--category-field``).
        id_field: field / column holding the sample id; optional in the data.
        split: split of a saved ``DatasetDict`` (required there, ignored with a warning elsewhere).
        per_category: keep exactly this many samples per category (categories with fewer keep
            all, with a warning), chosen as the module docstring says.
        seed: non-negative seed of the subsampling.
        min_per_category: categories with fewer samples than this get a warning (the statistics
            will not test them).
        max_bytes: the most bytes of files the corpus may hold (``--max-file-size``); only
            regular files are read (see :mod:`lmassay.bounded_read`).

    Raises:
        ProbeError: the corpus cannot be used; the message names the file and line, row or id.
        InputError: a file of the corpus is not a regular file, or the corpus is over
            ``max_bytes``; the message names the file.
    """
    if per_category is not None and per_category < 1:
        raise ProbeError(
            f"per_category={per_category} keeps no samples",
            "pass --per-category 1 or more, or leave it out to keep every sample",
        )
    if seed < 0:
        raise ProbeError(f"seed={seed} is negative", "pass --seed 0 or a larger integer")
    fields = Fields(text=text_field, category=category_field, id=id_field)
    source = Path(path)
    fmt = detect_format(source)
    warnings: list[str] = []
    records = read_records(source, fmt, fields, split, warnings, limit=max_bytes)
    samples = _validate(records, source, warnings)
    if per_category is not None:
        samples = _subsample(samples, per_category, seed, warnings)
    _warn_small_categories(samples, min_per_category, warnings)

    ordered = tuple(sorted(samples, key=lambda s: (s.category, s.id)))
    return ProbeSet(
        samples=ordered,
        path=str(path),
        format=fmt,
        digest=probes_digest(ordered),
        warnings=tuple(warnings),
        text_field=text_field,
        category_field=category_field,
        id_field=id_field,
        split=split if fmt == "hf-dataset" else None,
        per_category=per_category,
        seed=seed,
    )


def probes_digest(samples: Iterable[ProbeSample]) -> Digest:
    """Digest of samples as described in the module docstring (sorted here by (category, id))."""
    hasher = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: (s.category, s.id)):
        line = json.dumps([sample.id, sample.category, sample.text], ensure_ascii=False) + "\n"
        hasher.update(line.encode("utf-8"))
    return Digest("sha256", hasher.hexdigest())


def write_probes_jsonl(samples: Iterable[ProbeSample], path: str | os.PathLike[str]) -> Path:
    """Write samples as a JSONL probe file (atomically) that :func:`load_probes` reads back.

    Each line is ``{"id", "category", "text"}`` plus ``"source"`` when it is set, in the order
    given.
    """
    rows: list[dict[str, str]] = []
    for sample in samples:
        row = {"id": sample.id, "category": sample.category, "text": sample.text}
        if sample.source is not None:
            row["source"] = sample.source
        rows.append(row)
    return atomic_write_jsonl(path, rows)


# --------------------------------------------------------------------------- validation


def _validate(records: list[Record], path: Path, warnings: list[str]) -> list[ProbeSample]:
    first_seen: dict[str, str] = {}
    for record in records:
        previous = first_seen.setdefault(record.id, record.where)
        if previous != record.where:
            raise ProbeError(
                f"{path}: duplicate id {record.id!r} at {previous} and {record.where}",
                "give every sample a unique id",
            )
    empty = [r.id for r in records if not r.text.strip()]
    if empty:
        shown = ", ".join(repr(i) for i in empty[:_MAX_LISTED])
        more = f" and {len(empty) - _MAX_LISTED} more" if len(empty) > _MAX_LISTED else ""
        warnings.append(f"skipped {len(empty)} empty texts: ids {shown}{more}")
    samples = [ProbeSample(r.id, r.category, r.text, r.source) for r in records if r.text.strip()]
    if not samples:
        raise ProbeError(
            f"{path}: all {len(records)} texts are empty or only whitespace",
            "fill in the texts (or point --text-field at the column that holds them)",
        )
    return samples


def _subsample(
    samples: list[ProbeSample], per_category: int, seed: int, warnings: list[str]
) -> list[ProbeSample]:
    by_category: dict[str, list[ProbeSample]] = {}
    for sample in samples:
        by_category.setdefault(sample.category, []).append(sample)
    kept: list[ProbeSample] = []
    short: list[str] = []
    for category in sorted(by_category):
        group = sorted(by_category[category], key=lambda s: s.id)
        if len(group) <= per_category:
            if len(group) < per_category:
                short.append(f"{category!r} ({len(group)})")
            kept.extend(group)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))])
        chosen = np.sort(rng.permutation(len(group))[:per_category])
        kept.extend(group[int(i)] for i in chosen)
    if short:
        warnings.append(
            f"per_category={per_category}: categories with fewer samples keep them all: "
            + ", ".join(short)
        )
    return kept


def _warn_small_categories(
    samples: list[ProbeSample], min_per_category: int, warnings: list[str]
) -> None:
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.category] = counts.get(sample.category, 0) + 1
    small = [f"{name!r} ({n})" for name, n in sorted(counts.items()) if n < min_per_category]
    if small:
        warnings.append(
            f"categories with fewer than {min_per_category} samples will not be tested: "
            + ", ".join(small)
        )
    if len(counts) == 1:
        warnings.append(
            f"only one category ({next(iter(counts))!r}): categories cannot be compared "
            "with each other"
        )
