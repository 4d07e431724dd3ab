"""Probe suites (issue 13 §1): hf: datasets from local dataset repositories, suite files and their
errors, the built-in suites, probes build / ls and the digest check of a built folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lmassay.attest.hub_probes import parse_hf
from lmassay.attest.probes import load_probes, probes_digest
from lmassay.attest.suite_build import build_suite, list_suites
from lmassay.cli import app
from lmassay.errors import ProbeError

runner = CliRunner()

QUESTIONS = [
    ("What is the capital of France?", ["Paris", "Rome"], 0, "geography"),
    ("What is the capital of Italy?", ["Paris", "Rome"], 1, "geography"),
    ("Which planet is largest?", ["Jupiter", "Mars"], 0, "astronomy"),
    ("Which planet is red?", ["Jupiter", "Mars"], 1, "astronomy"),
    ("What is H2O?", ["water", "salt"], 0, "chemistry"),
    ("What is NaCl?", ["water", "salt"], 1, "chemistry"),
]


def _dataset_repo(root: Path) -> Path:
    """A local dataset repository in the hub's layout: data/{split}-00000-of-00001.parquet, with a
    class-label-free subject column, a list column and an index."""
    for split, rows in (("test", QUESTIONS * 3), ("validation", QUESTIONS[:2])):
        table = pa.table(
            {
                "question": [f"{q} ({i})" for i, (q, _, _, _) in enumerate(rows)],
                "choices": [c for _, c, _, _ in rows],
                "answer": [a for _, _, a, _ in rows],
                "subject": [s for _, _, _, s in rows],
            }
        )
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset_repo(tmp_path_factory.mktemp("hub") / "quiz")


def test_hf_spec_parsing(tmp_path: Path) -> None:
    spec = parse_hf("hf:allenai/ai2_arc:ARC-Challenge@refs/convert/parquet")
    assert (spec.name, spec.config, spec.revision, spec.local) == (
        "allenai/ai2_arc",
        "ARC-Challenge",
        "refs/convert/parquet",
        False,
    )
    assert parse_hf("hf:gpt2-data").name == "gpt2-data"
    assert parse_hf(f"hf:{tmp_path}").local
    for bad in ("hf:", "hf:a/b/c", "hf:a/b:", "hf:a/b@", "hf:./missing-folder"):
        with pytest.raises(ProbeError):
            parse_hf(bad)


def test_hf_local_dataset_repo(repo: Path) -> None:
    probes = load_probes(
        f"hf:{repo}", split="test", text_field="question", category_field="subject"
    )
    assert probes.format == "hf"
    assert probes.categories == {"astronomy": 6, "chemistry": 6, "geography": 6}
    [source] = probes.sources
    assert source["split"] == "test" and source["n_samples"] == 18
    assert source["local_digest"].startswith("sha256:") and source["commit"] is None
    # the split is a required choice, and a missing column names the flag that fixes it
    with pytest.raises(ProbeError, match=r"splits 'test', 'validation'.*--split"):
        load_probes(f"hf:{repo}", text_field="question", category_field="subject")
    with pytest.raises(ProbeError, match=r"no column 'text'.*--text-field"):
        load_probes(f"hf:{repo}", split="test", category_field="subject")
    with pytest.raises(ProbeError, match="split 'train'"):
        load_probes(f"hf:{repo}", split="train", text_field="question", category_field="subject")


def test_hf_hub_id_offline_is_one_error_naming_the_dataset() -> None:
    # conftest sets HF_HUB_OFFLINE=1: the id cannot be resolved nor found in the cache
    with pytest.raises(ProbeError, match="hf:nobody/no-such-set") as caught:
        load_probes("hf:nobody/no-such-set", split="test")
    assert "\n" not in caught.value.one_line("attest")


def _suite_file(folder: Path, repo: Path, **override: object) -> Path:
    shutil.copytree(repo, folder / "quiz", dirs_exist_ok=True)
    chat = folder / "chat.jsonl"
    chat.write_text(
        "".join(
            json.dumps(
                {"id": f"c{i}", "category": "advice", "prompt": f"Q{i}?", "response": f"A{i}."}
            )
            + "\n"
            for i in range(6)
        ),
        "utf-8",
    )
    source = {
        "id": "quiz",
        "dataset": "quiz",
        "split": "test",
        "text": "Question: {{ question }}\nAnswer: {{ choices[answer] }}",
        "category": "quiz/{{ subject }}",
        "n": 4,
        "seed": 1,
        "licence": "CC0",
    }
    source.update(override)
    suite = {
        "name": "mini",
        "description": "a test suite",
        "sources": [
            source,
            {"id": "chat", "file": "chat.jsonl", "prompt": "{{ prompt }}",
             "response": "{{ response }}", "category_field": "category"},
        ],
    }  # fmt: skip
    path = folder / "mini.yaml"
    import yaml

    path.write_text(yaml.safe_dump(suite, sort_keys=False), "utf-8")
    return path


def test_suite_file_templates_categories_and_subsampling(tmp_path: Path, repo: Path) -> None:
    path = _suite_file(tmp_path, repo)
    probes = load_probes(str(path))
    assert probes.format == "suite" and probes.suite == "mini"
    assert probes.categories == {
        "advice": 6, "quiz/astronomy": 4, "quiz/chemistry": 4, "quiz/geography": 4,
    }  # fmt: skip
    texts = {s.text for s in probes.samples}
    assert "Question: What is the capital of Italy? (1)\nAnswer: Rome" in texts or any(
        t.endswith("Answer: Rome") for t in texts
    )
    chat = [s for s in probes.samples if s.category == "advice"]
    assert all(s.messages and s.messages[0][0] == "user" for s in chat)
    assert chat[0].text.startswith("A") and chat[0].messages[0][1].startswith("Q")
    assert [s["id"] for s in probes.sources] == ["quiz", "chat"]
    assert probes.sources[0]["n_rows_read"] == 18 and probes.sources[0]["n_samples"] == 12
    # the choice depends on the seed only: the same again, another seed another set
    assert load_probes(str(path)).digest == probes.digest
    other = load_probes(str(_suite_file(tmp_path / "b", repo, seed=2)))
    assert other.digest != probes.digest


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"text": "{{ nonexistent }}"}, "template failed.*fields: answer, choices"),
        ({"text": "{{ unclosed"}, "template error"),
        ({"split": None}, "needs 'split'"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"n": 0}, "'n' must be 1 or more"),
        ({"category": None}, "one of 'category' and 'category_field'"),
        ({"dataset": "missing-folder"}, "cannot load|hf:missing-folder"),
    ],
)
def test_suite_file_errors_name_the_source(
    tmp_path: Path, repo: Path, override: dict, needle: str
) -> None:
    path = _suite_file(tmp_path, repo, **override)
    with pytest.raises(ProbeError, match=needle) as caught:
        load_probes(str(path))
    assert "quiz" in str(caught.value) or "source 1" in str(caught.value)


def test_bad_yaml_and_unknown_builtin(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", "utf-8")
    with pytest.raises(ProbeError, match="not valid YAML"):
        load_probes(str(bad))
    with pytest.raises(ProbeError, match=r"no built-in suite 'nope'.*offline"):
        load_probes("builtin:nope")


def test_builtin_offline_suite_is_shipped_small_and_public_domain() -> None:
    probes = load_probes("builtin:offline")
    assert len(probes) == 360 and len(probes.categories) == 9
    assert set(probes.categories.values()) == {40}
    shipped = Path(__file__).parents[1] / "src/lmassay/suites/offline.jsonl"
    assert shipped.stat().st_size <= 1_000_000
    assert "public domain" in probes.sources[0]["licence"]
    # the shipped file is what the builder writes: its digest is pinned here
    assert probes_digest(probes.samples).value == probes.digest.value


def test_builtin_suites_are_listed_with_sources_and_licences() -> None:
    listed = {info.name: info for info in list_suites()}
    assert {"general", "knowledge", "social-bias", "offline", "refusal"} <= set(listed)
    assert listed["offline"].offline and not listed["knowledge"].offline
    knowledge = dict((i, w) for i, w, _ in listed["knowledge"].sources)
    assert "@741b8276f2d1" in knowledge["truthfulqa"]  # pinned revisions show
    result = runner.invoke(app, ["probes", "ls"])
    assert result.exit_code == 0, result.output
    assert "builtin:social-bias" in result.output and "licence:" in result.output


def test_build_writes_probes_and_manifest_and_the_digest_is_checked(
    tmp_path: Path, repo: Path
) -> None:
    suite = _suite_file(tmp_path, repo)
    out = tmp_path / "built"
    result = runner.invoke(app, ["probes", "build", str(suite), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "suite.json").read_text("utf-8"))
    assert manifest["schema"] == "lmassay.suite/v1" and manifest["n_samples"] == 18
    assert manifest["sources"][0]["local_digest"].startswith("sha256:")
    again = load_probes(str(out))
    direct = load_probes(str(suite))
    assert again.format == "suite-folder" and again.digest == direct.digest
    assert again.digest.value == manifest["digest"]["value"]
    # one changed character in probes.jsonl is caught
    probes_file = out / "probes.jsonl"
    probes_file.write_text(probes_file.read_text("utf-8").replace("Answer", "Answr", 1), "utf-8")
    with pytest.raises(ProbeError, match=r"suite.json records"):
        load_probes(str(out))
    result = runner.invoke(
        app, ["probes", "build", str(tmp_path / "missing.yaml"), "--out", str(out)]
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "probes build failed: suite file" in result.stderr


def test_build_builtin_by_name(tmp_path: Path) -> None:
    probes = build_suite("refusal", tmp_path / "refusal")
    assert len(probes) == 60 and all(s.messages for s in probes.samples)
    assert load_probes(str(tmp_path / "refusal")).digest == probes.digest


def test_conversation_rows_in_parquet_and_jsonl(tmp_path: Path) -> None:
    table = pa.table(
        {"prompt": ["Hi?", "Yo?"], "response": ["Hello.", "Hey."], "category": ["a", "b"]}
    )
    pq.write_table(table, tmp_path / "chat.parquet")
    probes = load_probes(tmp_path / "chat.parquet", min_per_category=1)
    assert [(s.text, s.messages) for s in probes.samples] == [
        ("Hello.", (("user", "Hi?"),)),
        ("Hey.", (("user", "Yo?"),)),
    ]
    lines = tmp_path / "m.jsonl"
    lines.write_text(
        json.dumps({"category": "a", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."}]}) + "\n"
        + json.dumps({"category": "a", "messages": [{"role": "user", "content": "Hi?"},
                                                    {"role": "user", "content": "?"}]}) + "\n",
        "utf-8",
    )  # fmt: skip
    with pytest.raises(ProbeError, match="line 2: the last message's role is 'user'"):
        load_probes(lines)
