"""Fuzzing the readers of untrusted files: probe corpora and safetensors headers.

Whatever the bytes, a reader either parses them or raises :class:`LmassayError` naming the file —
never another exception (which the CLI would print as ``unexpected …``).  Each test is bounded
(``max_examples``, a temporary folder per example) so the file runs in about 15 s on 2 cores.
"""

from __future__ import annotations

import json
import string
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmassay.attest.checkpoint_reader import safetensors_entries
from lmassay.attest.probes import load_probes
from lmassay.errors import LmassayError

BOUNDED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Records that look like probes: the expected fields, of any JSON type, and other fields.
field_values = st.text(max_size=40) | json_values
records = st.fixed_dictionaries(
    {},
    optional={"text": field_values, "category": field_values, "id": field_values},
).flatmap(
    lambda fixed: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
        lambda extra: {**extra, **fixed}
    )
)
jsonl_lines = st.lists(
    st.one_of(
        records.map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=40),
        st.just(""),
    ),
    max_size=8,
)


def _assert_parses_or_names(path: Path, read) -> None:
    """``read(path)`` succeeds or raises LmassayError naming something under ``path``."""
    try:
        read(path)
    except LmassayError as exc:
        assert str(path.parent) in str(exc) or str(path) in str(exc), str(exc)


def _load(path: Path) -> None:
    load_probes(path, min_per_category=0)


# --------------------------------------------------------------------------------------------
# Probe loaders


@BOUNDED
@given(data=st.binary(max_size=400))
def test_jsonl_of_random_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes.jsonl"
        path.write_bytes(data)
        _assert_parses_or_names(path, _load)


@BOUNDED
@given(lines=jsonl_lines, encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_jsonl_of_random_records(lines, encoding):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes.jsonl"
        path.write_bytes("\n".join(lines).encode(encoding, errors="replace"))
        _assert_parses_or_names(path, _load)


names = st.text(alphabet=string.ascii_letters + string.digits + "._- ", min_size=1, max_size=10)


@BOUNDED
@given(
    files=st.lists(
        st.tuples(names, names, st.binary(max_size=60) | st.text(max_size=60).map(str.encode)),
        max_size=6,
    ),
    loose=st.lists(st.tuples(names, st.binary(max_size=20)), max_size=2),
)
def test_txt_folder_of_random_files(files, loose):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "probes"
        root.mkdir()
        for category, name, data in files:
            if category in (".", ".."):
                continue
            folder = root / category
            if folder.exists() and not folder.is_dir():
                continue
            folder.mkdir(exist_ok=True)
            if name not in (".", "..") and not (folder / f"{name}.txt").is_dir():
                (folder / f"{name}.txt").write_bytes(data)
        for name, data in loose:  # files beside the category folders
            if name not in (".", "..") and not (root / name).is_dir():
                (root / name).write_bytes(data)
        _assert_parses_or_names(root / "x", lambda _: load_probes(root, min_per_category=0))


@BOUNDED
@given(data=st.binary(max_size=400))
def test_parquet_named_file_of_random_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes.parquet"
        path.write_bytes((b"PAR1" + data + b"PAR1") if data[:1] == b"P" else data)
        _assert_parses_or_names(path, _load)


@BOUNDED
@given(
    columns=st.dictionaries(
        st.sampled_from(["text", "category", "id", "other"]),
        st.sampled_from(["int", "str", "float", "null", "list"]),
        max_size=4,
    ),
    rows=st.integers(0, 5),
)
def test_parquet_with_columns_of_any_type(columns, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    make = {
        "int": lambda i: i,
        "str": lambda i: f"t{i}",
        "float": lambda i: i / 3,
        "null": lambda i: None,
        "list": lambda i: [i],
    }
    table = pa.table({name: [make[kind](i) for i in range(rows)] for name, kind in columns.items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probes.parquet"
        pq.write_table(table, path)
        _assert_parses_or_names(path, _load)


# --------------------------------------------------------------------------------------------
# The safetensors header reader (every model load, --offload stream and diff go through it)


def _safetensors(header: bytes, data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def _read_header(path: Path) -> None:
    safetensors_entries(path)


@BOUNDED
@given(data=st.binary(max_size=200))
def test_safetensors_of_random_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        _assert_parses_or_names(path, _read_header)


@BOUNDED
@given(
    length=st.integers(0, 2**64 - 1) | st.integers(0, 300),
    header=st.binary(max_size=200),
)
def test_safetensors_with_random_header_lengths(length, header):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(_safetensors(header, b"\0" * 16, length))
        _assert_parses_or_names(path, _read_header)


offsets = st.lists(st.integers(-5, 64) | json_scalars, max_size=3)
entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "F16", "I8", "BOOL", "XX"]) | json_values,
        "shape": st.lists(st.integers(-2, 8), max_size=3) | json_values,
        "data_offsets": offsets,
    },
)
headers = (
    st.dictionaries(
        st.text(max_size=10) | st.just("__metadata__"), entries | json_values, max_size=4
    )
    | json_values
)


@BOUNDED
@given(header=headers, data_size=st.integers(0, 80))
def test_safetensors_with_random_json_headers(header, data_size):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(_safetensors(json.dumps(header).encode(), b"\0" * data_size))
        _assert_parses_or_names(path, _read_header)


def test_a_header_nested_past_the_recursion_limit_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_safetensors(b"[" * 100_000, b""))
    with pytest.raises(LmassayError, match="nested too deeply"):
        safetensors_entries(path)
