"""Readers of the four probe-corpus forms, each into records validated one by one.

:func:`detect_format` names the form of a path and :func:`read_records` reads it; the forms and the
ids they give are described in :mod:`lmassay.attest.probes`.  Every problem is a
:class:`~lmassay.errors.ProbeError` naming the file and the line, row or file of the sample.

Files are read through :mod:`lmassay.bounded_read`: only regular files, and at most ``limit`` bytes
of a corpus (one JSONL or parquet file, the ``.txt`` files of a folder together, the files of a
saved dataset together); ``--max-file-size`` sets it. A folder of ``.txt`` files may also hold at
most :data:`MAX_TXT_FILES` of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay.bounded_read import (
    DATA_LIMIT,
    check_folder,
    check_regular,
    iter_lines,
    over_folder_limit,
    read_bytes,
)
from lmassay.errors import ProbeError

if TYPE_CHECKING:
    import pyarrow as pa

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_BOM = b"\xef\xbb\xbf"
ACCEPTED = (
    "give --probes a .jsonl file (one JSON object per line), a folder of category sub-folders "
    "holding .txt files, a folder written by datasets' save_to_disk, or a .parquet file"
)
MAX_TXT_FILES = 1_000_000
"""Most ``.txt`` files of a probe folder (each is one sample); a larger corpus belongs in JSONL."""
_WHAT = "probe file"


@dataclass(frozen=True)
class Record:
    """A sample as read, before validation across samples; ``where`` locates it for messages."""

    id: str
    category: str
    text: str
    source: str | None
    where: str
    messages: tuple[tuple[str, str], ...] | None = None
    """A conversation sample's turns before the response (``text``), as ``(role, content)``."""
    answer: str | None = None
    """The answer the text states (its last occurrence in ``text``), for the answer test."""


@dataclass(frozen=True)
class Fields:
    """The names of the text, category and id fields (or columns)."""

    text: str
    category: str
    id: str


def read_records(
    source: Path,
    fmt: str,
    fields: Fields,
    split: str | None,
    warnings: list[str],
    *,
    limit: int = DATA_LIMIT,
) -> list[Record]:
    """The records of the corpus at ``source`` in form ``fmt`` (from :func:`detect_format`), read
    from at most ``limit`` bytes of files (see the module docstring)."""
    if split is not None and fmt != "hf-dataset":
        warnings.append(f"split {split!r} ignored: {source} is a {fmt} corpus without splits")
    if fmt == "jsonl":
        return _read_jsonl(source, fields, limit)
    if fmt == "txt-dir":
        return _read_txt_dir(source, warnings, limit)
    if fmt == "parquet":
        return _records_from_table(_read_parquet_table(source, fields, limit), source, fields)
    return _records_from_table(_read_hf_table(source, fields, split, limit), source, fields)


def detect_format(path: Path) -> str:
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
        ACCEPTED,
    )


# --------------------------------------------------------------------------- JSONL


def _read_jsonl(path: Path, fields: Fields, limit: int) -> list[Record]:
    """The records of a JSONL file, streamed line by line (split on ``\\n`` only: str.splitlines
    would also split on U+2028 etc. inside strings)."""
    records: list[Record] = []
    blank = True  # only whitespace bytes so far (a BOM counts as content, as it always has)
    first_content = True
    offset = 0  # byte offset of the line in the file
    head = b""
    for number, raw in enumerate(iter_lines(path, what=_WHAT, limit=limit), start=1):
        if number == 1:
            head = raw
        blank = blank and not raw.strip()
        data = raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw
        skipped = len(raw) - len(data)
        line = _decode_line(data, path, number, offset + skipped, head)
        offset += len(raw)
        if not line.strip():
            continue
        if first_content and line.lstrip().startswith("["):
            raise ProbeError(
                f"{path} holds a JSON array, not JSON lines",
                'write one object per line, e.g. {"text": "...", "category": "..."}',
            )
        first_content = False
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
    if blank:
        raise ProbeError(f"probe file {path} is empty", "put one JSON object per line in it")
    if not records:
        raise ProbeError(f"probe file {path} holds no samples (only blank lines)", "add samples")
    return records


