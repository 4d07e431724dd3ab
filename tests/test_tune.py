"""``lmassay tune``: response-only masking, LoRA and full tuning, resume, chat template, --attest,
bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import save_tiny_model, world_rows
from lmassay.cli import app
from lmassay.errors import InputError
from lmassay.instruction_data import InstructionPair
from lmassay.tune import (
    PLAIN_INSTRUCTION,
    TuneConfig,
    encode_pairs,
    read_pairs,
    response_loss,
    tune,
)
from lmassay.tune import run as tune_run
from lmassay.tune.pairs import collate

runner = CliRunner()

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

PAIRS = [
    ("Where is the old granary?", "By the north gate of the river town."),
    ("Who opens the granary?", "The council opens it every spring."),
    ("What draws the farmers?", "The seed market draws farmers from the hills."),
    ("Name the river town.", "Ambrel."),
]


def _pairs(n_copies: int = 1) -> list[tuple[str, InstructionPair]]:
    return [(f"row {i}", InstructionPair(q, a)) for i, (q, a) in enumerate(PAIRS * n_copies)]


def _write_pairs(path: Path, n_copies: int = 3) -> Path:
    rows = [{"instruction": q, "response": a} for q, a in PAIRS * n_copies]
    rows[1] = {"prompt": rows[1]["instruction"], "completion": rows[1]["response"]}
    rows[2] = {
        "messages": [
            {"role": "user", "content": rows[2]["instruction"]},
            {"role": "assistant", "content": rows[2]["response"]},
        ]
    }
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _sequence_logprob(model, ids: list[int]) -> float:
    """Summed log-probability of ids[1:] given the tokens before each: one unpadded sequence."""
    x = torch.tensor([ids])  # (1, T)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)  # (T-1, V)
    return float(logp.gather(1, x[0, 1:, None]).sum())


# --------------------------------------------------------------------------------------------
# The loss: response tokens only


def test_response_only_loss_matches_an_independent_computation(tiny):
    model, tok = tiny
    prefix, eos = tok.bos_token_id, tok.eos_token_id
    encoded = encode_pairs(tok, _pairs(), template="plain", prefix_token_id=prefix, max_length=128)
    batch = collate(encoded.examples, pad_id=eos)
    with torch.no_grad():
        logits = model(input_ids=batch.ids, attention_mask=batch.mask).logits  # (B, T, V)
    ours = float(response_loss(logits, batch.labels))

    # Independently: log p(context + response + EOS) - log p(context), each scored alone, unpadded.
    total_nll, total_tokens, all_nll, all_tokens = 0.0, 0, 0.0, 0
    for (_, pair), example in zip(_pairs(), encoded.examples, strict=True):
        context = PLAIN_INSTRUCTION.format(prompt=pair.instruction) + "\n\n"
        head = [prefix, *tok(context, add_special_tokens=False)["input_ids"]]
        whole = [prefix, *tok(context + pair.response, add_special_tokens=False)["input_ids"], eos]
        assert whole[: len(head)] == head  # the boundary merges no token
        assert list(example.ids) == whole and example.n_scored == len(whole) - len(head)
        total_nll -= _sequence_logprob(model, whole) - _sequence_logprob(model, head)
        total_tokens += len(whole) - len(head)
        all_nll -= _sequence_logprob(model, whole)
        all_tokens += len(whole) - 1
    assert ours == pytest.approx(total_nll / total_tokens, rel=1e-5)
    assert abs(ours - all_nll / all_tokens) > 0.01  # the null: every token in the loss differs
    assert int((batch.labels != -100).sum()) == total_tokens


def test_chat_template_scores_the_reply_and_its_end_of_turn(tiny):
    _, plain_tok = tiny
    tok = type(plain_tok).from_pretrained(plain_tok.name_or_path)
    tok.chat_template = CHAT_TEMPLATE
    prefix = tok.bos_token_id
    pairs = _pairs()[:2]
    chat = encode_pairs(tok, pairs, template="chat", prefix_token_id=prefix, max_length=128)
    plain = encode_pairs(tok, pairs, template="plain", prefix_token_id=prefix, max_length=128)
    for (_, pair), c, p in zip(pairs, chat.examples, plain.examples, strict=True):
        c_context = tok.decode(c.ids[: len(c.ids) - c.n_scored])
        assert c_context.endswith(f"<|user|>\n{pair.instruction}{tok.eos_token}<|assistant|>\n")
        assert "### Instruction" not in c_context
        # the reply and the template's end of turn (EOS) are the scored tokens
        assert tok.decode(c.ids[-c.n_scored :]) == pair.response + tok.eos_token
        p_context = tok.decode(p.ids[: len(p.ids) - p.n_scored])
        assert p_context.endswith(f"### Instruction:\n{pair.instruction}\n\n### Response:\n\n")
        assert tok.decode(p.ids[-p.n_scored :]) == pair.response + tok.eos_token


def test_long_pairs_are_cut_or_left_out(tiny):
    _, tok = tiny
    short = encode_pairs(
        tok, _pairs()[:1], template="plain", prefix_token_id=tok.bos_token_id, max_length=128
    ).examples[0]
    limit = len(short.ids) + 4
    long_prompt = InstructionPair(" ".join(["granary"] * 200), "Yes.")
    long_reply = InstructionPair("Say it.", " ".join(["granary"] * 200))
    encoded = encode_pairs(
        tok,
        [("a", long_prompt), ("b", long_reply), *_pairs()[:1]],
        template="plain",
        prefix_token_id=tok.bos_token_id,
        max_length=limit,
    )
    assert (encoded.n_dropped, encoded.n_truncated, len(encoded.examples)) == (1, 1, 2)
    cut, kept = encoded.examples
    assert len(cut.ids) == limit and cut.n_scored >= 1 and kept == short


def test_pairs_read_the_same_from_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"instruction": q, "input": "In Ambrel." if i % 2 else "", "output": a}
        for i, (q, a) in enumerate(PAIRS)
    ]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    expected = [InstructionPair(r["instruction"], r["output"], r["input"]) for r in rows]
    for source in (jsonl, tmp_path / "pairs.parquet"):
        assert [pair for _, pair in read_pairs(str(source), None)] == expected
    assert expected[1].prompt() == f"{PAIRS[1][0]}\n\nIn Ambrel."


# --------------------------------------------------------------------------------------------
# Tuning: the loss on the training pairs goes down; resume equals uninterrupted


def _loss_on_pairs(model_dir: Path, pairs) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    encoded = encode_pairs(tok, pairs, template="plain", prefix_token_id=tok.bos_token_id,
                           max_length=128)  # fmt: skip
    batch = collate(encoded.examples, pad_id=tok.eos_token_id)
    with torch.no_grad():
        return float(response_loss(model(input_ids=batch.ids, attention_mask=batch.mask).logits,
                                   batch.labels))  # fmt: skip


def _config(model: Path, data: Path, out: Path, **kwargs) -> TuneConfig:
    settings = {"steps": 12, "batch_size": 4, "device": "cpu", "seed": 0, **kwargs}
    return TuneConfig(model=str(model), data=str(data), out=str(out), **settings)


@pytest.mark.parametrize(("method", "lr"), [("lora", 1e-2), ("full", 1e-3)])
def test_a_few_steps_lower_the_loss_on_the_training_pairs(tiny_model_dir, tmp_path, method, lr):
    data = _write_pairs(tmp_path / "pairs.jsonl")
    result = tune(_config(tiny_model_dir, data, tmp_path / "out", method=method, lr=lr))
    before = _loss_on_pairs(tiny_model_dir, _pairs())
    after = _loss_on_pairs(tmp_path / "out", _pairs())
    assert after < before - 0.5, (before, after)
    record = json.loads((tmp_path / "out" / "tune" / "tune.json").read_text())
    assert record == result.record and record["training"]["method"] == method
    assert record["data"]["n_examples"] == 12 and record["data"]["template"] == "plain"
    assert len(record["training"]["losses"]) == 12
    assert record["training"]["peak_memory_mib"]["process_rss"] > 0
    assert not (tmp_path / "out.partial").exists()
    # an ordinary checkpoint: safetensors weights, no adapter files, the base's tensor names
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files
    base = load_file(tiny_model_dir / "model.safetensors")
    assert load_file(tmp_path / "out" / "model.safetensors").keys() == base.keys()


def test_an_interrupted_tune_resumes_to_the_uninterrupted_result(
    tiny_model_dir, tmp_path, monkeypatch
):
    data = _write_pairs(tmp_path / "pairs.jsonl")
    whole = tune(_config(tiny_model_dir, data, tmp_path / "whole", checkpoint_every=4))

    made = tune_run.sft_loss

    def failing(*args, **kwargs):
        loss, calls = made(*args, **kwargs), []

        def counted(generator):
            calls.append(1)
            if len(calls) == 7:
                raise KeyboardInterrupt
            return loss(generator)

        return counted

    monkeypatch.setattr(tune_run, "sft_loss", failing)
    with pytest.raises(KeyboardInterrupt):
        tune(_config(tiny_model_dir, data, tmp_path / "cut", checkpoint_every=4))
    assert not (tmp_path / "cut").exists()
    assert (tmp_path / "cut.partial" / "checkpoints" / "step-0000004").is_dir()
    monkeypatch.setattr(tune_run, "sft_loss", made)
    with pytest.raises(InputError, match="interrupted tune with other settings"):
        tune(_config(tiny_model_dir, data, tmp_path / "cut", checkpoint_every=4, lr=1e-2))
    resumed = tune(_config(tiny_model_dir, data, tmp_path / "cut", checkpoint_every=4))

    assert resumed.record["training"]["resumed_from_step"] == 4
    assert resumed.record["training"]["losses"] == pytest.approx(
        whole.record["training"]["losses"], abs=1e-5
    )
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert not all(torch.allclose(a[k], base[k], atol=1e-6) for k in a)  # the null: it trained


# --------------------------------------------------------------------------------------------
# The command: chat template, --attest, bad inputs


def _probes(path: Path) -> Path:
    rows = world_rows(0, 6)
    kept = [(c, t) for c, t in rows if c in ("geography", "sport")]
    path.write_text(
        "".join(json.dumps({"text": t[:300], "category": c}) + "\n" for c, t in kept),
        encoding="utf-8",
    )
    return path


def test_cli_tunes_with_the_chat_template_and_attests_the_drift(world_tokenizer, tmp_path):
    tok = type(world_tokenizer).from_pretrained(save_tiny_model(tmp_path / "base", world_tokenizer))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(tmp_path / "base")
    data = _write_pairs(tmp_path / "pairs.jsonl")
    probes = _probes(tmp_path / "probes.jsonl")
    out = tmp_path / "tuned"
    result = runner.invoke(
        app,
        ["tune", "-m", str(tmp_path / "base"), "--data", str(data), "-o", str(out),
         "--steps", "6", "--batch-size", "4", "--device", "cpu", "--attest", str(probes),
         "--quiet"],
    )  # fmt: skip
    attestation = json.loads((out / "attestation" / "attestation.json").read_text())
    assert result.exit_code == (1 if attestation["flagged"] else 0), result.output
    record = json.loads((out / "tune" / "tune.json").read_text())
    assert record["data"]["template"] == "chat"
    drift = record["attestation"]
    assert drift["verdict"] == attestation["verdict"]
    assert [(c["name"], c["mean_kl"]) for c in drift["categories"]] == [
        (c["name"], c["mean_kl"]) for c in attestation["categories"]
    ]
    assert {c["name"] for c in drift["categories"]} == {"geography", "sport"}
    assert all(c["mean_kl"] > 0 for c in drift["categories"])  # the tuned model moved
    assert attestation["model"]["path"] == str(out)
    assert attestation["model"]["digest"] == record["output"]["model_digest"]
    report = (out / "tune" / "report.md").read_text()
    assert "Drift from the base" in report and "| geography |" in report


def _fails(args, needle: str, leftovers: list[Path]):
    result = runner.invoke(app, ["tune", *map(str, args), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("tune failed: ") and result.stderr.count("\n") == 1
    assert needle in result.stderr, result.stderr
    assert not [p for p in leftovers if p.exists()]


def test_bad_inputs_exit_2_with_one_line_and_nothing_written(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    nothing = [out, tmp_path / "out.partial"]
    base = ["-m", tiny_model_dir, "-o", out, "--device", "cpu", "--steps", "2"]
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"instruction": "a", "response": "b"}\n{"question": "c"}\n')
    _fails([*base, "--data", missing], "missing.jsonl line 2: no instruction pair", nothing)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    _fails([*base, "--data", empty], "holds no rows", nothing)
    data = _write_pairs(tmp_path / "pairs.jsonl")
    _fails([*base, "--data", data, "--steps", "0"], "--steps 0 is below 1", nothing)
    _fails([*base, "--data", tmp_path / "absent.jsonl"], "does not exist", nothing)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _fails(
        ["-m", tiny_model_dir, "-o", blocker / "out", "--device", "cpu", "--data", data],
        "cannot be written",
        [blocker / "out"],
    )
    _fails([*base, "--data", data, "--template", "chat"], "has no chat template", nothing)
    # no staging folder, lock or checkpoint left beside OUT
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file",
        "empty.jsonl",
        "missing.jsonl",
        "pairs.jsonl",
    ]
