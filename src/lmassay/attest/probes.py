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
An optional ``answer`` (a JSONL field; a dataset's or parquet file's ``answer`` column, usually
something else, is not read) names the words of the text that state its answer (a fact's object;
the last occurrence in the text counts): the answer test compares how likely the two models find
them (:mod:`lmassay.attest.answers`).

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

(a conversation sample adds its earlier turns: ``[id, category, response, [[role, content], …]]``;
a sample with an ``answer`` adds ``{"answer": answer}`` at the end)

over the samples actually used (after skipping empty texts and subsampling).  It names the
content, not its container: the same samples give the same digest whether they came from
JSONL, a folder of ``.txt`` files, a saved dataset or parquet.  ``source`` is not part of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from lmassay._atomic import atomic_write_jsonl
from lmassay.attest.probe_readers import (
    Fields,
    Record,
    detect_format,
    read_records,
    records_from_rows,
)
from lmassay.bounded_read import DATA_LIMIT
from lmassay.digests import Digest
from lmassay.errors import ProbeError

__all__ = [
    "FORMATS",
    "ProbeSample",
    "ProbeSet",
    "load_probes",
    "probes_digest",
    "probes_from_rows",
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
    messages: tuple[tuple[str, str], ...] | None = None
    """A conversation sample: the ``(role, content)`` turns before its response, which is
    ``text`` (the only part scored; see :mod:`lmassay.attest.conditioned`)."""
    answer: str | None = None
    """The words of ``text`` that state its answer (their last occurrence): a fact's object, a
    question's answer. The answer test (:mod:`lmassay.attest.answers`) compares how likely the
    two models find them."""

    @property
    def n_bytes(self) -> int:
        """Length of the text in UTF-8 bytes (the denominator of bits per byte)."""
        return len(self.text.encode("utf-8"))

    def to_json(self) -> dict[str, Any]:
        """The sample as a line of a probe file: ``{"id", "category", "text"}``, or for a
        conversation ``{"id", "category", "messages"}`` ending with the assistant's response;
        plus ``"source"`` when it is set."""
        row: dict[str, Any] = {"id": self.id, "category": self.category}
        if self.messages is None:
            row["text"] = self.text
        else:
            turns = [*self.messages, ("assistant", self.text)]
            row["messages"] = [{"role": role, "content": content} for role, content in turns]
        if self.source is not None:
            row["source"] = self.source
        if self.answer is not None:
            row["answer"] = self.answer
        return row


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

    sources: tuple[dict[str, Any], ...] = ()
    """Where the samples came from when they were read from datasets (``hf:``, suites): per
    source its dataset, config, split, requested revision and resolved commit, licence, count."""
    suite: str | None = None
    """The suite's name (a suite file or ``builtin:NAME``)."""
    default_suite: bool = False
    """The built-in offline suite, used because no ``--probes`` was given."""

    def to_json(self) -> dict[str, Any]:
        """The corpus description recorded in ``attestation.json`` (no texts); ``suite``,
        ``default_suite`` and ``sources`` only where they apply."""
        out = {
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
        if self.suite is not None:
            out["suite"] = self.suite
        if self.default_suite:
            out["default_suite"] = True
        if self.sources:
            out["sources"] = [dict(source) for source in self.sources]
        return out


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
    default_suite: bool = False,
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
    warnings: list[str] = []
    read = _read_any(str(path), fields, split, warnings, max_bytes)
    found = _probe_set(
        read, str(path), fields, warnings, split, per_category, seed, min_per_category
    )
    return replace(found, default_suite=default_suite)


def probes_from_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    label: str = "(rows in memory)",
    text_field: str = "text",
    category_field: str = "category",
    id_field: str = "id",
    per_category: int | None = None,
    seed: int = 0,
    min_per_category: int = 5,
) -> ProbeSet:
    """A probe corpus from rows already in memory (dicts, or a ``datasets.Dataset``, which
    iterates as dicts), read as the rows of a dataset are (:func:`load_probes`): the same
    fields, conversation rows, ids ``row-N`` where none is given, subsampling and digest.
    ``label`` names the rows in messages and in ``probes.path``; ``probes.format`` is ``rows``."""
    if per_category is not None and per_category < 1:
        raise ProbeError(f"per_category={per_category} keeps no samples", "pass 1 or more")
    fields = Fields(text=text_field, category=category_field, id=id_field)
    copied: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ProbeError(
                f"{label}: row {index} is a {type(row).__name__}, not a mapping",
                f'give rows like {{"{text_field}": ..., "{category_field}": ...}}',
            )
        copied.append(dict(row))  # the reader may drop an empty text column of a row
    read = _Read(records_from_rows(copied, label, fields), "rows")
    return _probe_set(read, label, fields, [], None, per_category, seed, min_per_category)


def _probe_set(
    read: _Read,
    label: str,
    fields: Fields,
    warnings: list[str],
    split: str | None,
    per_category: int | None,
    seed: int,
    min_per_category: int,
) -> ProbeSet:
    """The corpus of ``read``'s records: validated, its built digest checked, subsampled, sorted."""
    source = Path(label)
    samples = _validate(read.records, source, warnings)
    if read.expected_digest is not None:
        _check_built_digest(samples, read.expected_digest, source)
    if per_category is not None:
        samples = _subsample(samples, per_category, seed, warnings)
    _warn_small_categories(samples, min_per_category, warnings)

    ordered = tuple(sorted(samples, key=lambda s: (s.category, s.id)))
    return ProbeSet(
        samples=ordered,
        path=label,
        format=read.format,
        digest=probes_digest(ordered),
        warnings=tuple(warnings),
        text_field=fields.text,
        category_field=fields.category,
        id_field=fields.id,
        split=split if read.format in ("hf-dataset", "hf") else None,
        per_category=per_category,
        seed=seed,
        sources=read.sources,
        suite=read.suite,
    )


@dataclass(frozen=True)
class _Read:
    """Records as read from any probe source, and what the corpus records about the source."""

    records: list[Record]
    format: str
    sources: tuple[dict[str, Any], ...] = ()
    suite: str | None = None
    expected_digest: str | None = None  # a built suite's recorded digest of probes.jsonl


def _read_any(
    spec: str, fields: Fields, split: str | None, warnings: list[str], max_bytes: int
) -> _Read:
    """The records of ``--probes``: ``hf:`` datasets, suites (files, ``builtin:``, built
    folders) and the four file forms."""
    from lmassay.attest import suites
    from lmassay.attest.hub_probes import HF_PREFIX, open_rows, parse_hf

    if spec.startswith(HF_PREFIX):
        rows, origin, more = open_rows(parse_hf(spec), split)
        warnings.extend(more)
        records = records_from_rows(rows, spec, fields)
        source = {**origin.to_json(), "n_samples": len(records)}
        return _Read(records, "hf", sources=(source,))
    if suites.is_suite_spec(spec):
        suite = suites.load_suite(spec)
        if split is not None:
            warnings.append(f"split {split!r} ignored: a suite names each source's split")
        parts = suites.read_suite_records(suite, warnings, max_bytes=max_bytes)
        records = [r for part in parts for r in part.records]
        sources = tuple(
            {**part.origin, "n_rows_read": part.n_rows_read, "n_samples": len(part.records)}
            for part in parts
        )
        return _Read(records, "suite", sources=sources, suite=suite.name)
    folder = Path(spec)
    if folder.is_dir() and (folder / suites.SUITE_FILE).is_file():
        built = suites.read_built_suite(folder)
        plain = Fields(text="text", category="category", id="id")  # as build_suite writes it
        records = read_records(built.probes_path, "jsonl", plain, None, warnings, limit=max_bytes)
        digest = built.manifest.get("digest") or {}
        return _Read(
            records,
            "suite-folder",
            sources=tuple(built.manifest.get("sources") or ()),
            suite=str(built.manifest.get("name")),
            expected_digest=str(digest.get("value")),
        )
    fmt = detect_format(folder)
    return _Read(read_records(folder, fmt, fields, split, warnings, limit=max_bytes), fmt)


def _check_built_digest(samples: Sequence[ProbeSample], expected: str, folder: Path) -> None:
    """Refuse a built suite whose probes.jsonl no longer has the digest its suite.json records."""
    actual = probes_digest(samples).value
    if actual != expected:
        raise ProbeError(
            f"suite folder {folder}: probes.jsonl has digest sha256:{actual[:16]}…, but "
            f"suite.json records sha256:{expected[:16]}… (the probes were changed)",
            "build the suite again with `lmassay probes build`, or restore probes.jsonl",
        )


def probes_digest(samples: Iterable[ProbeSample]) -> Digest:
    """Digest of samples as described in the module docstring (sorted here by (category, id))."""
    hasher = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: (s.category, s.id)):
        parts: list[Any] = [sample.id, sample.category, sample.text]
        if sample.messages is not None:
            parts.append([list(turn) for turn in sample.messages])
        if sample.answer is not None:
            parts.append({"answer": sample.answer})
        line = json.dumps(parts, ensure_ascii=False) + "\n"
        hasher.update(line.encode("utf-8"))
    return Digest("sha256", hasher.hexdigest())