def _decode_line(data: bytes, path: Path, number: int, offset: int, head: bytes) -> str:
    """One line of a JSONL file; a bad byte names the line and its byte offset in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))
        hint = " (it looks like UTF-16)" if utf16 else ""
        raise ProbeError(
            f"{path} line {number} (byte offset {offset + exc.start}): bytes are not valid "
            f"UTF-8{hint}",
            "re-encode the file as UTF-8 (e.g. iconv -f <encoding> -t UTF-8)",
        ) from None


def _record_from_mapping(
    obj: dict[str, Any], path: Path, where: str, default_id: str, fields: Fields
) -> Record:
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
    messages: tuple[tuple[str, str], ...] | None = None
    if fields.text not in obj and is_conversation(obj):
        text, messages = conversation_parts(obj, prefix)
    else:
        if fields.text not in obj:
            raise ProbeError(
                f"{prefix}: no {fields.text!r} field (fields: {_names(obj)})",
                f"add a string {fields.text!r} to every sample (or 'prompt' and 'response', or "
                "'messages'), or pass --text-field NAME",
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
    for role, content in messages or ():
        _check_encodable(content, prefix, f"a {role!r} message")
    answer = _answer(obj.get("answer"), text, messages, prefix)
    return Record(sample_id, category, text, source, where, messages, answer)


def _answer(
    answer: Any, text: str, messages: tuple[tuple[str, str], ...] | None, prefix: str
) -> str | None:
    """A sample's optional ``answer``: a non-empty string found in its text (plain text only)."""
    if answer is None:
        return None
    if not isinstance(answer, str) or not answer.strip():
        raise ProbeError(
            f"{prefix}: 'answer' is {_describe(answer)}, not a non-empty string",
            "make 'answer' the words of the text that state its answer, or drop it",
        )
    if messages is not None:
        raise ProbeError(
            f"{prefix}: 'answer' is given on a conversation sample",
            'use \'answer\' on plain-text samples ({"text": ..., "answer": ...}), or drop it',
        )
    if answer not in text:
        raise ProbeError(
            f"{prefix}: the answer {answer[:60]!r} does not occur in the sample's text",
            "make 'answer' a part of 'text' (its last occurrence is scored), or drop it",
        )
    _check_encodable(answer, prefix, "answer")
    return answer


CONVERSATION_FIELDS = ("prompt", "response", "system", "messages")
"""The fields of a conversation sample: ``prompt`` + ``response`` (optional ``system``), or
``messages``: a list of ``{"role", "content"}`` whose last turn is the ``assistant``'s response."""


def is_conversation(obj: dict[str, Any]) -> bool:
    """Whether a sample is a conversation: it has ``prompt`` and ``response``, or ``messages``."""
    has_pair = obj.get("prompt") is not None and obj.get("response") is not None
    return has_pair or obj.get("messages") is not None


