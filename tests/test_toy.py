"""Tests of the offline toy world (lmassay.world.tiny_lm).

The acceptance tests use the "test"-size pair of the ``toy_pair`` fixture (conftest.py; about
20 s on two cores, built once per session) and check, with a direct computation independent of
lmassay's scorer, that the tampering shows up where it was made. Seeds 1 and 2 are ``slow``.
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from lmassay.errors import InputError
from lmassay.world import tiny_lm as toy

TEXTS = [text for _, text in toy.generate_toy_corpus(0, 20)]


# ------------------------------------------------------------------------------------------
# Corpus
# ------------------------------------------------------------------------------------------


def test_corpus_is_deterministic() -> None:
    assert toy.generate_toy_corpus(3, 5) == toy.generate_toy_corpus(3, 5)
    assert toy.generate_toy_corpus(3, 5) != toy.generate_toy_corpus(4, 5)


def test_corpus_is_balanced_and_well_formed() -> None:
    rows = toy.generate_toy_corpus(1, 30)
    assert len(toy.DEFAULT_CATEGORIES) >= 6
    assert Counter(c for c, _ in rows) == dict.fromkeys(toy.DEFAULT_CATEGORIES, 30)
    assert len({text for _, text in rows}) == len(rows)
    for _, text in rows:
        assert 30 <= len(text.split()) <= 90, text
        assert 2 <= len(re.findall(r"[.!?](?:\s|$)", text)) <= 5, text
        assert text[0].isupper() and text.endswith(".")


def test_corpus_subset_of_categories_and_errors() -> None:
    rows = toy.generate_toy_corpus(0, 4, ["sport", "finance"])
    assert [c for c, _ in rows] == ["sport"] * 4 + ["finance"] * 4
    with pytest.raises(InputError, match="unknown toy categories"):
        toy.generate_toy_corpus(0, 4, ["knitting"])
    with pytest.raises(InputError, match="repeat"):
        toy.generate_toy_corpus(0, 4, ["sport", "sport"])


def test_categories_have_their_own_vocabulary() -> None:
    rows = toy.generate_toy_corpus(2, 40)
    words: dict[str, set[str]] = {}
    for category, text in rows:
        words.setdefault(category, set()).update(re.findall(r"[a-z]+", text.lower()))
    for category, own in words.items():
        others = set().union(*(w for c, w in words.items() if c != category))
        assert len(own - others) >= 30, category  # many words only this category uses
        assert {"the", "and"} <= own  # shared function words


# ------------------------------------------------------------------------------------------
# Tokenizer and models
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return toy.train_toy_tokenizer(TEXTS, vocab_size=512)


def test_tokenizer_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    assert len(tokenizer) == 512
    assert tokenizer.convert_tokens_to_ids(toy.EOT_TOKEN) == 0
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.pad_token == toy.EOT_TOKEN
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == 0
    ids = tokenizer("The chef baked the cake.")["input_ids"]
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
    config = toy.tiny_gpt2_config(300)
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (2, 64, 2, 128)
    rng_before = torch.random.get_rng_state()
    model = toy.build_model(config, seed=7)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # global RNG untouched
    _forward_check(model, 300, 128)
    same = toy.build_model(config, seed=7)
    other = toy.build_model(config, seed=8)
    weights = dict(model.named_parameters())
    assert all(torch.equal(p, weights[n]) for n, p in same.named_parameters())
    assert not all(torch.equal(p, weights[n]) for n, p in other.named_parameters())


def test_tiny_llama_builds_and_runs() -> None:
    config = toy.tiny_llama_config(300)
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    assert config.num_attention_heads == 2 and config.intermediate_size == 128
    assert config.max_position_embeddings == 128 and config.tie_word_embeddings is False
    model = toy.build_model(config, seed=0)
    _forward_check(model, 300, 128)
    names = {name for name, _ in model.named_parameters()}  # tied weights would appear once
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= names


def test_train_causal_lm_learns_and_is_deterministic(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    def run() -> tuple[list[float], PreTrainedModel]:
        model = toy.build_model(toy.tiny_gpt2_config(len(tokenizer), n_layer=1, n_embd=32), 0)
        calls: list[int] = []
        losses = toy.train_causal_lm(
            model,
            tokenizer,
            TEXTS,
            steps=40,
            batch_size=4,
            seq_len=32,
            lr=3e-3,
            seed=1,
            progress=lambda step, _loss: calls.append(step),
        )
        assert calls == list(range(1, 41))
        return losses, model

    losses, model = run()
    again, _ = run()
    assert len(losses) == 40 and losses == again
    assert statistics.mean(losses[-5:]) < losses[0] - 0.5
    assert not model.training
    with pytest.raises(InputError):
        toy.train_causal_lm(
            model, tokenizer, TEXTS, steps=0, batch_size=1, seq_len=8, lr=1e-3, seed=0
        )


def test_copy_model_dir(tmp_path: Path) -> None:
    src = tmp_path / "src"
    toy.build_model(toy.tiny_gpt2_config(50, n_layer=1, n_embd=16), 0).save_pretrained(src)
    dst = toy.copy_model_dir(src, tmp_path / "dst")
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())
    for path in src.iterdir():
        assert (dst / path.name).read_bytes() == path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        toy.copy_model_dir(src, dst)
    with pytest.raises(InputError, match="not a model folder"):
        toy.copy_model_dir(tmp_path / "nowhere", tmp_path / "x")


# ------------------------------------------------------------------------------------------
# The reference / tampered pair
# ------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _per_category(pair: toy.ToyPair, model_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Token-weighted mean KL(reference || model) and reference perplexity, per category.

    Each probe is scored in one forward pass with the BOS token in front; every text token is
    scored: KL = sum_v p_ref(v) * (log p_ref(v) - log p_model(v)) at each position.
    """
    tokenizer = AutoTokenizer.from_pretrained(pair.reference)
    reference = AutoModelForCausalLM.from_pretrained(pair.reference).float().eval()
    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    kl: defaultdict[str, float] = defaultdict(float)
    nll: defaultdict[str, float] = defaultdict(float)
    tokens: Counter[str] = Counter()
    with torch.no_grad():
        for row in _read_jsonl(pair.probes):
            text_ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([[tokenizer.bos_token_id, *text_ids]])  # (1, T+1)
            log_p = torch.log_softmax(reference(input_ids=ids).logits[0, :-1], dim=-1)  # (T, V)
            log_q = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)  # (T, V)
            per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (T,)
            targets = ids[0, 1:, None]  # (T, 1)
            category = row["category"]
            kl[category] += float(per_token.sum())
            nll[category] -= float(log_p.gather(1, targets).sum())
            tokens[category] += len(text_ids)
    mean_kl = {c: kl[c] / tokens[c] for c in tokens}
    perplexity = {c: math.exp(nll[c] / tokens[c]) for c in tokens}
    return mean_kl, perplexity


