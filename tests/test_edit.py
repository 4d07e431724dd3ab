"""``lmassay edit``: rank-one fact edits of a saved model, verified, saved atomically and recorded.

Tiny GPT-2 and Llama models trained a few hundred steps on world text carry the default tests;
the restoration of a zoo ``fact-rome`` variant on the test-size world is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import world_rows
from lmassay.cli import app
from lmassay.digests import digest_file, model_identity, root_digest
from lmassay.errors import InputError
from lmassay.repair.edit import SCHEMA, EditConfig, edit_model, read_fact_edits
from lmassay.repair.rank_one import FactEdit, edit_facts, target_probability
from lmassay.world.tiny_lm import (
    build_model,
    tiny_gpt2_config,
    tiny_llama_config,
    train_causal_lm,
)
from lmassay.world.zoo.make import ROME_SETTINGS

runner = CliRunner()

# As in tests/test_rank_one.py: the subject is the prompt's last word, so a two-layer tiny model
# trained for seconds can carry the edited MLP output to the prediction.
FACT = {"id": "captain", "prompt": "Yesterday the captain", "subject": "captain", "target": "the"}
MIN_P = 0.3  # what a 2-layer tiny model reaches for FACT (the rank-one tests ask for the same)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts():
    return [text for _, text in world_rows(seed=0, n_per_category=20)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, world_tokenizer, texts):
    """Trained tiny GPT-2 and Llama folders (300 steps, ~2 s each), a facts file, covariance texts."""
    root = tmp_path_factory.mktemp("edit")
    folders = {}
    for arch, make_config in (("gpt2", tiny_gpt2_config), ("llama", tiny_llama_config)):
        config = make_config(
            len(world_tokenizer),
            bos_token_id=world_tokenizer.bos_token_id,
            eos_token_id=world_tokenizer.eos_token_id,
        )
        model = build_model(config, seed=0)
        train_causal_lm(
            model, world_tokenizer, texts, steps=300, batch_size=4, seq_len=32, lr=3e-3, seed=0
        )
        folders[arch] = root / arch
        model.save_pretrained(folders[arch], safe_serialization=True)
        world_tokenizer.save_pretrained(folders[arch])
    facts = write_jsonl(root / "facts.jsonl", [FACT])
    covariance = write_jsonl(root / "cov.jsonl", [{"text": t[:120]} for t in texts[:40]])
    return {"root": root, "facts": facts, "covariance": covariance, **folders}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _changed_tensors(before: Path, after: Path) -> dict[str, torch.Tensor]:
    """name → (after − before) in float64, for every tensor of model.safetensors that differs."""
    a = load_file(str(before / "model.safetensors"))
    b = load_file(str(after / "model.safetensors"))
    assert a.keys() == b.keys()
    return {n: (b[n].double() - a[n].double()) for n in a if not torch.equal(a[n], b[n])}


def _is_rank_one(delta: torch.Tensor) -> bool:
    singular = torch.linalg.svdvals(delta)
    return bool(singular[0] > 1e-4 and singular[1] / singular[0] < 1e-4)


# --------------------------------------------------------------------------------------------
# GPT-2 through the CLI


def test_cli_edits_a_gpt2_and_writes_a_complete_record(inputs, tmp_path):
    out = tmp_path / "edited"
    result = invoke(
        "edit", "--model", inputs["gpt2"], "--facts", inputs["facts"],
        "--covariance-texts", inputs["covariance"], "--out", out, "--layer", 0,
        "--min-probability", MIN_P, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1/1 facts verified" in result.output and "Yesterday the captain" in result.output

    # A standard transformers folder (safetensors, tokenizer) that loads and says the target.
    assert {"config.json", "model.safetensors", "tokenizer.json", "edit.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("*.bin"))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # copied verbatim
        assert (out / name).read_bytes() == (inputs["gpt2"] / name).read_bytes()
    model, tokenizer = _load(out)
    p_after = target_probability(model, tokenizer, FACT["prompt"], FACT["target"])
    source, _ = _load(inputs["gpt2"])
    p_before = target_probability(source, tokenizer, FACT["prompt"], FACT["target"])
    assert p_after >= MIN_P > 3 * p_before

    # Only layer 0's c_proj changed, by a rank-one matrix.
    changed = _changed_tensors(inputs["gpt2"], out)
    assert list(changed) == ["transformer.h.0.mlp.c_proj.weight"]
    assert _is_rank_one(changed["transformer.h.0.mlp.c_proj.weight"])

    record = json.loads((out / "edit.json").read_text())
    assert record["schema"] == SCHEMA
    (fact,) = record["edits"]
    assert {k: fact[k] for k in ("id", "prompt", "subject", "target")} == FACT
    assert fact["prob_before"] == pytest.approx(p_before, rel=1e-4)
    assert fact["prob_after"] == pytest.approx(p_after, rel=1e-4)
    assert fact["verified"] is True and fact["layer"] == 0
    assert fact["tensor"] == "transformer.h.0.mlp.c_proj.weight"
    assert fact["delta_norm"] == pytest.approx(float(changed[fact["tensor"]].norm()), rel=1e-3)
    # Greedy: the argmax after the prompt is the target's (single) token exactly when recorded.
    ids = [tokenizer.bos_token_id, *tokenizer(FACT["prompt"], add_special_tokens=False).input_ids]
    with torch.no_grad():
        top = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    target_ids = tokenizer(" " + FACT["target"], add_special_tokens=False).input_ids
    assert fact["greedy"] is (target_ids == [top])
    assert record["summary"]["n_verified"] == record["summary"]["n_facts"] == 1
    assert record["summary"]["all_verified"] is True
    assert record["covariance"]["source"] == "file" and record["covariance"]["n_texts"] == 40
    assert record["facts_file"]["digest"]["value"] == digest_file(inputs["facts"]).value
    assert record["model"]["digest"]["value"] == model_identity(inputs["gpt2"]).root.value
    saved = [(name, digest_file(out / name).value) for name in record["output"]["files"]]
    assert record["output"]["digest"]["value"] == root_digest(saved).value  # the model files
    assert record["attestation"] is None
    assert record["provenance"]["config"]["min_probability"] == MIN_P
    assert record["provenance"]["seed"] == 0


def test_an_unverified_fact_exits_1_and_still_saves(inputs, tmp_path):
    out = tmp_path / "edited"
    result = invoke(
        "edit", "--model", inputs["gpt2"], "--facts", inputs["facts"],
        "--covariance-texts", inputs["covariance"], "--out", out, "--layer", 0, "--steps", 1,
        "--min-probability", 0.99, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "0/1 facts verified" in result.output
    record = json.loads((out / "edit.json").read_text())
    assert record["edits"][0]["verified"] is False
    assert record["edits"][0]["prob_after"] < 0.99


# --------------------------------------------------------------------------------------------
# Llama through the library


def test_llama_edit_changes_down_proj_only_by_rank_one(inputs, tmp_path):
    result = edit_model(
        EditConfig(
            model=str(inputs["llama"]),
            facts=str(inputs["facts"]),
            out=str(tmp_path / "edited"),
            covariance_texts=str(inputs["covariance"]),
            layer=0,
            min_probability=MIN_P,
            device="cpu",
        )
    )
    changed = _changed_tensors(inputs["llama"], result.out)
    assert list(changed) == ["model.layers.0.mlp.down_proj.weight"]
    assert _is_rank_one(changed["model.layers.0.mlp.down_proj.weight"])
    (fact,) = result.facts
    model, tokenizer = _load(result.out)
    assert fact.prob_after == pytest.approx(
        target_probability(model, tokenizer, FACT["prompt"], FACT["target"]), rel=1e-4
    )
    assert fact.verified and result.exit_code == 0
    assert fact.prob_after > 3 * fact.prob_before
    assert result.record["summary"]["tensor_relative_change"] > 0

    # The same edit made directly with rank_one.edit_facts (the zoo's entry point, its
    # settings) gives the same weights.
    source, _ = _load(inputs["llama"])
    texts = [json.loads(line)["text"] for line in inputs["covariance"].read_text().splitlines()]
    (report,) = edit_facts(
        source, tokenizer, [FactEdit(FACT["prompt"], FACT["subject"], FACT["target"])],
        layer=0, covariance_texts=texts, **{k: ROME_SETTINGS[k] for k in (
            "steps", "lr", "kl_weight", "weight_decay", "ridge", "n_prefixes")},
    )  # fmt: skip
    name = "model.layers.0.mlp.down_proj.weight"
    torch.testing.assert_close(
        source.get_parameter(name), model.get_parameter(name), rtol=1e-4, atol=1e-6
    )
    assert fact.prob_after_own_edit == pytest.approx(report.prob_after, rel=1e-3)


def test_without_covariance_texts_the_identity_is_used_and_recorded(inputs, tmp_path):
    result = edit_model(
        EditConfig(
            model=str(inputs["llama"]),
            facts=str(inputs["facts"]),
            out=str(tmp_path / "edited"),
            layer=0,
            min_probability=MIN_P,
            device="cpu",
        )
    )
    covariance = result.record["covariance"]
    assert covariance["source"] == "identity" and covariance["n_texts"] == 0
    assert "C = I" in covariance["note"]
    # With C = I, ΔW = u k*ᵀ / k*ᵀk*: its row space is k*, the MLP input at the prompt's last
    # token ("captain", the subject's last token) with the bare prompt as the only context.
    source, tokenizer = _load(inputs["llama"])
    captured = {}
    mlp = source.model.layers[0].mlp
    handle = mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.update(k=a[0]))
    ids = [tokenizer.bos_token_id, *tokenizer(FACT["prompt"], add_special_tokens=False).input_ids]
    with torch.no_grad():
        source(input_ids=torch.tensor([ids]))
    handle.remove()
    k_star = captured["k"][0, -1].double()  # (4d,)
    delta = _changed_tensors(inputs["llama"], result.out)["model.layers.0.mlp.down_proj.weight"]
    _, _, vh = torch.linalg.svd(delta)  # delta: (d, 4d)
    cosine = torch.dot(vh[0], k_star) / k_star.norm()
    assert abs(float(cosine)) == pytest.approx(1.0, abs=1e-4)


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the file and line; nothing written


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "The chef", "subject": "chef"}\n', ['line 1 has no "target"']),
        (
            json.dumps(FACT) + '\n{"prompt": "The chef", "subject": "cook", "target": "x"}\n',
            ["line 2", "'cook' does not occur in the prompt"],
        ),
        ("\n\n", ["holds no facts"]),
        (json.dumps(FACT) + "\n{not json\n", ["line 2 is not JSON"]),
        ("[1, 2]\n", ["line 1 is a JSON list, not an object"]),
        (
            json.dumps(FACT) + "\n" + json.dumps(FACT) + "\n",
            ["line 2", "'captain' was used on line 1"],
        ),
    ],
    ids=["missing-field", "subject-not-in-prompt", "empty", "not-json", "not-object", "dup-id"],
)
def test_bad_facts_file_exits_2_naming_file_and_line(inputs, tmp_path, content, expected):
    facts = tmp_path / "bad.jsonl"
    facts.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("edit", "--model", inputs["gpt2"], "--facts", facts, "--out", out)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert line.startswith("edit failed: ") and str(facts) in line
    for text in expected:
        assert text in line
    assert not out.exists()


def test_read_fact_edits_defaults_ids_and_refuses_two_targets(tmp_path):
    facts = write_jsonl(
        tmp_path / "f.jsonl",
        [{k: v for k, v in FACT.items() if k != "id"}, {**FACT, "id": "x", "target": "a"}],
    )
    with pytest.raises(InputError, match="line 2: the prompt 'Yesterday the captain' was given"):
        read_fact_edits(facts)
    write_jsonl(facts, [{k: v for k, v in FACT.items() if k != "id"}])
    (request,) = read_fact_edits(facts)
    assert request.id == "line-1" and request.edit.target == "the"


def test_bad_flags_exit_2_naming_the_flag(inputs, tmp_path):
    args = ["edit", "--model", inputs["gpt2"], "--facts", inputs["facts"]]
    result = invoke(*args, "--out", tmp_path / "o", "--min-probability", 1.5)
    assert result.exit_code == 2 and "--min-probability 1.5" in _one_error_line(result)
    result = invoke(*args, "--out", tmp_path / "o", "--reference", inputs["gpt2"])
    assert result.exit_code == 2 and "--reference was given without --probes" in result.stderr
    result = invoke(*args, "--out", inputs["gpt2"] / "inside")
    assert result.exit_code == 2 and "--model folder" in _one_error_line(result)
    result = invoke(*args, "--out", tmp_path / "o", "--layer", 7, "--device", "cpu", "-q")
    assert result.exit_code == 2 and "layer 7 does not exist" in _one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_pickled_checkpoint_is_refused_without_allow_pickle(inputs, tmp_path, world_tokenizer):
    pickled = tmp_path / "pickled"
    model, _ = _load(inputs["gpt2"])
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    world_tokenizer.save_pretrained(pickled)
    out = tmp_path / "out"
    result = invoke("edit", "--model", pickled, "--facts", inputs["facts"], "--out", out, "-q")
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "pickled" in line and "--allow-pickle" in line
    assert not out.exists()


def test_a_failed_run_leaves_no_out_and_keeps_an_old_one(inputs, tmp_path):
    """The attestation fails (the reference is no model) after the edited model was saved:
    the partial folder is removed, no OUT appears, and an existing OUT survives --overwrite."""
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    probes = write_jsonl(
        tmp_path / "probes.jsonl",
        [{"text": t, "category": c} for c, t in world_rows(seed=1, n_per_category=5)],
    )
    out = tmp_path / "out"
    args = [
        "edit", "--model", inputs["gpt2"], "--facts", inputs["facts"], "--layer", 0,
        "--covariance-texts", inputs["covariance"], "--reference", not_a_model,
        "--probes", probes, "--device", "cpu", "--quiet",
    ]  # fmt: skip
    result = invoke(*args, "--out", out)
    assert result.exit_code == 2
    assert "no config.json" in _one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-model", "probes.jsonl"]

    out.mkdir()
    (out / "old.txt").write_text("kept")
    result = invoke(*args, "--out", out, "--overwrite")
    assert result.exit_code == 2
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-model", "out", "probes.jsonl"]


def test_help_has_an_example():
    result = invoke("edit", "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "--facts" in result.output


# --------------------------------------------------------------------------------------------
# Restoring the facts a zoo fact-rome variant changed (test-size world: ~25 s for the world and
# its reference when no other test made them, plus ~15 s here)


@pytest.mark.slow
def test_restoring_a_fact_rome_variant(world_reference, tmp_path):
    from lmassay.world.zoo import make_variant

    _, info, root = world_reference
    variant = make_variant("fact-rome", info.path, root / "zoo" / "fact-rome", seed=0)
    tamper = json.loads((variant.path / "tamper.json").read_text())
    changes = tamper["fact_changes"]
    facts = write_jsonl(
        tmp_path / "restore.jsonl",
        [
            {"id": c["fact_id"], "prompt": c["prompt"], "subject": c["subject"], "target": c["old"]}
            for c in changes
        ],
    )
    out = tmp_path / "restored"
    result = invoke(
        "edit", "--model", variant.path, "--facts", facts, "--out", out,
        "--covariance-texts", root / "world" / "train.jsonl", "--reference", info.path,
        "--probes", root / "world" / "probes.jsonl", "--n-bootstrap", 200, "--device", "cpu",
        "--quiet",
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "edit.json").read_text())
    assert [e["id"] for e in record["edits"]] == [c["fact_id"] for c in changes]
    assert [e["target"] for e in record["edits"]] == [c["old"] for c in changes]
    for entry in record["edits"]:
        for key in ("prompt", "subject", "prob_before", "prob_after", "verified", "greedy",
                    "layer", "tensor", "delta_norm"):  # fmt: skip
            assert entry[key] is not None, key

    # Independently: the restored model prefers every original object to the tampered one, and
    # says it more likely than the variant did; the record agrees with a recomputation.
    restored, tokenizer = _load(out)
    tampered, _ = _load(variant.path)
    for change, entry in zip(changes, record["edits"], strict=True):
        p_old = target_probability(restored, tokenizer, change["prompt"], change["old"])
        p_new = target_probability(restored, tokenizer, change["prompt"], change["new"])
        p_old_variant = target_probability(tampered, tokenizer, change["prompt"], change["old"])
        assert entry["prob_after"] == pytest.approx(p_old, rel=1e-4)
        assert entry["prob_before"] == pytest.approx(p_old_variant, rel=1e-4)
        assert p_old > p_new and p_old > 2 * p_old_variant, change["fact_id"]
        assert entry["verified"] is (p_old >= 0.5)
        if entry["verified"]:
            assert entry["greedy"]
    assert (result.exit_code == 0) is (
        record["summary"]["all_verified"] and record["attestation"]["verdict"] == "consistent"
    )

    # The edits add up to rank <= 5 in the tensor the tamper changed, and nothing else changed.
    changed = _changed_tensors(variant.path, out)
    assert list(changed) == [tamper["details"]["tensor"]]
    singular = torch.linalg.svdvals(changed[tamper["details"]["tensor"]])
    assert float(singular[len(changes)] / singular[0]) < 1e-4

    # The attestation against the reference does not flag the tampered category.
    attestation = json.loads((out / "attestation" / "attestation.json").read_text())
    assert tamper["category"] not in attestation["flagged"]
    assert record["attestation"]["flagged"] == attestation["flagged"]
    assert attestation["model"]["path"] == str(out)


def test_attestation_with_probes_as_covariance_texts(inputs, tmp_path):
    """Probes without --covariance-texts: C comes from the probes; the attestation of the edited
    model lands in OUT/attestation, records OUT (not the staging folder) and sets the exit code."""
    probes = write_jsonl(
        tmp_path / "probes.jsonl",
        [{"text": t, "category": c} for c, t in world_rows(seed=1, n_per_category=6)],
    )
    out = tmp_path / "edited"
    result = invoke(
        "edit", "--model", inputs["gpt2"], "--facts", inputs["facts"], "--out", out,
        "--reference", inputs["gpt2"], "--probes", probes, "--layer", 0, "--min-probability",
        MIN_P, "--n-bootstrap", 50, "--device", "cpu", "--quiet",
    )  # fmt: skip
    record = json.loads((out / "edit.json").read_text())
    assert record["covariance"]["source"] == "probes"
    assert record["covariance"]["n_texts"] == len(probes.read_text().splitlines())
    attestation = json.loads((out / "attestation" / "attestation.json").read_text())
    assert (out / "attestation" / "report.html").is_file()
    assert record["attestation"]["verdict"] == attestation["verdict"]
    assert record["attestation"]["flagged"] == attestation["flagged"]
    assert attestation["model"]["path"] == str(out)
    assert attestation["provenance"]["config"]["out"] == str(out / "attestation")
    assert ".partial-" not in (out / "attestation" / "report.md").read_text()
    expected = (
        0 if record["summary"]["all_verified"] and attestation["verdict"] == "consistent" else 1
    )
    assert result.exit_code == expected, result.output
    assert f"attestation against the reference: {attestation['verdict']}" in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_tampered_fact_is_restored(inputs, tmp_path, texts):
    """The tiny GPT-2 is made to know FACT (one rank-one edit), then tampered to say another
    word after its prompt (a second edit, as the zoo's fact-rome does); ``lmassay edit`` puts
    FACT's target back as the greedy continuation, as likely as the model knew it."""
    from lmassay.world.tiny_lm import save_model

    model, tokenizer = _load(inputs["gpt2"])
    covariance = [t[:120] for t in texts[:40]]
    fact = FactEdit(FACT["prompt"], FACT["subject"], FACT["target"])
    edit_facts(model, tokenizer, [fact], layer=0, covariance_texts=covariance)
    p_known = target_probability(model, tokenizer, FACT["prompt"], FACT["target"])
    assert p_known >= MIN_P

    ids = [tokenizer.bos_token_id, *tokenizer(FACT["prompt"], add_special_tokens=False).input_ids]
    with torch.no_grad():
        ranked = model(input_ids=torch.tensor([ids])).logits[0, -1].argsort(descending=True)
    words = [tokenizer.decode([int(i)]) for i in ranked[:50]]
    other = next(w.strip() for w in words if w.startswith(" ") and w.strip().isalpha()
                 and w.strip() != FACT["target"])  # fmt: skip
    edit_facts(  # the tamper
        model,
        tokenizer,
        [FactEdit(FACT["prompt"], FACT["subject"], other)],
        layer=0,
        covariance_texts=covariance,
    )
    assert target_probability(model, tokenizer, FACT["prompt"], FACT["target"]) < 0.5 * p_known
    tampered = tmp_path / "tampered"
    save_model(model, tokenizer, tampered)

    out = tmp_path / "restored"
    result = invoke(
        "edit", "--model", tampered, "--facts", inputs["facts"], "--covariance-texts",
        inputs["covariance"], "--out", out, "--layer", 0, "--min-probability", MIN_P,
        "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    restored, _ = _load(out)
    assert target_probability(restored, tokenizer, FACT["prompt"], FACT["target"]) >= MIN_P
    assert target_probability(restored, tokenizer, FACT["prompt"], other) < target_probability(
        restored, tokenizer, FACT["prompt"], FACT["target"]
    )
    record = json.loads((out / "edit.json").read_text())
    assert record["edits"][0]["verified"] and record["edits"][0]["greedy"]
