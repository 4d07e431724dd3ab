"""Tests of lmassay.attest.probes: formats, digests, subsampling and validation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from lmassay.attest.probes import (
    ProbeSample,
    ProbeSet,
    load_probes,
    probes_digest,
    write_probes_jsonl,
)
from lmassay.errors import InputError, ProbeError

CATEGORIES = ("chemistry", "geography", "history")


def corpus() -> list[ProbeSample]:
    """3 categories x 6 samples; ids match the txt-dir convention "<category>/<name>"."""
    samples = []
    for category in CATEGORIES:
        for i in range(6):
            text = f"  {category} fact {i}: café — ∑ 日本\r\nsecond line\n"
            samples.append(ProbeSample(f"{category}/s{i}", category, text))
    return samples


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="")
    return path


def write_txt_dir(root: Path, samples: list[ProbeSample]) -> Path:
    for sample in samples:
        target = root / f"{sample.id}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sample.text.encode("utf-8"))
    return root


def as_columns(samples: list[ProbeSample]) -> dict[str, list[str]]:
    return {
        "id": [s.id for s in samples],
        "category": [s.category for s in samples],
        "text": [s.text for s in samples],
    }


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def write_hf(path: Path, columns: dict[str, list[Any]]) -> Path:
    import datasets

    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def message(exc: pytest.ExceptionInfo[ProbeError]) -> str:
    return str(exc.value)


# --------------------------------------------------------------------------- formats


def test_every_format_gives_the_same_samples_and_digest(tmp_path: Path) -> None:
    samples = corpus()
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    loaded = {
        "jsonl": load_probes(write_probes_jsonl(shuffled, tmp_path / "p.jsonl")),
        "txt-dir": load_probes(write_txt_dir(tmp_path / "txt", shuffled)),
        "parquet": load_probes(write_parquet(tmp_path / "p.parquet", as_columns(shuffled))),
        "hf-dataset": load_probes(write_hf(tmp_path / "hf", as_columns(shuffled))),
    }
    expected = tuple(sorted(samples, key=lambda s: (s.category, s.id)))
    for fmt, probes in loaded.items():
        assert probes.format == fmt
        assert probes.samples == expected, fmt
        assert probes.digest == probes_digest(samples), fmt
        assert probes.categories == {c: 6 for c in CATEGORIES}
        assert probes.warnings == (), fmt
    assert len({p.digest for p in loaded.values()}) == 1


def test_digest_is_the_documented_serialisation(tmp_path: Path) -> None:
    import hashlib

    samples = corpus()
    probes = load_probes(write_probes_jsonl(samples, tmp_path / "p.jsonl"))
    payload = "".join(
        json.dumps([s.id, s.category, s.text], ensure_ascii=False) + "\n" for s in probes.samples
    )
    assert probes.digest.algorithm == "sha256"
    assert probes.digest.value == hashlib.sha256(payload.encode("utf-8")).hexdigest()


def test_texts_are_kept_exactly_and_bytes_counted(tmp_path: Path) -> None:
    text = "  leading spaces\r\nwindows\rold mac\u2028ls\ttab  \n\n"
    rows = [{"text": text, "category": "a"}, {"text": "ok", "category": "a"}]
    probes = load_probes(write_jsonl(tmp_path / "p.jsonl", rows), min_per_category=1)
    sample = next(s for s in probes.samples if s.id == "line-1")
    assert sample.text == text
    assert sample.n_bytes == len(text.encode("utf-8"))


def test_missing_ids_are_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"text": "one", "category": "a"},
            "",
            {"text": "two", "category": "a", "id": 7, "source": "wiki"},
            {"text": "three", "category": "a", "id": None},
        ],
    )
    probes = load_probes(path, min_per_category=1)
    assert [s.id for s in probes.samples] == ["7", "line-1", "line-4"]
    assert probes.samples[0].source == "wiki"


def test_field_name_flags(tmp_path: Path) -> None:
    rows = [{"body": f"t{i}", "topic": "x" if i % 2 else "y", "key": f"k{i}"} for i in range(10)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    probes = load_probes(path, text_field="body", category_field="topic", id_field="key")
    assert probes.categories == {"x": 5, "y": 5}
    assert {s.id for s in probes.samples} == {f"k{i}" for i in range(10)}
    assert probes.to_json()["text_field"] == "body"
    with pytest.raises(ProbeError, match="--category-field") as exc:
        load_probes(path, text_field="body")
    assert "line 1" in message(exc) and "p.jsonl" in message(exc)

    columns = {"body": [r["body"] for r in rows], "topic": [r["topic"] for r in rows]}
    parquet = write_parquet(tmp_path / "p.parquet", columns)
    assert load_probes(parquet, text_field="body", category_field="topic").categories == {
        "x": 5,
        "y": 5,
    }
    with pytest.raises(ProbeError, match="--text-field") as exc:
        load_probes(parquet)
    assert "'body'" in message(exc) and "'topic'" in message(exc)  # available columns listed
    hf = write_hf(tmp_path / "hf", columns)
    with pytest.raises(ProbeError, match="--category-field") as exc:
        load_probes(hf, text_field="body")
    assert "'topic'" in message(exc)
    probes = load_probes(hf, text_field="body", category_field="topic")
    assert probes.samples[0].id.startswith("row-")


def test_dataset_dict_split(tmp_path: Path) -> None:
    import datasets

    samples = corpus()
    train = datasets.Dataset.from_dict(as_columns(samples))
    test = datasets.Dataset.from_dict(as_columns(samples[:6]))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ProbeError, match="--split") as exc:
        load_probes(tmp_path / "dd")
    assert "'train'" in message(exc) and "'test'" in message(exc)
    with pytest.raises(ProbeError, match="no split 'dev'"):
        load_probes(tmp_path / "dd", split="dev")
    probes = load_probes(tmp_path / "dd", split="train")
    assert probes.digest == probes_digest(samples)
    assert probes.to_json()["split"] == "train"
    assert len(load_probes(tmp_path / "dd", split="test", min_per_category=1)) == 6


def test_split_on_a_file_is_ignored_with_a_warning(tmp_path: Path) -> None:
    probes = load_probes(write_probes_jsonl(corpus(), tmp_path / "p.jsonl"), split="train")
    assert any("split 'train' ignored" in w for w in probes.warnings)


def test_to_json_is_serialisable(tmp_path: Path) -> None:
    probes = load_probes(write_probes_jsonl(corpus(), tmp_path / "p.jsonl"), per_category=4)
    doc = json.loads(json.dumps(probes.to_json()))
    assert doc["format"] == "jsonl"
    assert doc["n_samples"] == 12
    assert doc["categories"] == {c: 4 for c in CATEGORIES}
    assert doc["digest"] == {"algorithm": "sha256", "value": probes.digest.value}
    assert doc["per_category"] == 4 and doc["seed"] == 0
    assert set(doc) >= {
        "path",
        "format",
        "digest",
        "n_samples",
        "categories",
        "warnings",
        "text_field",
        "category_field",
        "per_category",
        "seed",
    }


def test_write_probes_jsonl_round_trips_sources(tmp_path: Path) -> None:
    samples = [
        ProbeSample(f"i{i}", "c", f"text {i}", source="gen" if i else None) for i in range(5)
    ]
    probes = load_probes(write_probes_jsonl(samples, tmp_path / "out" / "p.jsonl"))
    assert list(probes.samples) == samples


# --------------------------------------------------------------------------- subsampling


def big_corpus(n: int = 40) -> list[ProbeSample]:
    return [ProbeSample(f"{c}-{i:03d}", c, f"{c} text {i}") for c in CATEGORIES for i in range(n)]


def ids(probes: ProbeSet) -> set[str]:
    return {s.id for s in probes.samples}


def test_subsampling_is_deterministic_and_order_independent(tmp_path: Path) -> None:
    samples = big_corpus()
    shuffled = samples[:]
    random.Random(3).shuffle(shuffled)
    a = load_probes(write_probes_jsonl(samples, tmp_path / "a.jsonl"), per_category=5, seed=11)
    b = load_probes(write_probes_jsonl(shuffled, tmp_path / "b.jsonl"), per_category=5, seed=11)
    again = load_probes(tmp_path / "a.jsonl", per_category=5, seed=11)
    assert a.categories == {c: 5 for c in CATEGORIES}
    assert ids(a) == ids(b) == ids(again)
    assert a.digest == b.digest
    other = load_probes(tmp_path / "a.jsonl", per_category=5, seed=12)
    assert ids(other) != ids(a)
    assert other.digest != a.digest


def test_subsampling_does_not_depend_on_other_categories(tmp_path: Path) -> None:
    samples = big_corpus()
    extra = [ProbeSample(f"zoology-{i}", "zoology", f"z {i}") for i in range(30)]
    without = [s for s in samples if s.category != "history"]
    full = load_probes(write_probes_jsonl(samples + extra, tmp_path / "a.jsonl"), per_category=5)
    fewer = load_probes(write_probes_jsonl(without, tmp_path / "b.jsonl"), per_category=5)
    assert {i for i in ids(full) if i.startswith("chemistry")} == {
        i for i in ids(fewer) if i.startswith("chemistry")
    }


def test_larger_subsample_is_a_superset(tmp_path: Path) -> None:
    path = write_probes_jsonl(big_corpus(), tmp_path / "a.jsonl")
    assert ids(load_probes(path, per_category=5)) <= ids(load_probes(path, per_category=9))


def test_small_categories_keep_all_with_a_warning(tmp_path: Path) -> None:
    samples = big_corpus(10) + [ProbeSample(f"tiny-{i}", "tiny", "t") for i in range(3)]
    probes = load_probes(write_probes_jsonl(samples, tmp_path / "a.jsonl"), per_category=8)
    assert probes.categories["tiny"] == 3
    assert probes.categories["history"] == 8
    assert any("'tiny' (3)" in w and "per_category=8" in w for w in probes.warnings)


@pytest.mark.parametrize("bad", [0, -2])
def test_per_category_below_one_is_an_error(tmp_path: Path, bad: int) -> None:
    path = write_probes_jsonl(corpus(), tmp_path / "a.jsonl")
    with pytest.raises(ProbeError, match="per_category"):
        load_probes(path, per_category=bad)


def test_negative_seed_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="seed"):
        load_probes(write_probes_jsonl(corpus(), tmp_path / "a.jsonl"), seed=-1)


# --------------------------------------------------------------------------- validation


def good(i: int = 0, category: str = "a") -> dict[str, str]:
    return {"text": f"text {i}", "category": category}


def test_probe_error_is_an_input_error() -> None:
    assert issubclass(ProbeError, InputError)
    assert ProbeError("x", "y").exit_code == 2


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="does not exist") as exc:
        load_probes(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in message(exc)


def test_unrecognised_format(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("text,category\n")
    with pytest.raises(ProbeError, match="not in a recognised format") as exc:
        load_probes(path)
    assert "p.csv" in message(exc) and ".jsonl" in exc.value.fix


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(ProbeError, match="empty") as exc:
        load_probes(path)
    assert "p.jsonl" in message(exc)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [good(1), good(2), '{"text": "x", "category": '])
    with pytest.raises(ProbeError, match="line 3: invalid JSON") as exc:
        load_probes(path)
    assert "p.jsonl" in message(exc)


def test_json_array_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([good(1), good(2)], indent=1))
    with pytest.raises(ProbeError, match="JSON array"):
        load_probes(path)


@pytest.mark.parametrize("line", ['"just text"', "[1, 2]", "3", "null"])
def test_line_that_is_not_an_object(tmp_path: Path, line: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [good(1), line])
    with pytest.raises(ProbeError, match="line 2: expected a JSON object"):
        load_probes(path)


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"text": "x"}, "no 'category' field"),
        ({"text": "x", "category": None}, "is null"),
        ({"text": "x", "category": 3}, "is a number"),
        ({"text": "x", "category": ""}, "is an empty string"),
        ({"text": "x", "category": "   "}, "is an empty string"),
    ],
)
def test_bad_category(tmp_path: Path, row: dict[str, Any], pattern: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [good(1), good(2), row])
    with pytest.raises(ProbeError, match=pattern) as exc:
        load_probes(path)
    assert "p.jsonl line 3" in message(exc)
    assert "--category-field" in exc.value.fix


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"category": "a"}, "no 'text' field"),
        ({"category": "a", "text": None}, "is null"),
        ({"category": "a", "text": ["x"]}, "is an array"),
        ({"category": "a", "text": 5}, "is a number"),
    ],
)
def test_bad_text(tmp_path: Path, row: dict[str, Any], pattern: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [good(1), row])
    with pytest.raises(ProbeError, match=pattern) as exc:
        load_probes(path)
    assert "p.jsonl line 2" in message(exc)
    assert "--text-field" in exc.value.fix


def test_bad_id_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{**good(1), "id": [1]}])
    with pytest.raises(ProbeError, match="line 1: id field 'id' is an array"):
        load_probes(path)


def test_empty_texts_are_skipped_with_a_warning(tmp_path: Path) -> None:
    rows: list[Any] = [good(i) for i in range(6)]
    rows += [{"text": "", "category": "a", "id": "e1"}, {"text": " \n\t", "category": "b"}]
    probes = load_probes(write_jsonl(tmp_path / "p.jsonl", rows))
    assert len(probes) == 6
    warning = next(w for w in probes.warnings if w.startswith("skipped 2 empty texts"))
    assert "'e1'" in warning and "'line-8'" in warning


def test_empty_text_warning_lists_at_most_ten_ids(tmp_path: Path) -> None:
    rows: list[Any] = [good(i) for i in range(5)]
    rows += [{"text": "", "category": "a"} for _ in range(12)]
    probes = load_probes(write_jsonl(tmp_path / "p.jsonl", rows))
    warning = next(w for w in probes.warnings if w.startswith("skipped 12 empty texts"))
    assert warning.count("'line-") == 10 and "2 more" in warning


def test_only_empty_texts_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": " ", "category": "a"}] * 3)
    with pytest.raises(ProbeError, match="all 3 texts are empty") as exc:
        load_probes(path)
    assert "p.jsonl" in message(exc)


def test_non_utf8_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    good_line = json.dumps(good(1)).encode() + b"\n"
    path.write_bytes(good_line * 2 + b'{"text": "caf\xe9", "category": "a"}\n')
    with pytest.raises(ProbeError, match="line 3") as exc:
        load_probes(path)
    assert "p.jsonl" in message(exc) and "not valid UTF-8" in message(exc)
    assert "UTF-8" in exc.value.fix


def test_non_utf8_txt_names_the_byte_offset(tmp_path: Path) -> None:
    write_txt_dir(tmp_path / "d", corpus())
    (tmp_path / "d" / "history" / "bad.txt").write_bytes(b"abc\xff")
    with pytest.raises(ProbeError, match="byte offset 3") as exc:
        load_probes(tmp_path / "d")
    assert "bad.txt" in message(exc)


def test_utf16_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes((json.dumps(good(1)) + "\n").encode("utf-16"))
    with pytest.raises(ProbeError, match="UTF-16"):
        load_probes(path)


def test_lone_surrogate_escape_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [good(1), '{"text": "a\\ud800b", "category": "a"}'])
    with pytest.raises(ProbeError, match="line 2: text holds an unpaired surrogate"):
        load_probes(path)


def test_bom_is_accepted(tmp_path: Path) -> None:
    samples = corpus()
    jsonl = write_probes_jsonl(samples, tmp_path / "p.jsonl")
    jsonl.write_bytes(b"\xef\xbb\xbf" + jsonl.read_bytes())
    folder = write_txt_dir(tmp_path / "d", samples)
    first = folder / f"{samples[0].id}.txt"
    first.write_bytes(b"\xef\xbb\xbf" + first.read_bytes())
    for path in (jsonl, folder):
        probes = load_probes(path)
        assert probes.digest == probes_digest(samples)


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    rows = [{**good(i), "id": f"x{i}"} for i in range(5)] + [{**good(9), "id": "x2"}]
    with pytest.raises(ProbeError, match="duplicate id 'x2' at line 3 and line 6") as exc:
        load_probes(write_jsonl(tmp_path / "p.jsonl", rows))
    assert "p.jsonl" in message(exc)


def test_explicit_id_clashing_with_positional_id(tmp_path: Path) -> None:
    rows = [{**good(1), "id": "line-2"}, good(2)]
    with pytest.raises(ProbeError, match="duplicate id 'line-2' at line 1 and line 2"):
        load_probes(write_jsonl(tmp_path / "p.jsonl", rows))


def test_duplicate_ids_in_a_table_name_the_rows(tmp_path: Path) -> None:
    columns = {"id": ["a", "b", "a"], "category": ["c"] * 3, "text": ["x", "y", "z"]}
    with pytest.raises(ProbeError, match="duplicate id 'a' at row 0 and row 2") as exc:
        load_probes(write_parquet(tmp_path / "p.parquet", columns))
    assert "p.parquet" in message(exc)


def test_null_in_a_table_names_the_row(tmp_path: Path) -> None:
    columns: dict[str, list[Any]] = {"category": ["c", None, "c"], "text": ["x", "y", "z"]}
    with pytest.raises(ProbeError, match="row 1: category field 'category' is null") as exc:
        load_probes(write_hf(tmp_path / "saved", columns))
    assert "saved row 1" in message(exc)


def test_empty_table(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "category": []}), path)
    with pytest.raises(ProbeError, match="no rows"):
        load_probes(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ProbeError, match="cannot read parquet file") as exc:
        load_probes(path)
    assert "p.parquet" in message(exc)


def test_small_categories_warn(tmp_path: Path) -> None:
    rows = [good(i, "a") for i in range(6)] + [good(i, "b") for i in range(2)]
    probes = load_probes(write_jsonl(tmp_path / "p.jsonl", rows))
    assert probes.categories == {"a": 6, "b": 2}
    assert any("fewer than 5" in w and "'b' (2)" in w for w in probes.warnings)


def test_single_category_warns(tmp_path: Path) -> None:
    probes = load_probes(write_jsonl(tmp_path / "p.jsonl", [good(i) for i in range(6)]))
    assert any("only one category" in w for w in probes.warnings)


# --------------------------------------------------------------------------- txt folders


def test_txt_dir_nested_folders_and_ignored_files(tmp_path: Path) -> None:
    root = write_txt_dir(tmp_path / "d", corpus())
    (root / "history" / "deep" / "er").mkdir(parents=True)
    (root / "history" / "deep" / "er" / "x.txt").write_text("nested")
    (root / "history" / "notes.md").write_text("not a sample")
    (root / "README.md").write_text("about")
    (root / "history" / ".hidden.txt").write_text("skipped")
    (root / "empty").mkdir()
    probes = load_probes(root)
    assert "history/deep/er/x" in ids(probes)
    assert probes.categories == {"chemistry": 6, "geography": 6, "history": 7}
    assert any("ignored 2 non-.txt files" in w and "history/notes.md" in w for w in probes.warnings)
    assert any("without .txt files" in w and "empty" in w for w in probes.warnings)


def test_txt_in_root_is_an_error(tmp_path: Path) -> None:
    root = write_txt_dir(tmp_path / "d", corpus())
    (root / "orphan.txt").write_text("no category")
    with pytest.raises(ProbeError, match="has no category") as exc:
        load_probes(root)
    assert "orphan.txt" in message(exc) and "sub-folder" in exc.value.fix


def test_folder_without_samples(tmp_path: Path) -> None:
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "cat" / "a.md").write_text("x")
    with pytest.raises(ProbeError, match="holds no samples"):
        load_probes(tmp_path / "d")


def test_empty_txt_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    root = write_txt_dir(tmp_path / "d", corpus())
    (root / "history" / "blank.txt").write_text("")
    probes = load_probes(root)
    assert any("'history/blank'" in w for w in probes.warnings)
    assert probes.digest == probes_digest(corpus())


# --------------------------------------------------------------------------- scale


def test_large_jsonl_loads_with_subsampling(tmp_path: Path) -> None:
    rows = [
        {"text": f"sample number {i} " * 8, "category": f"cat{i % 7}", "id": f"s{i}"}
        for i in range(20_000)
    ]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    probes = load_probes(path, per_category=1000)
    assert len(probes) == 7000
