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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmassay._atomic import atomic_write_jsonl
from lmassay.digests import Digest
from lmassay.errors import ProbeError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FORMATS",
    "ProbeSample",
    "ProbeSet",
    "load_probes",
    "write_probes_jsonl",
]

FORMATS = ("jsonl", "txt-dir", "hf-dataset", "parquet")

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_BOM = b"\xef\xbb\xbf"
_MAX_LISTED = 10
_ACCEPTED = (
    "give --probes a .jsonl file (one JSON object per line), a folder of category sub-folders "
    "holding .txt files, a folder written by datasets' save_to_disk, or a .parquet file"
)


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


@dataclass(frozen=True)
class _Record:
    """A sample as read, before validation across samples; ``where`` locates it for messages."""

    id: str
    category: str
    text: str
    source: str | None
    where: str


@dataclass(frozen=True)
class _Fields:
    text: str
    category: str
    id: str


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
            all, with a warning).  Which samples are kept depends only on ``seed``, the category
            name and the category's ids: the ids are sorted, permuted by
            ``numpy.random.default_rng([seed, crc32(category)])`` and the first N are kept, so the
            choice does not depend on other categories or on the order of the input, and a
            larger N keeps a superset of a smaller one.
        seed: non-negative seed of the subsampling.
        min_per_category: categories with fewer samples than this get a warning (the statistics
            will not test them).

    Raises:
        ProbeError: the corpus cannot be used; the message names the file and line, row or id.
    """
    if per_category is not None and per_category < 1:
        raise ProbeError(
            f"per_category={per_category} keeps no samples",
            "pass --per-category 1 or more, or leave it out to keep every sample",
        )
    if seed < 0:
        raise ProbeError(f"seed={seed} is negative", "pass --seed 0 or a larger integer")
    fields = _Fields(text=text_field, category=category_field, id=id_field)
    source = Path(path)
    fmt = _detect_format(source)
    warnings: list[str] = []
    if split is not None and fmt != "hf-dataset":
        warnings.append(f"split {split!r} ignored: {source} is a {fmt} corpus without splits")

    if fmt == "jsonl":
        records = _read_jsonl(source, fields)
    elif fmt == "txt-dir":
        records = _read_txt_dir(source, warnings)
    elif fmt == "parquet":
        records = _records_from_table(_read_parquet_table(source, fields), source, fields)
    else:
        records = _records_from_table(_read_hf_table(source, fields, split), source, fields)

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


# --------------------------------------------------------------------------- format detection


def _detect_format(path: Path) -> str:
    if not path.exists():
        raise ProbeError(f"probe corpus {path} does not exist", "check the path given to --probes")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (
            (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
        ):
            return "hf-dataset"
        return "txt-dir"
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise ProbeError(
        f"probe corpus {path} is not in a recognised format (suffix {suffix or 'none'!r})",
        _ACCEPTED,
    )


# --------------------------------------------------------------------------- JSONL


def _decode_utf8(data: bytes, path: Path, *, by_line: bool) -> str:
    """Decode file bytes, dropping a leading BOM; a bad byte names the line or the byte offset."""
    skipped = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skipped
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        hint = " (it looks like UTF-16)" if utf16 else ""
        if by_line:
            line = data.count(b"\n", 0, offset) + 1
            place = f"line {line} (byte offset {offset})"
        else:
            place = f"byte offset {offset}"
        raise ProbeError(
            f"{path} {place}: bytes are not valid UTF-8{hint}",
            "re-encode the file as UTF-8 (e.g. iconv -f <encoding> -t UTF-8)",
        ) from None


def _read_jsonl(path: Path, fields: _Fields) -> list[_Record]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProbeError(
            f"cannot read probe file {path}: {exc.strerror}", "check the file"
        ) from None
    if not data.strip():
        raise ProbeError(f"probe file {path} is empty", "put one JSON object per line in it")
    text = _decode_utf8(data, path, by_line=True)
    if text.lstrip().startswith("["):
        raise ProbeError(
            f"{path} holds a JSON array, not JSON lines",
            'write one object per line, e.g. {"text": "...", "category": "..."}',
        )

    records: list[_Record] = []
    # Split on "\n" only: str.splitlines would also split on U+2028 etc. inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProbeError(
                f"{path} line {number}: invalid JSON ({exc.msg} at column {exc.colno})",
                'make every line one JSON object, e.g. {"text": "...", "category": "..."}',
            ) from None
        if not isinstance(obj, dict):
            raise ProbeError(
                f"{path} line {number}: expected a JSON object, found {_json_type(obj)}",
                'make every line one JSON object, e.g. {"text": "...", "category": "..."}',
            )
        records.append(_record_from_mapping(obj, path, f"line {number}", f"line-{number}", fields))
    if not records:
        raise ProbeError(f"probe file {path} holds no samples (only blank lines)", "add samples")
    return records


def _record_from_mapping(
    obj: dict[str, Any], path: Path, where: str, default_id: str, fields: _Fields
) -> _Record:
    prefix = f"{path} {where}"
    if fields.category not in obj:
        raise ProbeError(
            f"{prefix}: no {fields.category!r} field (fields: {_names(obj)})",
            f"add a non-empty string {fields.category!r} to every sample, "
            "or pass --category-field NAME to use another field",
        )
    category = obj[fields.category]
    if not isinstance(category, str) or not category.strip():
        raise ProbeError(
            f"{prefix}: category field {fields.category!r} is "
            f"{_describe(category)}, not a non-empty string",
            f"give every sample a non-empty string {fields.category!r}, "
            "or pass --category-field NAME to use another field",
        )
    if fields.text not in obj:
        raise ProbeError(
            f"{prefix}: no {fields.text!r} field (fields: {_names(obj)})",
            f"add a string {fields.text!r} to every sample, or pass --text-field NAME",
        )
    text = obj[fields.text]
    if not isinstance(text, str):
        raise ProbeError(
            f"{prefix}: text field {fields.text!r} is {_describe(text)}, not a string",
            f"make {fields.text!r} a string, or pass --text-field NAME to use another field",
        )
    sample_id = _coerce_id(obj.get(fields.id), default_id, prefix, fields.id)
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        raise ProbeError(
            f"{prefix}: 'source' is {_describe(source)}, not a string",
            "make 'source' a string or drop it",
        )
    for name, value in (("id", sample_id), ("category", category), ("text", text)):
        _check_encodable(value, prefix, name)
    if source is not None:
        _check_encodable(source, prefix, "source")
    return _Record(sample_id, category, text, source, where)


def _coerce_id(value: Any, default: str, prefix: str, id_field: str) -> str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ProbeError(
            f"{prefix}: id field {id_field!r} is {_describe(value)}",
            "make ids strings or integers, or drop them to use positional ids",
        )
    sample_id = str(value)
    if not sample_id.strip():
        raise ProbeError(
            f"{prefix}: id field {id_field!r} is empty",
            "give a non-empty id, or drop the field to use positional ids",
        )
    return sample_id


def _check_encodable(value: str, prefix: str, name: str) -> None:
    """JSON escapes can produce lone surrogates, which no UTF-8 tokenizer can take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProbeError(
            f"{prefix}: {name} holds an unpaired surrogate {value[exc.start]!r} "
            f"at character {exc.start}",
            "fix the \\uD800-\\uDFFF escape (a surrogate pair needs both halves)",
        ) from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return _json_type(value)


