"""Layer streaming against the in-memory engine, on tiny GPT-2, Llama and GPT-NeoX models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, OPTConfig

from lmassay.attest.scoring import score_token_lists
from lmassay.attest.streaming import StreamStats, stream_score_token_lists
from lmassay.errors import InputError
from lmassay.world.tiny_lm import build_model, tiny_gpt2_config, tiny_llama_config

VOCAB = 97
PREFIX = 0
MAX_LEN = 16
# lengths: shorter than a window (padding in a batch), exactly one, and several rolling windows
LENGTHS = [1, 3, 15, 16, 17, 40, 5, 33]


def neox_config(vocab: int) -> GPTNeoXConfig:
    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        rotary_pct=0.5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )


CONFIGS = {
    "gpt2": lambda: tiny_gpt2_config(VOCAB, n_embd=32, n_positions=64),
    "llama": lambda: tiny_llama_config(
        VOCAB, hidden_size=32, num_attention_heads=4, num_key_value_heads=2
    ),
    "gpt_neox": lambda: neox_config(VOCAB),
}


def saved(tmp_path, family: str, seed: int):
    model = build_model(CONFIGS[family](), seed=seed)
    folder = tmp_path / f"{family}-{seed}"
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


def texts(seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=n).tolist() for n in LENGTHS]


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_paired_streaming_equals_in_memory(tmp_path, family):
    model, model_dir = saved(tmp_path, family, 1)
    reference, reference_dir = saved(tmp_path, family, 2)
    token_lists = texts()
    common = {"prefix_token_id": PREFIX, "max_length": MAX_LEN, "token_budget": 40, "topk": 3}
    expected = score_token_lists(token_lists, model, reference, **common)
    stats = StreamStats()
    got = stream_score_token_lists(token_lists, model_dir, reference_dir, stats=stats, **common)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g.token_ids, e.token_ids)
        np.testing.assert_allclose(g.logprob_model, e.logprob_model, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g.logprob_reference, e.logprob_reference, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g.kl, e.kl, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(g.top1_model, e.top1_model)
        np.testing.assert_array_equal(g.top1_reference, e.top1_reference)
        np.testing.assert_array_equal(g.topk_model[0], e.topk_model[0])
        assert g.n_windows == e.n_windows
    # each block, the embeddings, the final norm and the head: loaded once per model
    n_layers = model.config.num_hidden_layers
    assert len(stats.loads) == 2 * (n_layers + 3 + (family == "gpt2"))
    assert set(stats.loads.values()) == {1}
    assert {f"model:{'h' if family == 'gpt2' else 'layers'}.{i}" for i in range(n_layers)} <= set(
        stats.loads
    )
    assert stats.bytes_read > 0 and stats.activation_bytes > 0


def test_single_model_streaming_equals_in_memory_with_full_context(tmp_path):
    model, folder = saved(tmp_path, "llama", 3)
    token_lists = texts(1)
    common = {"prefix_token_id": PREFIX, "max_length": 64, "token_budget": 100}
    expected = score_token_lists(token_lists, model, **common)
    got = stream_score_token_lists(token_lists, folder, **common)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g.logprob_model, e.logprob_model, rtol=1e-5, atol=1e-5)
        assert g.kl is None and g.logprob_reference is None


def test_model_against_itself_streamed_gives_zero_kl(tmp_path):
    _, folder = saved(tmp_path, "gpt2", 4)
    got = stream_score_token_lists(
        texts(2), folder, folder, prefix_token_id=PREFIX, max_length=MAX_LEN, token_budget=40
    )
    assert all(np.all(s.kl == 0.0) for s in got)


def test_sharded_checkpoint_is_read_through_its_index(tmp_path):
    model = build_model(CONFIGS["gpt2"](), seed=5)
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("*.safetensors"))) > 1
    common = {"prefix_token_id": PREFIX, "max_length": MAX_LEN}
    expected = score_token_lists(texts(3), model, **common)
    got = stream_score_token_lists(texts(3), folder, **common)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g.logprob_model, e.logprob_model, rtol=1e-5, atol=1e-5)


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    folder = tmp_path / "opt"
    OPTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, ffn_dim=32).save_pretrained(
        folder
    )
    with pytest.raises(InputError, match=r"does not support the opt architecture.*--offload none"):
        stream_score_token_lists([[1, 2]], folder, prefix_token_id=PREFIX, max_length=MAX_LEN)


def test_checkpoint_missing_a_block_tensor_is_a_clear_error(tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = saved(tmp_path, "gpt2", 6)
    tensors = load_file(folder / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"h\.1\.mlp\.c_fc\.weight"):
        stream_score_token_lists([[1, 2]], folder, prefix_token_id=PREFIX, max_length=MAX_LEN)


def test_attest_with_offload_stream_matches_in_memory(tmp_path, world_tokenizer):
    from conftest import world_rows
    from lmassay.attest.recipe import AttestConfig, attest

    folders = []
    for seed in (7, 8):
        config = tiny_gpt2_config(
            len(world_tokenizer),
            bos_token_id=world_tokenizer.bos_token_id,
            eos_token_id=world_tokenizer.eos_token_id,
        )
        folder = tmp_path / f"m{seed}"
        build_model(config, seed=seed).save_pretrained(folder, safe_serialization=True)
        world_tokenizer.save_pretrained(folder)
        folders.append(folder)
    probes = tmp_path / "probes.jsonl"
    rows = [{"text": t, "category": c} for c, t in world_rows(seed=1, n_per_category=5)]
    probes.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(offload: str):
        config = AttestConfig(
            model=str(folders[0]),
            reference=str(folders[1]),
            probes=str(probes),
            out=str(tmp_path / offload),
            device="cpu",
            n_bootstrap=50,
            offload=offload,  # type: ignore[arg-type]
            write_report=False,
        )
        return attest(config)

    memory, streamed = run("none"), run("stream")
    assert streamed.attestation["provenance"]["config"]["offload"] == "stream"
    for a, b in zip(memory.samples, streamed.samples, strict=True):
        assert a["id"] == b["id"]
        assert b["logprob_model"] == pytest.approx(a["logprob_model"], rel=1e-5)
        assert b["mean_kl"] == pytest.approx(a["mean_kl"], rel=1e-4, abs=1e-6)
    assert (
        streamed.attestation["model"]["n_parameters"] == memory.attestation["model"]["n_parameters"]
    )


def test_offload_is_validated():
    from lmassay.attest.recipe import AttestConfig

    config = AttestConfig(model="m", probes="p", out="o", offload="disk")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--offload 'disk'"):
        config.validate()


def test_in_memory_scores_do_not_depend_on_the_fused_head(tmp_path, monkeypatch):
    """The head applied to scored rows only gives what the full-logits path gives."""
    from lmassay.attest import reduction

    model, _ = saved(tmp_path, "llama", 9)
    reference, _ = saved(tmp_path, "llama", 10)
    common = {"prefix_token_id": PREFIX, "max_length": MAX_LEN, "token_budget": 40}
    fused = score_token_lists(texts(4), model, reference, **common)
    monkeypatch.setattr(reduction, "FUSED_HEAD_TYPES", frozenset())
    plain = score_token_lists(texts(4), model, reference, **common)
    for f, p in zip(fused, plain, strict=True):
        np.testing.assert_allclose(f.logprob_model, p.logprob_model, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f.kl, p.kl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.tensor(np.concatenate([f.top1_model for f in fused])),
        torch.tensor(np.concatenate([p.top1_model for p in plain])),
    )


def test_cli_offload_option(tmp_path):
    from typer.testing import CliRunner

    from lmassay.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["attest", "--help"], terminal_width=200)
    assert shown.exit_code == 0 and "--offload" in shown.output
    bad = runner.invoke(
        app,
        [
            "attest",
            "--model",
            "m",
            "--probes",
            "p",
            "--out",
            str(tmp_path / "o"),
            "--offload",
            "disk",
        ],
    )
    assert bad.exit_code == 2
    assert "--offload" in bad.output and "'disk'" in bad.output