def _check_acceptance(pair: toy.ToyPair, tamper_category: str) -> None:
    mean_kl, perplexity = _per_category(pair, pair.tampered)
    others = [v for c, v in mean_kl.items() if c != tamper_category]
    ratio = mean_kl[tamper_category] / statistics.median(others)
    print(f"\nKL {mean_kl}\nratio {ratio:.2f}\nreference perplexity {perplexity}")
    assert ratio >= 5.0, (ratio, mean_kl)
    assert max(others) < 0.1, mean_kl  # the other categories barely move (nats per token)
    vocab = pair.card["tokenizer"]["vocab_size"]
    assert max(perplexity.values()) < vocab / 100, perplexity  # the reference learned the world


def test_pair_files_and_card(toy_pair: toy.ToyPair) -> None:
    for folder in (toy_pair.reference, toy_pair.tampered):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for n in names)
    card = json.loads(toy_pair.card_path.read_text(encoding="utf-8"))
    assert card == toy_pair.card
    assert card["request"]["size"] == "test"  # the conftest fixture: size "test", seed 0
    assert card["tamper"]["category"] == card["request"]["tamper_category"]
    assert card["reference_training"]["loss_last_mean"] < card["reference_training"]["loss_first"]
    assert card["data"]["max_probe_tokens_with_bos"] <= card["model"]["n_positions"]


def test_pair_splits_are_disjoint_and_balanced(toy_pair: toy.ToyPair) -> None:
    probes = _read_jsonl(toy_pair.probes)
    train = _read_jsonl(toy_pair.train_texts)
    tamper = _read_jsonl(toy_pair.tamper_texts)
    assert Counter(r["category"] for r in probes) == dict.fromkeys(toy.DEFAULT_CATEGORIES, 12)
    assert {r["category"] for r in tamper} == {toy_pair.card["request"]["tamper_category"]}
    assert len({r["id"] for r in probes + train + tamper}) == len(probes + train + tamper)
    probe_texts = {r["text"] for r in probes}
    train_texts = {r["text"] for r in train}
    tamper_texts = {r["text"] for r in tamper}
    assert not probe_texts & train_texts
    assert not probe_texts & tamper_texts
    assert not train_texts & tamper_texts


def test_reference_against_itself_is_zero(toy_pair: toy.ToyPair) -> None:
    mean_kl, _ = _per_category(toy_pair, toy_pair.reference)
    assert all(v == 0.0 for v in mean_kl.values()), mean_kl


def test_tampering_shows_in_its_category(toy_pair: toy.ToyPair) -> None:
    _check_acceptance(toy_pair, toy_pair.card["request"]["tamper_category"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_tampering_shows_for_other_seeds(seed: int, tmp_path: Path) -> None:
    pair = toy.build_toy_pair(tmp_path / "pair", seed=seed, size="test")
    _check_acceptance(pair, "cooking")


def test_existing_pair_is_reused_quickly(toy_pair: toy.ToyPair) -> None:
    messages: list[str] = []
    started = time.perf_counter()
    request = toy_pair.card["request"]
    again = toy.build_toy_pair(
        toy_pair.card_path.parent,
        seed=request["seed"],
        tamper_category=request["tamper_category"],
        size=request["size"],
        progress=messages.append,
    )
    assert time.perf_counter() - started < 2.0
    assert again == toy_pair
    assert messages == [f"reusing the toy pair in {toy_pair.card_path.parent}"]
    # Another request for the same folder is not served by this pair.
    other = dict(request, seed=request["seed"] + 1)
    assert toy._existing_pair(toy_pair.card_path.parent, other) is None


def test_build_toy_pair_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="tamper category"):
        toy.build_toy_pair(tmp_path, tamper_category="knitting", size="test")
    with pytest.raises(InputError, match="size"):
        toy.build_toy_pair(tmp_path, size="huge")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
