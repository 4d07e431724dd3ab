"""Datasets users bring to curate, bootstrap and tune: rows streamed from any source, and
instruction pairs read from the common formats.

Sources (:func:`iter_rows`), read with bounded memory:

- ``.jsonl`` / ``.json`` lines: line by line (through :func:`lmassay.bounded_read.iter_lines`, so a
  link to a device or an oversize file is refused before it is read);
- ``.parquet``: batch by batch (:meth:`pyarrow.parquet.ParquetFile.iter_batches`);
- a folder written by ``datasets``' ``save_to_disk`` (memory-mapped Arrow; a ``DatasetDict``
  needs ``split``);
- ``hf:ORG/NAME[:CONFIG][@REVISION]``: streamed from the hub by ``datasets`` (split ``train``
  unless another is given), as ``--probes hf:`` reads probe corpora
  (:mod:`lmassay.attest.hub_probes`).

Instruction formats (:func:`pair_from_row`): ``instruction`` / ``input`` / ``output`` (Alpaca),
``instruction`` / ``response``, ``prompt`` / ``response``, ``prompt`` / ``completion``,
``question`` / ``answer``, and ``messages`` (the first ``user`` turn and the ``assistant`` turn
after it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.bounded_read import DATA_LIMIT, check_folder, check_regular, iter_lines
from lmassay.digests import Digest, digest_file, digest_tree
from lmassay.errors import InputError

__all__ = [
    "HF_PREFIX",
    "InstructionPair",
    "count_rows",
    "iter_located_rows",
    "iter_rows",
    "pair_from_row",
    "row_text",
    "source_digest",
]

HF_PREFIX = "hf:"
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_BATCH_ROWS = 1024
_ACCEPTED = (
    "give a .jsonl file (one JSON object per line), a .parquet file, a folder saved by "
    "datasets' save_to_disk, or hf:ORG/NAME"
)
_PAIR_FIX = (
    "give each row instruction/output (optional input), instruction/response, prompt/response, "
    'prompt/completion, question/answer, or messages [{"role": "user", ...}, '
    '{"role": "assistant", ...}]'
)


@dataclass(frozen=True)
class InstructionPair:
    """One instruction and its response (``input``: the optional context an Alpaca row adds)."""

    instruction: str
    response: str
    input: str = ""

    def prompt(self) -> str:
        """The instruction, then a blank line and the input when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


# --------------------------------------------------------------------------- sources


def iter_rows(
    source: str | os.PathLike[str], *, split: str | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of ``source`` (see the module docstring), one dict at a time.

    Raises:
        InputError: the source is missing, in no recognised format, has a line that is not a JSON
            object (naming the line), or holds no rows.
    """
    for _, row in iter_located_rows(source, split=split):
        yield row


def iter_located_rows(
    source: str | os.PathLike[str], *, split: str | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each row of ``source``: ``where`` names it in messages
    (``"data.jsonl line 7"``, ``"data.parquet row 12"``)."""
    text = os.fspath(source)
    local = not text.startswith(HF_PREFIX)
    rows = _local_rows(Path(text), split) if local else _hub_rows(text, split)
    empty = True
    for where, row in rows:
        empty = False
        yield where, row
    if empty:
        raise InputError(f"dataset {text} holds no rows", "give a dataset with at least one row")


def count_rows(source: str | os.PathLike[str], *, split: str | None = None) -> int | None:
    """How many rows ``source`` holds, when that is cheap to know (for a progress bar): a JSONL
    file's non-blank lines, a parquet file's metadata, a saved dataset's length; None for ``hf:``."""
    text = os.fspath(source)
    if text.startswith(HF_PREFIX):
        return None
    path = Path(text)
    kind = _kind(path)
    if kind == "jsonl":
        return sum(1 for line in iter_lines(path, what="dataset", limit=DATA_LIMIT) if line.strip())
    if kind == "parquet":
        import pyarrow.parquet as pq

        check_regular(path, what="dataset", limit=DATA_LIMIT)
        return int(pq.ParquetFile(path).metadata.num_rows)
    return len(_load_saved(path, split))


def source_digest(source: str | os.PathLike[str]) -> Digest | None:
    """The content digest of a local source (a file's SHA-256, a folder's root digest over its
    files); None for an ``hf:`` id (record the id and revision instead)."""
    text = os.fspath(source)
    if text.startswith(HF_PREFIX):
        return None
    path = Path(text)
    if path.is_dir():
        return digest_tree(path)
    check_regular(path, what="dataset", limit=DATA_LIMIT)
    return digest_file(path)


def _kind(path: Path) -> str:
    if path.is_dir():
        return "saved"
    if not path.exists():
        raise InputError(f"dataset {path} does not exist", "check the path")
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise InputError(
        f"dataset {path} is not in a recognised format (suffix {suffix or 'none'!r})", _ACCEPTED
    )


def _local_rows(path: Path, split: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = _kind(path)
    if kind == "jsonl":
        yield from _jsonl_rows(path)
    elif kind == "parquet":
        yield from _parquet_rows(path)
    else:
        for number, row in enumerate(_load_saved(path, split), start=1):
            yield f"{path} row {number}", dict(row)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, raw in enumerate(iter_lines(path, what="dataset", limit=DATA_LIMIT), start=1):
        data = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
        where = f"{path} line {number}"
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"{where}: bytes are not valid UTF-8",
                "re-encode the file as UTF-8 (e.g. iconv -f <encoding> -t UTF-8)",
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno})",
                "make every line one JSON object",
            ) from None
        if not isinstance(row, dict):
            raise InputError(
                f"{where}: expected a JSON object, found {type(row).__name__}",
                "make every line one JSON object",
            )
        yield where, row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_regular(path, what="dataset", limit=DATA_LIMIT)
    try:
        file = pq.ParquetFile(path)
        number = 0
        for batch in file.iter_batches(batch_size=_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield f"{path} row {number}", row
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read parquet file {path}: {' '.join(str(exc).split())[:200]}",
            "check that it is a complete parquet file",
        ) from None