def _names(obj: dict[str, Any]) -> str:
    return ", ".join(repr(k) for k in obj) or "none"


# --------------------------------------------------------------------------- txt folders


def _read_txt_dir(root: Path, warnings: list[str]) -> list[_Record]:
    records: list[_Record] = []
    ignored: list[str] = []
    empty_categories: list[str] = []
    try:
        with os.scandir(root) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise ProbeError(f"cannot list probe folder {root}: {exc.strerror}", "check it") from None
    for entry in entries:
        if entry.is_dir():
            found = _read_category_dir(root, Path(entry.path), entry.name, ignored)
            if not found:
                empty_categories.append(entry.name)
            records.extend(found)
        elif entry.name.endswith(".txt"):
            raise ProbeError(
                f"{Path(entry.path)} is directly in the probe folder {root}, so it has no category",
                f"move the .txt files into category sub-folders, e.g. {root}/<category>/"
                f"{entry.name}",
            )
        else:
            ignored.append(entry.name)
    if ignored:
        shown = ", ".join(ignored[:5]) + (", …" if len(ignored) > 5 else "")
        warnings.append(f"ignored {len(ignored)} non-.txt files in {root}: {shown}")
    if empty_categories:
        warnings.append(
            f"category folders without .txt files (no samples): {', '.join(empty_categories)}"
        )
    if not records:
        raise ProbeError(
            f"probe folder {root} holds no samples (no .txt files in category sub-folders)",
            "put one sample per .txt file in <folder>/<category>/; " + _ACCEPTED,
        )
    return records


