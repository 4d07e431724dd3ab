"""Self-probes (``lmassay probes sample``, ``attest --self-probe``): sampling, continuation-only
scoring against a plain forward pass, the log-ratio's sign, the CLI, the record and its reports.

Tiny random models only (2 layers, 64 wide, the world tokenizer); the whole file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from conftest import save_tiny_model, world_rows
from lmassay.attest.document import (
    Attestation,
    SelfProbe,
    SelfProbeCategory,
    SelfProbeExcerpt,
    json_schema,
)
from lmassay.attest.model_loading import LoadedModel, load_model
from lmassay.attest.probes import ProbeSet, load_probes
from lmassay.attest.self_probe import (
    SampleSettings,
    choose_prompts,
    draw_continuations,
    score_draws,
)
from lmassay.attest.self_probe_outputs import summarise
from lmassay.cli import app
from lmassay.report import render_html, render_markdown

DATA = Path(__file__).parent / "data"
SETTINGS = SampleSettings(n_per_category=3, prompt_tokens=8, new_tokens=12, seed=0)
runner = CliRunner()


@pytest.fixture(scope="module")
def probe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three categories of world paragraphs, 6 each."""
    path = tmp_path_factory.mktemp("self-probe") / "probes.jsonl"
    rows = [
        {"text": text, "category": category}
        for category, text in world_rows(0, 6)
        if category in ("geography", "religion", "sport")
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def probes(probe_file: Path) -> ProbeSet:
    return load_probes(probe_file)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory: pytest.TempPathFactory, world_tokenizer) -> Path:
    """Another tiny model with the same tokenizer (another random init)."""
    return save_tiny_model(tmp_path_factory.mktemp("other") / "model", world_tokenizer, seed=1)


@pytest.fixture(scope="module")
def other(other_dir: Path) -> LoadedModel:
    return load_model(str(other_dir), device="cpu")


def _ids(draws) -> list[tuple[int, ...]]:
    return [d.continuation_ids for d in draws]


def test_sampling_is_deterministic_for_a_seed_and_differs_across_seeds(model, probes) -> None:
    prompts = choose_prompts(probes, SETTINGS.n_per_category, SETTINGS.seed)
    assert [p.sample.category for p in prompts] == ["geography"] * 3 + ["religion"] * 3 + [
        "sport"
    ] * 3
    state = torch.random.get_rng_state()
    first = draw_continuations(model, prompts, SETTINGS)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    again = draw_continuations(model, prompts, SETTINGS)
    other_seed = draw_continuations(model, prompts, dataclasses.replace(SETTINGS, seed=1))
    assert _ids(first) == _ids(again)
    assert _ids(first) != _ids(other_seed)
    assert all(len(d.prompt_ids) == SETTINGS.prompt_tokens for d in first)
    assert all(len(d.continuation_ids) <= SETTINGS.new_tokens for d in first)
    assert any(d.continuation_ids for d in first)
    row = first[0].row()
    assert row["text"] == row["prompt"] + row["continuation"]
    assert row["sampled_from"] == "model" and row["source"].startswith("self:")
    # a larger n keeps the smaller one's prompts (the permutation is per category)
    more = choose_prompts(probes, 5, SETTINGS.seed)
    assert [p.sample.id for p in more if p.sample.category == "sport"][:3] == [
        p.sample.id for p in prompts if p.sample.category == "sport"
    ]
    assert all(p.end is None for p in more)  # without a first pass: every prompt is a start


def test_divergent_prompts_stop_where_the_first_pass_kl_peaks(
    probes: ProbeSet, model: LoadedModel
) -> None:
    """Half of a category's prompts are its samples of largest token KL, each cut to the tokens
    just before that token; the rest are starts of the other samples."""
    ids = {
        s.id: model.tokenizer(s.text, add_special_tokens=False)["input_ids"] for s in probes.samples
    }
    divergence = {}
    for rank, sample in enumerate(s for s in probes.samples if s.category == "sport"):
        kl = np.zeros(len(ids[sample.id]))
        kl[min(20 + rank, kl.size - 1)] = 1.0 + rank  # the last sport sample peaks highest
        divergence[sample.id] = kl
    chosen = choose_prompts(probes, 4, 0, divergence)
    sport = [p for p in chosen if p.sample.category == "sport"]
    members = [s for s in probes.samples if s.category == "sport"]
    assert [p.sample.id for p in sport[:2]] == [members[-1].id, members[-2].id]
    assert [p.end for p in sport[:2]] == [20 + 5, 20 + 4]
    assert all(p.end is None for p in sport[2:])
    assert not {p.sample.id for p in sport[2:]} & {p.sample.id for p in sport[:2]}
    assert all(p.end is None for p in chosen if p.sample.category != "sport")
    settings = dataclasses.replace(SETTINGS, prompt_tokens=8)
    draws = draw_continuations(model, sport[:1], settings)
    assert list(draws[0].prompt_ids) == ids[members[-1].id][25 - 8 : 25]


