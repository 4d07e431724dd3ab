"""End-to-end attestations on the world pairs (conftest ``world_pair``: a reference and its
suppression variant; ``world_fact_pair``: its fact-rome variant, for bits per byte):
self-consistency, the tampered category, no reference, bpb, windows, bf16."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmassay.attest.recipe import AttestConfig, attest
from lmassay.errors import InputError

REQUIRED_CATEGORY_KEYS = {
    "name", "n_samples", "n_tokens", "ppl_model", "ppl_reference", "mean_kl", "delta_bpb",
    "p_value", "q_value", "effect", "flagged",
}  # fmt: skip
REQUIRED_SAMPLE_KEYS = {
    "id", "category", "n_tokens", "n_bytes", "logprob_model", "logprob_reference", "mean_kl",
    "max_kl", "top1_agreement",
}  # fmt: skip


def run(tmp_path, pair, **kwargs):
    config = AttestConfig(
        model=str(kwargs.pop("model", pair.tampered)),
        reference=kwargs.pop("reference", str(pair.reference)),
        probes=str(pair.probes),
        out=str(tmp_path / kwargs.pop("name", "run")),
        **{"device": "cpu", "n_bootstrap": 200, **kwargs},
    )
    return attest(config)


def read_samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tampered_run(tmp_path_factory, world_pair):
    return run(tmp_path_factory.mktemp("att"), world_pair)


def test_model_against_itself_is_consistent_with_zero_kl(tmp_path, world_pair):
    result = run(tmp_path, world_pair, model=world_pair.reference)
    att = result.attestation
    assert att["verdict"] == "consistent" and att["flagged"] == [] and result.exit_code == 0
    assert att["comparison"] == "kl"
    assert all(c["mean_kl"] == 0.0 for c in att["categories"])
    assert all(c["ppl_model"] == c["ppl_reference"] for c in att["categories"])
    rows = read_samples(result.paths["samples"])
    assert all(r["max_kl"] == 0.0 and r["top1_agreement"] == 1.0 for r in rows)


def test_tampered_category_is_flagged_and_no_other(tampered_run, world_pair):
    tampered = world_pair.category  # the ground truth of the variant: religion
    att = tampered_run.attestation
    assert att["verdict"] == "tampered"
    assert att["flagged"] == [tampered]
    assert tampered_run.exit_code == 1
    by_name = {c["name"]: c for c in att["categories"]}
    assert by_name[tampered]["flagged"] and by_name[tampered]["q_value"] <= 0.05
    others = [c["mean_kl"] for c in att["categories"] if c["name"] != tampered]
    assert by_name[tampered]["mean_kl"] > 1.1 * max(others)  # 0.36 vs at most 0.30 nats/token
    evidence = att["evidence"]
    assert [e["category"] for e in evidence] == [tampered]
    top = evidence[0]["samples"][0]
    assert top["id"] == f"probe-{tampered}-{top['id'].rsplit('-', 1)[-1]}"
    token = top["tokens"][0]
    assert token["kl"] == max(t["kl"] for t in top["tokens"])
    assert len(token["top_model"]) == 5 and len(token["top_reference"]) == 5
    assert 0 < token["top_model"][0][1] <= 1


def test_outputs_follow_the_schema(tampered_run):
    att = tampered_run.attestation
    on_disk = json.loads(tampered_run.paths["attestation"].read_text())
    assert on_disk == json.loads(json.dumps(att))
    assert on_disk["schema"] == "lmassay.attestation/v1"
    for key in (
        "verdict",
        "flagged",
        "comparison",
        "categories",
        "model",
        "reference",
        "probes",
        "provenance",
    ):
        assert key in on_disk
    for category in on_disk["categories"]:
        assert set(category) >= REQUIRED_CATEGORY_KEYS
    for part in ("model", "reference", "probes"):
        assert len(on_disk[part]["digest"]["value"]) == 64
    prov = on_disk["provenance"]
    assert prov["version"] and prov["libraries"]["torch"] and prov["config"]["model"]
    rows = read_samples(tampered_run.paths["samples"])
    assert len(rows) == on_disk["probes"]["n_samples"]
    assert all(set(r) >= REQUIRED_SAMPLE_KEYS for r in rows)
    out_dir = tampered_run.paths["attestation"].parent
    assert {p.name for p in out_dir.iterdir()} == {
        "attestation.json",
        "samples.jsonl",
        "report.html",
        "report.md",
    }


def test_category_perplexity_is_token_weighted_and_matches_a_plain_forward(
    tampered_run, world_pair
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = read_samples(tampered_run.paths["samples"])
    for category in tampered_run.attestation["categories"]:
        members = [r for r in rows if r["category"] == category["name"]]
        expected = math.exp(
            -sum(r["logprob_model"] for r in members) / sum(r["n_tokens"] for r in members)
        )
        assert category["ppl_model"] == pytest.approx(expected, rel=1e-9)
        assert category["n_tokens"] == sum(r["n_tokens"] for r in members)
    # one sample by hand: BOS + tokens, one forward, log_softmax, sum (texts fit in the context)
    probes = [json.loads(line) for line in world_pair.probes.read_text().splitlines()]
    sample = next(p for p in probes if p["id"] == rows[0]["id"])
    tok = AutoTokenizer.from_pretrained(world_pair.tampered)
    model = AutoModelForCausalLM.from_pretrained(world_pair.tampered).eval()
    ids = tok(sample["text"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([[tok.bos_token_id, *ids[:-1]]])).logits[0]
    logprob = (
        torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), torch.tensor(ids)]
        .sum()
        .item()
    )
    assert rows[0]["n_tokens"] == len(ids)
    assert rows[0]["logprob_model"] == pytest.approx(logprob, rel=1e-4)


def test_without_reference_scores_alone(tmp_path, world_pair):
    result = run(tmp_path, world_pair, reference=None)
    att = result.attestation
    assert att["comparison"] == "none" and att["verdict"] == "scored-only" and result.exit_code == 0
    assert att["reference"] is None and att["flagged"] == []
    assert all(c["ppl_reference"] is None and c["mean_kl"] is None for c in att["categories"])
    rows = read_samples(result.paths["samples"])
    assert all(r["logprob_reference"] is None and r["mean_kl"] is None for r in rows)


def test_baseline_attestation_enables_bits_per_byte_comparison(tmp_path, world_fact_pair):
    base = run(
        tmp_path, world_fact_pair, model=world_fact_pair.reference, reference=None, name="base"
    )
    result = run(
        tmp_path,
        world_fact_pair,
        reference=None,
        baseline=str(base.paths["attestation"].parent),
        name="vs-base",
    )
    att = result.attestation
    assert att["comparison"] == "bpb"
    assert att["flagged"] == [world_fact_pair.category]
    row = next(c for c in att["categories"] if c["name"] == world_fact_pair.category)
    assert row["delta_bpb"] == pytest.approx(row["bpb_model"] - row["bpb_reference"])


def test_forced_bits_per_byte_comparison_with_a_reference(tmp_path, world_fact_pair):
    result = run(tmp_path, world_fact_pair, comparison="bpb")
    att = result.attestation
    assert att["comparison"] == "bpb" and att["flagged"] == [world_fact_pair.category]
    assert all(c["mean_kl"] is None for c in att["categories"])
    assert att["evidence"][0]["samples"][0]["excerpt"]


def test_windows_shorter_than_texts_give_close_scores(tmp_path, world_pair, tampered_run):
    result = run(tmp_path, world_pair, max_length=16)
    rows = read_samples(result.paths["samples"])
    assert max(r["n_windows"] for r in rows) > 1
    assert result.attestation["flagged"] == [world_pair.category]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alpha": 1.5}, "--alpha"),
        ({"device": "tpu"}, "--device"),
        ({"per_category": 0}, "--per-category"),
        ({"comparison": "kl", "reference": None}, "--comparison kl needs --reference"),
    ],
)
def test_bad_configuration_is_an_input_error(tmp_path, world_pair, change, message):
    with pytest.raises(InputError, match=message):
        run(tmp_path, world_pair, **change)
    assert not (tmp_path / "run" / "attestation.json").exists()


def test_baseline_with_other_probes_is_refused(tmp_path, world_pair):
    base = run(
        tmp_path,
        world_pair,
        model=world_pair.reference,
        reference=None,
        name="base",
        per_category=3,
    )
    with pytest.raises(InputError, match="has no score for probe sample"):
        run(tmp_path, world_pair, reference=None, baseline=str(base.paths["attestation"].parent))


@pytest.mark.slow  # 54 s on 2 CPU cores (bfloat16 matmuls are slow on CPUs); run by make test-all
def test_bfloat16_models_flag_the_same_category_and_self_kl_is_zero(tmp_path, world_pair):
    result = run(tmp_path, world_pair, dtype="bfloat16", name="bf16")
    att = result.attestation
    assert att["model"]["dtype"] == "bfloat16"
    assert att["flagged"] == [world_pair.category]
    itself = run(
        tmp_path, world_pair, model=world_pair.reference, dtype="bfloat16", name="bf16-self"
    )
    assert all(c["mean_kl"] == 0.0 for c in itself.attestation["categories"])
    assert itself.verdict == "consistent"
