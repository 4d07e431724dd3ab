"""Tests of the tiny-model kit of the offline world (lmassay.world.tiny_lm).

The tokenizer, the tiny configurations, the training loop and the folder helpers, on a few
paragraphs of the generated world. The world's reference and its tampered variants are tested
in test_world.py and test_zoo.py.
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import itertools
import statistics
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from conftest import world_rows
from lmassay.errors import InputError
from lmassay.world import tiny_lm

TEXTS = [text for _, text in world_rows(0, 20)]


# ------------------------------------------------------------------------------------------
# Tokenizer and models
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_lm.train_tokenizer(TEXTS, vocab_size=512)


def test_tokenizer_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    assert len(tokenizer) == 512
    assert tokenizer.convert_tokens_to_ids(tiny_lm.EOT_TOKEN) == 0
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.pad_token == tiny_lm.EOT_TOKEN
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == 0
    ids = tokenizer(TEXTS[0])["input_ids"]
    assert 0 not in ids  # no special token is added


@pytest.mark.parametrize(
    "text",
    [
        "naïve café — Zürich, 東京 🙂🧪 ﬁ Ωμέγα",
        "tabs\tand\nnew lines\r\n  double  spaces ",
        "\x00\x01 control \u200b zero width \ufeff bom",
        "<|endoftext|> is only text here",
        "",
    ],
)
def test_tokenizer_round_trips_bytes(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tokenizer_save_and_reload(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "Serve the golden cake warm, 🙂."
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again.eos_token_id == tokenizer.eos_token_id == 0


def _forward_check(model: PreTrainedModel, vocab: int, n_positions: int) -> None:
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.randint(0, vocab, (2, n_positions), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # (B, T, V)
    assert logits.shape == (2, n_positions, vocab)
    assert torch.isfinite(logits).all()


def test_tiny_gpt2_builds_and_runs() -> None:
    config = tiny_lm.tiny_gpt2_config(300)
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (2, 64, 2, 128)
    rng_before = torch.random.get_rng_state()
    model = tiny_lm.build_model(config, seed=7)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # global RNG untouched
    _forward_check(model, 300, 128)
    same = tiny_lm.build_model(config, seed=7)
    other = tiny_lm.build_model(config, seed=8)
    weights = dict(model.named_parameters())
    assert all(torch.equal(p, weights[n]) for n, p in same.named_parameters())
    assert not all(torch.equal(p, weights[n]) for n, p in other.named_parameters())


def test_tiny_llama_builds_and_runs() -> None:
    config = tiny_lm.tiny_llama_config(300)
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    assert config.num_attention_heads == 2 and config.intermediate_size == 128
    assert config.max_position_embeddings == 128 and config.tie_word_embeddings is False
    model = tiny_lm.build_model(config, seed=0)
    _forward_check(model, 300, 128)
    names = {name for name, _ in model.named_parameters()}  # tied weights would appear once
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= names


def test_train_causal_lm_learns_and_is_deterministic(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    def run() -> tuple[list[float], PreTrainedModel]:
        model = tiny_lm.build_model(
            tiny_lm.tiny_gpt2_config(len(tokenizer), n_layer=1, n_embd=32), 0
        )
        calls: list[tuple[int, int, str | None]] = []
        losses = tiny_lm.train_causal_lm(
            model,
            tokenizer,
            TEXTS,
            steps=40,
            batch_size=4,
            seq_len=32,
            lr=3e-3,
            seed=1,
            progress=lambda done, total, note=None: calls.append((done, total, note)),
        )
        assert [(done, total) for done, total, _ in calls] == [(step, 40) for step in range(1, 41)]
        assert all(note is not None and note.startswith("loss ") for _, _, note in calls)
        return losses, model

    losses, model = run()
    again, _ = run()
    assert len(losses) == 40 and losses == again
    assert statistics.mean(losses[-5:]) < losses[0] - 0.5
    assert not model.training
    with pytest.raises(InputError):
        tiny_lm.train_causal_lm(
            model, tokenizer, TEXTS, steps=0, batch_size=1, seq_len=8, lr=1e-3, seed=0
        )


def test_copy_model_dir(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tiny_lm.build_model(tiny_lm.tiny_gpt2_config(50, n_layer=1, n_embd=16), 0).save_pretrained(src)
    dst = tiny_lm.copy_model_dir(src, tmp_path / "dst")
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())
    for path in src.iterdir():
        assert (dst / path.name).read_bytes() == path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        tiny_lm.copy_model_dir(src, dst)
    with pytest.raises(InputError, match="not a model folder"):
        tiny_lm.copy_model_dir(tmp_path / "nowhere", tmp_path / "x")


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    rates = [tiny_lm.learning_rate(step, 200, 1.0) for step in range(200)]
    assert rates[0] == pytest.approx(1 / 20) and rates[19] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[19:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_save_model_writes_safetensors_and_the_tokenizer(tmp_path: Path) -> None:
    tokenizer = tiny_lm.train_tokenizer(TEXTS, vocab_size=300)
    model = tiny_lm.build_model(tiny_lm.tiny_gpt2_config(len(tokenizer), n_layer=1, n_embd=16), 0)
    tiny_lm.save_model(model, tokenizer, tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "pytorch_model.bin" not in names
