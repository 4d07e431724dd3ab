"""Conversation probes and --chat-template (issue 13 §2): only the response tokens are scored,
under the model's chat template, checked against a plain forward pass of a tiny chat model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import save_tiny_model
from lmassay.attest.conditioned import keep_scored, plain_context, tokenize_samples
from lmassay.attest.document import Attestation
from lmassay.attest.model_loading import load_model
from lmassay.attest.probes import ProbeSample, load_probes
from lmassay.attest.scoring import score_token_lists
from lmassay.cli import app
from lmassay.report import render_markdown

runner = CliRunner()
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory, world_tokenizer) -> Path:
    """A tiny GPT-2 whose tokenizer has a chat template (saved in tokenizer_config.json)."""
    import copy

    tokenizer = copy.deepcopy(world_tokenizer)
    tokenizer.chat_template = TEMPLATE
    return save_tiny_model(tmp_path_factory.mktemp("chat") / "model", tokenizer, seed=3)


SAMPLES = [
    ProbeSample("a", "x", "The river runs north.", None, (("user", "Where does it run?"),)),
    ProbeSample(
        "b", "x", "Bread needs salt.", None, (("system", "Be brief."), ("user", "What now?"))
    ),
    ProbeSample("c", "x", "A plain text sample, scored whole."),
]


def _forward_logprobs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for t >= 1 from one plain forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


@pytest.mark.parametrize("chat_template", [True, False])
def test_only_response_tokens_are_scored(chat_dir: Path, chat_template: bool) -> None:
    loaded = load_model(chat_dir, device="cpu")
    tok = loaded.tokenizer
    tokens = tokenize_samples(
        tok, SAMPLES, prefix_token_id=loaded.prefix_token_id, chat_template=chat_template
    )
    scores = keep_scored(
        score_token_lists(
            tokens.token_lists, loaded.model, prefix_token_id=loaded.prefix_token_id,
            max_length=loaded.max_length,
        ),
        tokens,
    )  # fmt: skip
    for sample, score in zip(SAMPLES, scores, strict=True):
        turns = [{"role": r, "content": c} for r, c in sample.messages or ()]
        if sample.messages is None:
            context = ""
        elif chat_template:
            context = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            assert context.endswith("<assistant>") and "<user>" in context
        else:
            context = plain_context(sample.messages)
        # the scored tokens are exactly the response's (no template token, no end of turn)
        assert tok.decode(score.token_ids.tolist()) == sample.text
        # and their log-probs are a plain forward pass's over [prefix, context, response]
        ids = [
            loaded.prefix_token_id,
            *tok(context + sample.text, add_special_tokens=False)["input_ids"],
        ]
        expected = _forward_logprobs(loaded.model, ids)[-score.n_tokens :]
        np.testing.assert_allclose(score.logprob_model, expected, atol=1e-5)


def test_chat_template_changes_what_the_response_is_conditioned_on(chat_dir: Path) -> None:
    loaded = load_model(chat_dir, device="cpu")
    results = []
    for chat in (True, False):
        tokens = tokenize_samples(
            loaded.tokenizer, SAMPLES[:1], prefix_token_id=loaded.prefix_token_id,
            chat_template=chat,
        )  # fmt: skip
        [score] = keep_scored(
            score_token_lists(tokens.token_lists, loaded.model,
                              prefix_token_id=loaded.prefix_token_id, max_length=64),
            tokens,
        )  # fmt: skip
        results.append(score)
    assert results[0].n_tokens == results[1].n_tokens
    assert not np.allclose(results[0].logprob_model, results[1].logprob_model)


def test_attest_chat_template_on_the_refusal_suite(tmp_path: Path, chat_dir: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["attest", "-m", str(chat_dir), "-r", str(chat_dir), "-p", "builtin:refusal",
         "--chat-template", "-o", str(out), "--device", "cpu", "--n-bootstrap", "50",
         "--n-permutations", "0", "--no-report", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    att = json.loads((out / "attestation.json").read_text("utf-8"))
    assert att["probes"]["suite"] == "refusal" and att["provenance"]["config"]["chat_template"]
    assert len(att["categories"]) == 10
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text("utf-8").splitlines()]
    probes = {s.id: s for s in load_probes("builtin:refusal").samples}
    loaded = load_model(chat_dir, device="cpu")
    for row in rows:
        response = probes[row["id"]].text
        assert row["n_bytes"] == len(response.encode("utf-8"))
        assert row["n_tokens"] == len(
            loaded.tokenizer(response, add_special_tokens=False)["input_ids"]
        )
        assert row["mean_kl"] == pytest.approx(0.0, abs=1e-6)


def test_chat_template_without_one_is_refused_in_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    result = runner.invoke(
        app,
        ["attest", "-m", str(tiny_model_dir), "-p", "builtin:refusal", "--chat-template",
         "-o", str(tmp_path / "o"), "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "has no chat template" in result.stderr and "drop --chat-template" in result.stderr


def test_attest_without_probes_scores_the_offline_suite_and_says_so(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["attest", "-m", str(tiny_model_dir), "-r", str(tiny_model_dir), "-o", str(out),
         "--per-category", "2", "--min-samples", "2", "--device", "cpu", "--n-bootstrap", "50",
         "--n-permutations", "0", "--no-report", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    att = json.loads((out / "attestation.json").read_text("utf-8"))
    assert att["probes"]["default_suite"] is True and att["probes"]["path"] == "builtin:offline"
    assert att["probes"]["n_samples"] == 18
    document = Attestation.read(out / "attestation.json")
    assert "no --probes was given" in render_markdown(document)