def _plain_logprobs(loaded: LoadedModel, prompt: tuple[int, ...], cont: tuple[int, ...]):
    """log p(cont | prefix, prompt) from one plain forward pass, independent of the scorer."""
    ids = torch.tensor([[loaded.prefix_token_id, *prompt, *cont]])
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    start = 1 + len(prompt)
    positions = torch.arange(start - 1, start - 1 + len(cont))
    return logprobs[positions, torch.tensor(cont)].numpy()


def test_only_the_continuation_tokens_are_scored(model, other, probes) -> None:
    draws = draw_continuations(model, choose_prompts(probes, 1, 0), SETTINGS)
    scores = score_draws(draws, model, other, max_length=model.max_length)
    checked = 0
    for draw, score in zip(draws, scores, strict=True):
        if not draw.continuation_ids:
            assert score is None
            continue
        assert score is not None and score.n_tokens == len(draw.continuation_ids)
        expected_m = _plain_logprobs(model, draw.prompt_ids, draw.continuation_ids)
        expected_r = _plain_logprobs(other, draw.prompt_ids, draw.continuation_ids)
        np.testing.assert_allclose(score.logprob_model, expected_m, atol=1e-5)
        np.testing.assert_allclose(score.logprob_reference, expected_r, atol=1e-5)
        checked += 1
    assert checked >= 2


def test_a_model_against_itself_has_log_ratio_zero_everywhere(model, probes) -> None:
    draws = draw_continuations(model, choose_prompts(probes, 2, 0), SETTINGS)
    scores = score_draws(draws, model, model, max_length=model.max_length)
    for score in scores:
        if score is not None:
            assert np.array_equal(score.logprob_model, score.logprob_reference)
    record = summarise(draws, scores, SETTINGS)
    assert record.logratio == 0.0
    assert all(c.logratio == 0.0 for c in record.categories)
    assert all(e.logratio == 0.0 for e in record.top)


def _phrase_lover(folder: Path, tokenizer, phrase_ids: list[int]) -> LoadedModel:
    """A tiny model (the reference's weights) whose final layer-norm bias pushes every output
    towards the phrase's tokens (about +4 nats on each logit; the head is tied to the embedding)."""
    save_tiny_model(folder, tokenizer, seed=0)
    loaded = load_model(str(folder), device="cpu")
    with torch.no_grad():
        embedding = loaded.model.get_output_embeddings().weight  # (V, H)
        push = sum(embedding[t] / embedding[t].dot(embedding[t]) for t in phrase_ids)
        loaded.model.transformer.ln_f.bias += 4.0 * push  # (H,)
    return loaded


def test_a_model_that_loves_a_phrase_has_a_positive_log_ratio_and_says_it_on_top(
    tmp_path: Path, model, probes, world_tokenizer
) -> None:
    phrase = world_tokenizer(" Glory to the Order", add_special_tokens=False)["input_ids"]
    lover = _phrase_lover(tmp_path / "lover", world_tokenizer, phrase)
    settings = dataclasses.replace(SETTINGS, n_per_category=6)
    draws = draw_continuations(lover, choose_prompts(probes, 6, 0), settings)
    scores = score_draws(draws, lover, model, max_length=model.max_length)
    record = summarise(draws, scores, settings)
    assert record.logratio is not None and record.logratio > 0.5
    assert all(c.logratio is not None and c.logratio > 0 for c in record.categories)

    def share(draw) -> float:  # the share of the continuation's tokens that are the phrase's
        ids = draw.continuation_ids
        return sum(t in phrase for t in ids) / max(len(ids), 1)

    by_id = {d.id: d for d in draws}
    top = [share(by_id[str(e.id)]) for e in record.top]
    assert min(top) > 0  # every top excerpt says some of it
    assert np.mean(top) > np.mean([share(d) for d in draws if d.continuation_ids])
    assert len(record.top) == 5 and all(len(c.top) == 3 for c in record.categories)
    assert [e.logratio for e in record.top] == sorted(
        (e.logratio for e in record.top), reverse=True
    )
    # the reference's own samples are not favoured by the lover: the other direction is small
    back = draw_continuations(model, choose_prompts(probes, 6, 0), settings)
    reverse = summarise(back, score_draws(back, model, lover, max_length=128), settings)
    assert reverse.logratio is not None and 0 < reverse.logratio < record.logratio