def conversation_parts(obj: dict[str, Any], prefix: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A conversation sample's response and the turns before it (see :data:`CONVERSATION_FIELDS`)."""
    fix = (
        'give {"prompt": "...", "response": "..."} or {"messages": [{"role": "user", "content": '
        '"..."}, {"role": "assistant", "content": "..."}]}'
    )
    if obj.get("messages") is not None:
        turns = message_turns(obj["messages"], prefix, fix)
        if turns[-1][0] != "assistant":
            raise ProbeError(
                f"{prefix}: the last message's role is {turns[-1][0]!r}, not 'assistant'",
                "end 'messages' with the assistant's response (the scored text)",
            )
        return turns[-1][1], tuple(turns[:-1])
    parts = {}
    for name in ("system", "prompt", "response"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ProbeError(f"{prefix}: {name!r} is {_describe(value)}, not a string", fix)
        parts[name] = value
    context = (("system", parts["system"]),) if parts["system"] is not None else ()
    return str(parts["response"]), (*context, ("user", str(parts["prompt"])))


def message_turns(raw: Any, prefix: str, fix: str) -> list[tuple[str, str]]:
    """The ``(role, content)`` turns of a ``messages`` list of two or more; :class:`ProbeError`
    (an :class:`InputError`) naming ``prefix`` and the first malformed turn otherwise."""
    if not isinstance(raw, list) or len(raw) < 2:
        raise ProbeError(f"{prefix}: 'messages' is not a list of two or more turns", fix)
    turns: list[tuple[str, str]] = []
    for number, turn in enumerate(raw, start=1):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if not isinstance(role, str) or not isinstance(content, str):
            raise ProbeError(
                f"{prefix}: message {number} is not an object with string 'role' and 'content'",
                fix,
            )
        turns.append((role, content))
    return turns


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


def _read_txt_dir(root: Path, warnings: list[str], limit: int) -> list[Record]:
    records: list[Record] = []
    budget = _Budget(root, limit)
    ignored: list[str] = []
    empty_categories: list[str] = []
    try:
        with os.scandir(root) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise ProbeError(f"cannot list probe folder {root}: {exc.strerror}", "check it") from None
    for entry in entries:
        if entry.is_dir():
            found = _read_category_dir(root, Path(entry.path), entry.name, ignored, budget)
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
            "put one sample per .txt file in <folder>/<category>/; " + ACCEPTED,
        )
    return records


@dataclass
class _Budget:
    """What is left of the bytes and files a probe folder may hold."""

    root: Path
    limit: int
    n_bytes: int = 0
    files_left: int = MAX_TXT_FILES

    def take_bytes(self, n_bytes: int) -> None:
        self.n_bytes += n_bytes
        if self.n_bytes > self.limit:
            raise over_folder_limit(self.root, "probe folder", self.limit)

    def take_file(self) -> None:
        self.files_left -= 1
        if self.files_left < 0:
            raise ProbeError(
                f"probe folder {self.root} holds more than {MAX_TXT_FILES:,} .txt files",
                "put the samples in one JSONL file (one JSON object per line) instead",
            )


def _read_category_dir(
    root: Path, folder: Path, category: str, ignored: list[str], budget: _Budget
) -> list[Record]:
    records: list[Record] = []
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
            budget.take_file()
            data = read_bytes(full, what=_WHAT, limit=budget.limit)
            budget.take_bytes(len(data))
            text = _decode_txt(data, full)
            sample_id = rel[: -len(".txt")]
            records.append(Record(sample_id, category, text, None, f"file {rel}"))
    return records


def _decode_txt(data: bytes, path: Path) -> str:
    """A .txt file's text without a leading BOM; a bad byte names its byte offset."""
    skipped = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        hint = " (it looks like UTF-16)" if utf16 else ""
        raise ProbeError(
            f"{path} byte offset {exc.start + skipped}: bytes are not valid UTF-8{hint}",
            "re-encode the file as UTF-8 (e.g. iconv -f <encoding> -t UTF-8)",
        ) from None


# --------------------------------------------------------------------------- tables


def _require_columns(columns: Sequence[str], path: Path, fields: Fields) -> None:
    listed = ", ".join(repr(c) for c in columns) or "none"
    conversation = "messages" in columns or {"prompt", "response"} <= set(columns)
    if fields.text not in columns and not conversation:
        raise ProbeError(
            f"{path} has no column {fields.text!r} for the text (columns: {listed})",
            "pass --text-field NAME naming the text column",
        )
    if fields.category not in columns:
        raise ProbeError(
            f"{path} has no column {fields.category!r} for the category (columns: {listed})",
            "pass --category-field NAME naming the category column",
        )


def _wanted_columns(columns: Sequence[str], fields: Fields) -> list[str]:
    wanted = [fields.category]
    # not "answer": in a dataset that column is usually something else (a quiz's number, a
    # label); a probe names its answer in a JSONL file, the probe format lmassay defines
    for optional in (fields.text, fields.id, "source", *CONVERSATION_FIELDS):
        if optional in columns and optional not in wanted:
            wanted.append(optional)
    return wanted


def _read_parquet_table(path: Path, fields: Fields, limit: int) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_regular(path, what=_WHAT, limit=limit)
    try:
        columns = list(pq.read_schema(path).names)
        _require_columns(columns, path, fields)
        return pq.read_table(path, columns=_wanted_columns(columns, fields))
    except (pa.ArrowException, OSError) as exc:
        raise ProbeError(
            f"cannot read parquet file {path}: {exc}", "check that it is a valid parquet file"
        ) from None


def _read_hf_table(path: Path, fields: Fields, split: str | None, limit: int) -> pa.Table:
    try:
        import datasets
    except ImportError:
        raise ProbeError(
            f"{path} is a saved Hugging Face dataset but the 'datasets' package is missing",
            "pip install datasets",
        ) from None
    check_folder(path, what="saved dataset", limit=limit)
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


def _records_from_table(table: pa.Table, path: Path, fields: Fields) -> list[Record]:
    return records_from_rows(table.to_pylist(), str(path), fields)


def records_from_rows(rows: Iterable[dict[str, Any]], label: str, fields: Fields) -> list[Record]:
    """Records of table rows (dicts) read from ``label``, row ids ``row-N`` where none is given."""
    records: list[Record] = []
    path = Path(label)
    for index, row in enumerate(rows):
        if index == 0:
            _require_columns(list(row), path, fields)
        if row.get(fields.text) is None and is_conversation(row):
            row.pop(fields.text, None)  # a conversation row of a table with a text column too
        row.pop("answer", None)  # a table's "answer" column is not a probe's answer (see above)
        records.append(_record_from_mapping(row, path, f"row {index}", f"row-{index}", fields))
    if not records:
        raise ProbeError(f"{label} has no rows", "point --probes at a non-empty dataset")
    return records