def write_probes_jsonl(samples: Iterable[ProbeSample], path: str | os.PathLike[str]) -> Path:
    """Write samples as a JSONL probe file (atomically) that :func:`load_probes` reads back.

    Each line is :meth:`ProbeSample.to_json`, in the order given.
    """
    return atomic_write_jsonl(path, (sample.to_json() for sample in samples))


# --------------------------------------------------------------------------- validation


def subsample_records(
    records: list[K], per_category: int, seed: int, warnings: list[str]
) -> list[K]:
    """Keep ``per_category`` records (or samples) of each category, chosen as the module
    docstring says (used by suites for each source's ``n``)."""
    return _subsample(records, per_category, seed, warnings)


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
    samples = [
        ProbeSample(r.id, r.category, r.text, r.source, r.messages, r.answer)
        for r in records
        if r.text.strip()
    ]
    if not samples:
        raise ProbeError(
            f"{path}: all {len(records)} texts are empty or only whitespace",
            "fill in the texts (or point --text-field at the column that holds them)",
        )
    return samples


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def category(self) -> str: ...


K = TypeVar("K", bound=_Keyed)


def _subsample(samples: list[K], per_category: int, seed: int, warnings: list[str]) -> list[K]:
    by_category: dict[str, list[K]] = {}
    for sample in samples:
        by_category.setdefault(sample.category, []).append(sample)
    kept: list[K] = []
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