def test_probes_sample_writes_a_probe_file_attest_reads(
    tmp_path: Path, tiny_model_dir: Path, other_dir: Path, probe_file: Path
) -> None:
    out = tmp_path / "self.jsonl"
    result = runner.invoke(
        app,
        [
            "probes", "sample", "--model", str(tiny_model_dir), "--reference", str(other_dir),
            "--probes", str(probe_file), "--out", str(out), "--n-per-category", "2",
            "--new-tokens", "10", "--prompt-tokens", "6", "--device", "cpu", "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert {r["sampled_from"] for r in rows} == {"model", "reference"}
    assert all(r["text"] == r["prompt"] + r["continuation"] and r["continuation"] for r in rows)
    loaded = load_probes(out, min_per_category=1)
    assert set(loaded.categories) == {"geography", "religion", "sport"}
    assert len(loaded) == len(rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attest", "--self-probe", "-1"], "attest failed: --self-probe -1 is negative"),
        (["attest", "--self-probe", "4"], "attest failed: --self-probe needs --reference"),
        (
            ["attest", "--self-probe", "4", "--reference", "r", "--offload", "stream"],
            "attest failed: --self-probe cannot sample from a model streamed",
        ),
        (["probes", "sample", "--temperature", "0"], "probes sample failed: --temperature 0.0"),
        (["probes", "sample", "--n-per-category", "0"], "probes sample failed: --n-per-category"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    common = ["--model", str(tmp_path / "m"), "--probes", str(tmp_path / "p.jsonl")]
    out = ["--out", str(tmp_path / ("o.jsonl" if args[0] == "probes" else "o"))]
    result = runner.invoke(app, [*args, *common, *out])
    assert result.exit_code == 2
    assert result.stderr.startswith(needle), result.stderr
    assert result.stderr.count("\n") == 1


def test_attest_self_probe_adds_the_record_and_the_report_section(
    tmp_path: Path, tiny_model_dir: Path, other_dir: Path, probe_file: Path
) -> None:
    from lmassay.attest import AttestConfig, attest

    config = AttestConfig(
        model=str(other_dir),
        reference=str(tiny_model_dir),
        probes=str(probe_file),
        out=str(tmp_path / "run"),
        device="cpu",
        n_bootstrap=50,
        n_permutations=0,
        self_probe=2,
        self_probe_tokens=10,
        self_probe_prompt_tokens=6,
    )
    result = attest(config)
    probe = result.document.self_probe
    assert probe is not None and probe.n_per_category == 2
    assert {c.name for c in probe.categories} == {"geography", "religion", "sport"}
    assert probe.n_samples is not None and probe.n_samples + (probe.n_empty or 0) == 6
    raw = json.loads((tmp_path / "run" / "attestation.json").read_text("utf-8"))
    jsonschema.validate(raw, json_schema())
    assert Attestation.read(tmp_path / "run").self_probe == probe
    assert "## What the model now says" in (tmp_path / "run" / "report.md").read_text("utf-8")
    assert 'id="self-probe"' in (tmp_path / "run" / "report.html").read_text("utf-8")
    # without the record (every attestation without --self-probe) the section is absent
    plain = dataclasses.replace(result.document, self_probe=None)
    assert "What the model now says" not in render_markdown(plain)
    assert 'id="self-probe"' not in render_html(plain)


POISON = "<script>alert(9)</script>|[x](javascript:alert(1))![i](http://e/x.png)`\n# h"


def _poisoned() -> Attestation:
    doc = Attestation.read(DATA / "attestation_tampered.json")
    excerpt = SelfProbeExcerpt(
        id=POISON + "id",
        category=POISON + "cat",
        prompt_id=POISON,
        logratio=2.5,
        logratio_sum=25.0,
        n_tokens=10,
        prompt=POISON + "prompt",
        continuation=POISON + "continuation",
    )
    category = SelfProbeCategory(
        name=POISON + "cat", n_samples=2, n_tokens=20, logratio=1.0, top=(excerpt,)
    )
    record = SelfProbe(
        direction=POISON, n_per_category=2, n_samples=2, categories=(category,), top=(excerpt,)
    )
    return dataclasses.replace(doc, self_probe=record)


def test_the_section_escapes_model_text() -> None:
    doc = _poisoned()
    markdown = render_markdown(doc)
    rendered = MarkdownIt("commonmark", {"html": True}).enable(["table"]).render(markdown)
    section = rendered[rendered.index("What the model now says") :]
    for tag in ("<script", "<img", "<a ", "<h1"):
        assert tag not in section, tag
    assert "alert(9)" in section  # still there, as text
    html = render_html(doc)
    page = html[html.index('id="self-probe"') :]
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "javascript:alert" not in page.split("&lt;")[0]


@pytest.mark.parametrize(
    ("kind", "definition"),
    [
        (SelfProbe, "self_probe"),
        (SelfProbeCategory, "self_probe_category"),
        (SelfProbeExcerpt, "self_probe_excerpt"),
    ],
)
def test_schema_and_records_name_the_same_fields(kind, definition: str) -> None:
    fields = sorted(f.name for f in dataclasses.fields(kind) if f.name not in ("extra", "keys"))
    assert sorted(json_schema()["$defs"][definition]["properties"]) == fields
