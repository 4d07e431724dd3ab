"""lmassay bootstrap: the mechanics on a tiny random model (quality is a benchmark, not a test)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmassay.bootstrap.dedupe import Deduplicator, jaccard, shingles
from lmassay.bootstrap.fewshot import instruction_prompt, response_prompt
from lmassay.bootstrap.run import BootstrapConfig, bootstrap, response_logprobs, summary_path
from lmassay.world import build_world
from lmassay.world.qa import core_pairs


@pytest.fixture(scope="module")
def core_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("core") / "core.jsonl"
    rows = [c.to_row() for c in core_pairs(build_world(0), per_category=2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(model: Path, core: Path, out: Path, **changes) -> BootstrapConfig:
    base = BootstrapConfig(
        model=str(model),
        core=str(core),
        n=12,
        out=out,
        seed=3,
        shots=2,
        max_new_tokens=12,
        min_logprob=None,
        batch_size=16,
        device="cpu",
        dtype="float32",
    )
    return replace(base, **changes)


def test_fewshot_prompts_end_where_the_lm_continues():
    shots = [("What is X?", "X is\ny."), ("Who?", "Me.")]
    assert instruction_prompt(shots) == "Question: What is X?\nAnswer: X is y.\n" + (
        "Question: Who?\nAnswer: Me.\nQuestion:"
    )
    assert response_prompt(shots[1:], "New  one?").endswith("Question: New one?\nAnswer:")


def test_near_duplicates_are_found_and_distinct_texts_are_not():
    dedupe = Deduplicator(threshold=0.8)
    first = "What is the capital of Veldoria, the old kingdom by the sea?"
    assert dedupe.check(first) == ("new", None)
    dedupe.add(first)
    assert dedupe.check("  what is the capital of   Veldoria, the old kingdom by the sea? ") == (
        "exact",
        0,
    )
    near = "What is the capital of Veldoria, the old kingdom by the sea!"
    assert jaccard(shingles(first), shingles(near)) >= 0.8  # the ground truth of the check
    assert dedupe.check(near) == ("near", 0)
    other = "Who won the Battle of Konar in the year of the long winter?"
    assert jaccard(shingles(first), shingles(other)) < 0.8
    assert dedupe.check(other) == ("new", None)
    # same template, another subject: similar but below the threshold
    assert (
        dedupe.check("What is the capital of Palgalia, the new republic in the hills?")[0] == "new"
    )


def test_bootstrap_writes_pairs_with_provenance_and_is_seeded(tiny_model_dir, core_file, tmp_path):
    result = bootstrap(_config(tiny_model_dir, core_file, tmp_path / "a.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows == result.rows and len(rows) <= 12
    core_ids = {f"core-{i}" for i in range(18)}
    for row in rows:
        assert set(row) == {"instruction", "response", "provenance"}
        assert row["instruction"] and row["response"] and "\n" not in row["response"]
        p = row["provenance"]
        assert p["seed"] == 3 and p["sampling"]["shots"] == 2
        assert set(p["instruction_shots"]) <= core_ids and set(p["response_shots"]) <= core_ids
        assert 1 <= len(p["instruction_shots"]) <= 2
        assert p["model"]["digest"]["value"]
        assert p["min_token_logprob"] <= p["mean_logprob"] < 0
        assert p["instruction_mean_logprob"] < 0
    summary = json.loads(summary_path(tmp_path / "a.jsonl").read_text())
    assert summary["kept"] == len(rows)
    # every candidate is accounted for once
    assert summary["generated"] == sum(
        summary[k]
        for k in (
            "kept",
            "duplicates",
            "blank",
            "filtered_likelihood",
            "filtered_classifier",
            "filtered_instruction",
            "unused",
        )
    )
    assert summary["core"]["examples"] == 18 and summary["core"]["digest"]["value"]
    again = bootstrap(_config(tiny_model_dir, core_file, tmp_path / "b.jsonl"))
    assert again.rows == rows  # the same seed draws the same pairs


def test_likelihood_filter_keeps_exactly_the_pairs_at_or_above_the_threshold(
    tiny_model_dir, core_file, tmp_path
):
    everything = bootstrap(_config(tiny_model_dir, core_file, tmp_path / "all.jsonl", n=10))
    scores = sorted(r["provenance"]["mean_logprob"] for r in everything.rows)
    threshold = scores[len(scores) // 2]
    # n large enough that no pair is cut for reaching n: only the filter decides
    filtered = bootstrap(
        _config(
            tiny_model_dir,
            core_file,
            tmp_path / "some.jsonl",
            n=10,
            min_logprob=threshold,
            max_generated=40,
        )
    )
    unfiltered_first_round = [r for r in everything.rows if r["provenance"]["round"] == 0]
    expected = [
        r["instruction"]
        for r in unfiltered_first_round
        if r["provenance"]["mean_logprob"] >= threshold
    ]
    kept_first_round = [r["instruction"] for r in filtered.rows if r["provenance"]["round"] == 0]
    assert kept_first_round[: len(expected)] == expected
    assert all(r["provenance"]["mean_logprob"] >= threshold for r in filtered.rows)
    assert filtered.summary["filtered_likelihood"] > 0
    least = sorted(r["provenance"]["min_token_logprob"] for r in everything.rows)
    floor = least[len(least) // 2]
    sure = bootstrap(
        _config(tiny_model_dir, core_file, tmp_path / "sure.jsonl", n=10, min_token_logprob=floor)
    )
    assert all(r["provenance"]["min_token_logprob"] >= floor for r in sure.rows)
    assert sure.summary["filtered_likelihood"] > 0
    asked = sorted(r["provenance"]["instruction_mean_logprob"] for r in everything.rows)
    bar = asked[len(asked) // 2]
    formed = bootstrap(
        _config(tiny_model_dir, core_file, tmp_path / "q.jsonl", n=10, min_instruction_logprob=bar)
    )
    assert all(r["provenance"]["instruction_mean_logprob"] >= bar for r in formed.rows)
    assert formed.summary["filtered_instruction"] > 0


def test_response_logprob_is_the_mean_over_the_response_tokens(tiny_model_dir):
    import torch

    from lmassay.attest.model_loading import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    pairs = [("What is X?", "X is a city."), ("Who won the long war?", "Nobody did.")]
    got = response_logprobs(loaded, pairs, batch_size=2)
    tok = loaded.tokenizer
    for (instruction, response), score in zip(pairs, got, strict=True):
        prompt = tok(f"Question: {instruction}\nAnswer:", add_special_tokens=False)["input_ids"]
        answer = tok(" " + response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[loaded.prefix_token_id, *prompt, *answer]])
        with torch.no_grad():
            logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0], dim=-1)
        start = 1 + len(prompt)
        expected = [float(logp[t - 1, ids[0, t]]) for t in range(start, ids.shape[1])]
        assert score.mean == pytest.approx(sum(expected) / len(expected), abs=1e-4)
        assert score.least == pytest.approx(min(expected), abs=1e-4)


@pytest.mark.parametrize(
    ("core_text", "n", "message"),
    [
        ("", "5", "no rows"),
        ('{"title": "a", "body": "b"}\n', "5", "line 1"),
        (None, "0", "--n 0"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tiny_model_dir, core_file, tmp_path, core_text, n, message
):
    from lmassay.cli import app

    core = core_file
    if core_text is not None:
        core = tmp_path / "bad.jsonl"
        core.write_text(core_text)
    out = tmp_path / "out.jsonl"
    args = ["bootstrap", "--model", str(tiny_model_dir), "--core", str(core), "--n", n]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootstrap failed:") and message in lines[0]
    assert not out.exists() and not summary_path(out).exists()


def _save_classifier(folder: Path, model_dir: Path, intercept: float, digest: str | None = None):
    """A curate classifier on the tiny model's last-layer mean features: all-zero weights, so its
    score is sigmoid(intercept) for every text (0.5 threshold)."""
    import numpy as np

    from lmassay.curate.classifier import Classifier, LinearModel
    from lmassay.curate.features import FeatureSpec
    from lmassay.digests import model_identity

    d = 64  # the tiny GPT-2's width
    folder.mkdir(parents=True)
    linear = LinearModel(np.zeros(d), np.ones(d), np.zeros(d), intercept)
    value = digest or model_identity(model_dir).root.value
    card = {"model": {"name": str(model_dir), "digest": {"algorithm": "sha256", "value": value}}}
    Classifier(
        linear, FeatureSpec(2, "mean", 64), 0.5, np.zeros(2), np.zeros(2, np.int8), card
    ).save(folder)
    return folder


def test_classifiers_drop_what_they_flag_and_must_share_the_lm(tiny_model_dir, core_file, tmp_path):
    from lmassay.cli import app

    keep_all = _save_classifier(tmp_path / "low", tiny_model_dir, -5.0)
    drop_all = _save_classifier(tmp_path / "high", tiny_model_dir, 5.0)
    kept = bootstrap(
        _config(tiny_model_dir, core_file, tmp_path / "k.jsonl", n=4, classifiers=(keep_all,))
    )
    assert kept.summary["filtered_classifier"] == 0 and kept.rows
    score = kept.rows[0]["provenance"]["classifier_scores"][0]
    assert score == pytest.approx(1 / (1 + np.exp(5.0)))
    dropped = bootstrap(
        _config(
            tiny_model_dir,
            core_file,
            tmp_path / "d.jsonl",
            n=4,
            max_generated=8,
            classifiers=(keep_all, drop_all),
        )
    )
    assert dropped.rows == [] and dropped.summary["filtered_classifier"] > 0
    other = _save_classifier(tmp_path / "other", tiny_model_dir, 0.0, digest="0" * 64)
    out = tmp_path / "o.jsonl"
    args = ["bootstrap", "-m", str(tiny_model_dir), "--core", str(core_file), "--n", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--classifier", str(other)])
    assert result.exit_code == 2 and "trained on the features" in result.output
    assert not out.exists()
