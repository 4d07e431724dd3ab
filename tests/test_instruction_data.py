"""The shared dataset reader: every source gives the same rows; the instruction formats; errors."""

from __future__ import annotations

import json

import pytest

from lmassay.digests import digest_file
from lmassay.errors import InputError
from lmassay.instruction_data import (
    InstructionPair,
    count_rows,
    iter_located_rows,
    iter_rows,
    pair_from_row,
    row_text,
    source_digest,
)

ROWS = [
    {"instruction": "Name the capital.", "input": "Of Vell.", "output": "Ostra."},
    {"prompt": "Who wrote it?", "response": "Mara Quell."},
    {"prompt": "Finish: the sky", "completion": " is grey."},
    {"question": "Where?", "answer": "Here."},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."},
        ]
    },
    {"text": "plain text", "label": "keep"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_parquet_and_saved_dataset_give_the_same_rows(tmp_path):
    import datasets

    simple = [{"text": f"t{i}", "label": "keep" if i % 2 else "remove"} for i in range(2500)]
    jsonl = _jsonl(tmp_path / "d.jsonl", simple)
    ds = datasets.Dataset.from_list(simple)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(
        str(tmp_path / "dict")
    )
    for source in (jsonl, tmp_path / "d.parquet", tmp_path / "saved"):
        assert list(iter_rows(source)) == simple
        assert count_rows(source) == len(simple)
    assert [row["text"] for row in iter_rows(tmp_path / "dict", split="test")] == ["t0", "t1", "t2"]
    with pytest.raises(InputError, match="has splits test, train"):
        list(iter_rows(tmp_path / "dict"))
    assert source_digest(jsonl) == digest_file(jsonl)
    assert source_digest("hf:org/name") is None
    places = [where for where, _ in iter_located_rows(jsonl)]
    assert places[6] == f"{jsonl} line 7"


def test_instruction_formats():
    pairs = [pair_from_row(row, f"row {i}") for i, row in enumerate(ROWS[:5])]
    assert pairs == [
        InstructionPair("Name the capital.", "Ostra.", "Of Vell."),
        InstructionPair("Who wrote it?", "Mara Quell."),
        InstructionPair("Finish: the sky", " is grey."),
        InstructionPair("Where?", "Here."),
        InstructionPair("Hi?", "Hello."),
    ]
    assert pairs[0].prompt() == "Name the capital.\n\nOf Vell."
    assert row_text(ROWS[1], None, "r") == "Who wrote it?\n\nMara Quell."
    assert row_text(ROWS[5], None, "r") == "plain text"
    assert row_text(ROWS[5], "label", "r") == "keep"
    with pytest.raises(InputError, match=r"r: no instruction pair \(fields: 'text', 'label'\)"):
        pair_from_row(ROWS[5], "r")
    with pytest.raises(InputError, match="no 'body' field"):
        row_text(ROWS[5], "body", "r")
    with pytest.raises(InputError, match="'response' is int"):
        pair_from_row({"prompt": "a", "response": 3}, "r")
    with pytest.raises(InputError, match="no user turn followed by an assistant turn"):
        pair_from_row({"messages": [{"role": "assistant", "content": "x"}] * 2}, "r")
    with pytest.raises(InputError, match="not a list of two or more turns"):
        pair_from_row({"messages": [{"role": "user", "content": "x"}]}, "r")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no rows"),
        ("\n  \n", "holds no rows"),
        ('{"text": "a"}\nnot json\n', "line 2: invalid JSON"),
        ('["a"]\n', "line 1: expected a JSON object"),
    ],
)
def test_bad_jsonl(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        list(iter_rows(path))


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list(iter_rows(tmp_path / "nope.jsonl"))
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="not in a recognised format"):
        list(iter_rows(tmp_path / "data.csv"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="not a dataset saved by datasets"):
        list(iter_rows(tmp_path / "folder"))