def _load_saved(path: Path, split: str | None) -> Any:
    import datasets

    check_folder(path, what="dataset folder", limit=DATA_LIMIT)
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(
            f"folder {path} is not a dataset saved by datasets' save_to_disk ({exc})", _ACCEPTED
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = ", ".join(sorted(loaded)) or "none"
        if split is None:
            if len(loaded) != 1:
                raise InputError(f"dataset {path} has splits {names}", "pass --split NAME")
            split = next(iter(loaded))
        if split not in loaded:
            raise InputError(
                f"dataset {path} has no split {split!r} (it has {names})", "pass --split NAME"
            )
        return loaded[split]
    return loaded


def _hub_rows(spec: str, split: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    from lmassay.attest.hub_probes import open_rows, parse_hf

    dataset = parse_hf(spec)
    rows, _, _ = open_rows(dataset, split or "train", streaming=not dataset.local)
    for number, row in enumerate(rows, start=1):
        yield f"{spec} row {number}", dict(row)


# --------------------------------------------------------------------------- formats


def pair_from_row(row: Mapping[str, Any], where: str) -> InstructionPair:
    """The instruction pair a row holds, in any of the formats in the module docstring.

    Raises:
        InputError: the row holds none of them, or a field is not a string; the message names
            ``where`` and the fields the row has.
    """
    if row.get("messages") is not None:
        return _pair_from_messages(row["messages"], where)
    for first, second in (
        ("instruction", "output"),
        ("instruction", "response"),
        ("prompt", "response"),
        ("prompt", "completion"),
        ("question", "answer"),
    ):
        if row.get(first) is not None and row.get(second) is not None:
            extra = row.get("input") if first == "instruction" else None
            return InstructionPair(
                _string(row, first, where),
                _string(row, second, where),
                _string(row, "input", where) if extra is not None else "",
            )
    raise InputError(f"{where}: no instruction pair (fields: {_names(row)})", _PAIR_FIX)


def _pair_from_messages(messages: Any, where: str) -> InstructionPair:
    from lmassay.attest.probe_readers import message_turns

    turns = message_turns(messages, where, _PAIR_FIX)
    for index, (role, content) in enumerate(turns[:-1]):
        if role == "user" and turns[index + 1][0] == "assistant":
            return InstructionPair(content, turns[index + 1][1])
    raise InputError(
        f"{where}: 'messages' has no user turn followed by an assistant turn", _PAIR_FIX
    )


def row_text(row: Mapping[str, Any], text_field: str | None, where: str) -> str:
    """The text a row stands for: ``text_field`` when given; else an instruction pair's prompt,
    a blank line and its response; else the ``text`` field."""
    if text_field is not None:
        if row.get(text_field) is None:
            raise InputError(
                f"{where}: no {text_field!r} field (fields: {_names(row)})",
                "pass --text-field NAME naming the field that holds the text",
            )
        return _string(row, text_field, where)
    if row.get("text") is None:
        try:
            pair = pair_from_row(row, where)
        except InputError:
            raise InputError(
                f"{where}: no 'text' field and no instruction pair (fields: {_names(row)})",
                "pass --text-field NAME, or give instruction/response style fields",
            ) from None
        return f"{pair.prompt()}\n\n{pair.response}"
    return _string(row, "text", where)


def _string(row: Mapping[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise InputError(
            f"{where}: {name!r} is {type(value).__name__}, not a string",
            f"make {name!r} a string in every row",
        )
    return value


def _names(row: Mapping[str, Any]) -> str:
    names = ", ".join(repr(str(name)) for name in list(row)[:12])
    return names or "none"