def _read_category_dir(
    root: Path, folder: Path, category: str, ignored: list[str]
) -> list[_Record]:
    records: list[_Record] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if not name.endswith(".txt") or not full.is_file():
                ignored.append(rel)
                continue
            try:
                data = full.read_bytes()
            except OSError as exc:
                raise ProbeError(
                    f"cannot read probe file {full}: {exc.strerror}", "check it"
                ) from None
            text = _decode_utf8(data, full, by_line=False)
            sample_id = rel[: -len(".txt")]
            records.append(_Record(sample_id, category, text, None, f"file {rel}"))
    return records


# --------------------------------------------------------------------------- tables


def _require_columns(columns: Sequence[str], path: Path, fields: _Fields) -> None:
    listed = ", ".join(repr(c) for c in columns) or "none"
    if fields.text not in columns:
        raise ProbeError(
            f"{path} has no column {fields.text!r} for the text (columns: {listed})",
            "pass --text-field NAME naming the text column",
        )
    if fields.category not in columns:
        raise ProbeError(
            f"{path} has no column {fields.category!r} for the category (columns: {listed})",
            "pass --category-field NAME naming the category column",
        )


def _wanted_columns(columns: Sequence[str], fields: _Fields) -> list[str]:
    wanted = [fields.text, fields.category]
    for optional in (fields.id, "source"):
        if optional in columns and optional not in wanted:
            wanted.append(optional)
    return wanted


def _read_parquet_table(path: Path, fields: _Fields) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        columns = list(pq.read_schema(path).names)
        _require_columns(columns, path, fields)
        return pq.read_table(path, columns=_wanted_columns(columns, fields))
    except (pa.ArrowException, OSError) as exc:
        raise ProbeError(
            f"cannot read parquet file {path}: {exc}", "check that it is a valid parquet file"
        ) from None


def _read_hf_table(path: Path, fields: _Fields, split: str | None) -> pa.Table:
    try:
        import datasets
    except ImportError:
        raise ProbeError(
            f"{path} is a saved Hugging Face dataset but the 'datasets' package is missing",
            "pip install datasets",
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise ProbeError(
            f"cannot load the saved dataset {path}: {exc}",
            "check that it was written by datasets' save_to_disk",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(repr(s) for s in loaded) or "none"
        if split is None:
            raise ProbeError(
                f"{path} is a DatasetDict with splits {splits}", "pass --split NAME to pick one"
            )
        if split not in loaded:
            raise ProbeError(
                f"{path} has no split {split!r} (splits: {splits})", "pass --split with one of them"
            )
        dataset = loaded[split]
        label = Path(f"{path}[{split}]")
    else:
        dataset = loaded
        label = path
    columns = list(dataset.column_names)
    _require_columns(columns, label, fields)
    table: pa.Table = dataset.select_columns(_wanted_columns(columns, fields)).with_format("arrow")[
        :
    ]
    return table


def _records_from_table(table: pa.Table, path: Path, fields: _Fields) -> list[_Record]:
    if table.num_rows == 0:
        raise ProbeError(f"{path} has no rows", "point --probes at a non-empty dataset")
    texts = table.column(fields.text).to_pylist()
    categories = table.column(fields.category).to_pylist()
    names = table.column_names
    ids = table.column(fields.id).to_pylist() if fields.id in names else [None] * len(texts)
    sources = table.column("source").to_pylist() if "source" in names else [None] * len(texts)
    records: list[_Record] = []
    for index, (text, category, raw_id, source) in enumerate(
        zip(texts, categories, ids, sources, strict=True)
    ):
        row = {fields.text: text, fields.category: category, fields.id: raw_id, "source": source}
        records.append(_record_from_mapping(row, path, f"row {index}", f"row-{index}", fields))
    return records


# --------------------------------------------------------------------------- validation


def _validate(records: list[_Record], path: Path, warnings: list[str]) -> list[ProbeSample]:
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
