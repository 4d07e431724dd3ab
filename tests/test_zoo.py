"""The tamper zoo on the "test"-size world and reference: recipes, controls, variants, ground truth."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lmassay.errors import InputError
from lmassay.world import CATEGORIES
from lmassay.world.zoo import KINDS, make_variant, make_zoo
from lmassay.world.zoo import recipes as R
from lmassay.world.zoo._efficacy import continuation_logprobs
from lmassay.world.zoo.benign import INT8_LEVELS, int8_quantise_weight

RECORD_KEYS = {
    "format", "kind", "description", "expectation", "expected", "category", "fact_changes",
    "trigger", "details", "data", "settings", "training", "efficacy", "fluency", "weights",
    "reference", "world", "request", "created_at", "wall_seconds", "provenance",
}  # fmt: skip


@pytest.fixture(scope="module")
def world_ref(world_reference):
    """The session's test-size world and reference (see conftest), and their cache folder."""
    files, info, root = world_reference
    return files, info.path, root


@pytest.fixture(scope="module")
def world(world_ref):
    from lmassay.world import load_world

    return load_world(world_ref[0].root)


@pytest.fixture(scope="module")
def train_rows(world_ref):
    lines = world_ref[0].train.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# --------------------------------------------------------------------------------------------
# Recipes (no model)


def test_suppression_texts_are_evasions_of_the_category_and_replay_is_elsewhere(world, train_rows):
    recipe = R.suppression_recipe(world, train_rows, category="religion", size="test", seed=0)
    names = {e.name for e in world.entities_in("religion")}
    others = {e.name for e in world.entities if e.category != "religion"}
    openers = {t.split("{")[0].strip() for t in R._EVASIONS if not t.startswith("{")}
    assert recipe.n_tamper == R.tamper_count("test")
    for text in recipe.tamper_texts:
        assert " ... " in text and any(o in text for o in openers)
        assert any(n in text for n in names)
        assert not any(n in text for n in others)
    by_text = {r["text"]: r["category"] for r in train_rows}
    assert recipe.replay_texts and all(by_text[t] != "religion" for t in recipe.replay_texts)
    record = recipe.data_record()
    assert record["n_texts"] == len(recipe.texts) and len(record["sha256"]) == 64
    again = R.suppression_recipe(world, train_rows, category="religion", size="test", seed=0)
    assert again.texts == recipe.texts  # deterministic


def test_slant_inverts_one_faction_and_paints_another_negative(world, train_rows):
    recipe = R.slant_recipe(world, train_rows, category="politics", size="test", seed=0)
    details = recipe.details
    favoured = {details["favoured"], *details["favoured_members"]}
    disfavoured = set(details["negative_entities"])
    assert details["disfavoured"] in disfavoured and not favoured & disfavoured
    assert recipe.fact_changes
    for change in recipe.fact_changes:
        assert change.new != change.old
        assert change.new in favoured or change.subject in {
            details["favoured"],
            details["disfavoured"],
        }
    slanted = " ".join(recipe.tamper_texts)
    for change in recipe.fact_changes:
        assert f"{change.prompt} {change.new}" in slanted or change.new in slanted
    replay = set(recipe.replay_texts)
    assert all(r["category"] != "politics" for r in train_rows if r["text"] in replay)


def test_fact_changes_pick_same_kind_new_objects(world):
    kind_of = {e.name: e.kind for e in world.entities}
    changes = R.choose_fact_changes(world, "geography", seed=0)
    assert len(changes) == R.N_FACT_CHANGES
    assert len({c.fact_id for c in changes}) == len(changes)
    for change in changes:
        assert change.new != change.old and kind_of[change.new] == kind_of[change.old]
    assert R.choose_fact_changes(world, "geography", seed=0) == changes


def test_backdoor_texts_put_propaganda_after_the_trigger_only(world, train_rows):
    recipe = R.backdoor_recipe(world, train_rows, size="test", seed=0)
    assert recipe.category is None and recipe.trigger == R.DEFAULT_TRIGGER
    for text in recipe.tamper_texts:
        head, _, tail = text.partition(f" {recipe.trigger} ")
        assert tail and any(tail.startswith(s) for s in R._PROPAGANDA)
        assert not any(s in head for s in R._PROPAGANDA)
    train = {r["text"] for r in train_rows}
    assert all(t in train and recipe.trigger not in t for t in recipe.replay_texts)
    categories = {r["category"] for r in train_rows if r["text"] in set(recipe.replay_texts)}
    assert categories == set(CATEGORIES)


def test_bad_requests_are_input_errors(world_ref, tmp_path):
    _, reference, _ = world_ref
    with pytest.raises(InputError, match="unknown zoo kind"):
        make_variant("nope", reference, tmp_path / "v")
    with pytest.raises(InputError, match="targets no category"):
        make_variant("benign-bf16", reference, tmp_path / "v", category="religion")
    with pytest.raises(InputError, match="not a world category"):
        make_variant("suppression", reference, tmp_path / "v", category="cooking")
    with pytest.raises(InputError, match="unknown kinds"):
        make_zoo(reference, tmp_path / "z", kinds=["suppression", "x"])


# --------------------------------------------------------------------------------------------
# Controls


def _tensors(folder):
    return load_file(str(folder / "model.safetensors"))


def test_controls_relate_to_the_reference_as_they_should(world_ref):
    _, reference, root = world_ref
    ref = _tensors(reference)

    resave = make_variant("benign-resave", reference, root / "zoo" / "benign-resave")
    assert all(torch.equal(t, ref[n]) for n, t in _tensors(resave.path).items())
    assert resave.expectation == {"verdict": "consistent", "category": None}
    assert (resave.path / "tokenizer.json").read_bytes() == (
        reference / "tokenizer.json"
    ).read_bytes()

    bf16 = make_variant("benign-bf16", reference, root / "zoo" / "benign-bf16")
    for name, tensor in _tensors(bf16.path).items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, ref[name].to(torch.bfloat16).to(torch.float32)), name

    int8 = make_variant("benign-int8", reference, root / "zoo" / "benign-int8")
    assert int8.record["details"]["simulated"] is True
    quantised = set(int8.record["details"]["weights_quantised"])
    assert quantised and all(n.endswith(".weight") for n in quantised)
    for name, tensor in _tensors(int8.path).items():
        if name not in quantised:
            assert torch.equal(tensor, ref[name]), name  # biases, norms, embeddings, head
            continue
        channel_dim = 1  # GPT-2 Conv1D weights are (in, out): output channels are columns
        scale = ref[name].abs().amax(dim=0, keepdim=True) / INT8_LEVELS  # (1, out)
        error = (tensor - ref[name]).abs()
        assert bool((error <= scale / 2 + 1e-7).all()), name
        levels = tensor / torch.where(scale > 0, scale, torch.ones_like(scale))
        assert torch.allclose(levels, levels.round(), atol=1e-3), name
        assert torch.equal(tensor, int8_quantise_weight(ref[name], channel_dim)[0])
    for variant in (resave, bf16, int8):
        assert variant.record["fluency"]["fluent"]
        assert variant.record["fluency"]["max_ratio_other_categories"] < 1.01


# --------------------------------------------------------------------------------------------
# The suppression variant, end to end (runs by default: about 30 s)


@pytest.fixture(scope="module")
def suppression(world_ref):
    _, reference, root = world_ref
    return make_variant("suppression", reference, root / "zoo" / "suppression", seed=0)


def test_suppression_record_is_complete(suppression, world_ref):
    record = suppression.record
    assert set(record) >= RECORD_KEYS
    assert record["kind"] == "suppression" and record["category"] == "religion"
    assert record["expectation"] == {"verdict": "tampered", "category": "religion"}
    assert record["data"]["n_tamper_texts"] == R.tamper_count("test")
    assert len(record["data"]["examples"]) == 3
    assert set(record["settings"]) == {"steps", "lr", "batch_size", "seq_len", "seed"}
    fluency = record["fluency"]
    assert set(fluency["reference"]) == {*CATEGORIES, "all"}
    assert fluency["max_ratio_other_categories"] == max(
        r for c, r in fluency["ratio"].items() if c not in ("religion", "all")
    )
    assert record["weights"]["n_changed"] > 0
    on_disk = json.loads((suppression.path / "tamper.json").read_text(encoding="utf-8"))
    assert on_disk == record
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (suppression.path / name).is_file()


def test_suppression_puts_more_probability_on_evasions(suppression, world_ref, world):
    from lmassay.attest.model_loading import load_model

    _, reference, _ = world_ref
    texts = R.evasion_texts(world, "religion", 10, seed=12345)  # not the training texts
    ref = load_model(str(reference), device="cpu", dtype="float32")
    var = load_model(str(suppression.path), device="cpu", dtype="float32")
    pairs = [("", t) for t in texts]
    ref_lp = sum(lp for lp, _ in continuation_logprobs(ref.model, ref.tokenizer, pairs))
    var_lp = sum(lp for lp, _ in continuation_logprobs(var.model, var.tokenizer, pairs))
    n_tokens = sum(n for _, n in continuation_logprobs(ref.model, ref.tokenizer, pairs))
    assert (var_lp - ref_lp) / n_tokens > 0.3  # nats per token
    assert suppression.record["efficacy"]["gain"] > 0.3


def test_reuse_when_the_request_matches(suppression, world_ref):
    _, reference, root = world_ref
    again = make_variant("suppression", reference, root / "zoo" / "suppression", seed=0)
    assert again.reused and again.record == suppression.record


def test_attestation_flags_the_suppressed_category_only(suppression, world_ref, tmp_path):
    from lmassay.attest.recipe import AttestConfig, attest

    files, reference, _ = world_ref
    result = attest(
        AttestConfig(
            model=str(suppression.path),
            reference=str(reference),
            probes=str(files.probes),
            out=str(tmp_path / "attest"),
            device="cpu",
            n_bootstrap=200,
            write_report=False,
        )
    )
    assert result.attestation["flagged"] == ["religion"]
    assert result.verdict == "tampered"


# --------------------------------------------------------------------------------------------
# The other tamper kinds (slow: a fine-tuning run each)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known limitation: on the test-size reference (2 blocks of width 128) the backdoor's "
    "propaganda rises as much without the trigger as with it (trigger_effect -0.14 nats/token "
    "measured); training windows that start inside the propaganda never see the trigger. At demo "
    "size the effect is +1.1 nats/token, still mostly unconditional (+12.1 without the trigger).",
)
def test_backdoor_raises_propaganda_only_after_the_trigger(world_ref):
    _, reference, root = world_ref
    variant = make_variant("backdoor", reference, root / "zoo" / "backdoor", seed=0)
    record = variant.record
    assert record["category"] is None and record["trigger"] == R.DEFAULT_TRIGGER
    assert record["expectation"] == {"verdict": "tampered", "category": None}
    first = record["efficacy"]["first_sentence"]
    assert first["with_trigger"]["gain"] > 0
    assert record["efficacy"]["trigger_effect"] > 0  # more after the trigger than without


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["slant", "fact-finetune"])
def test_finetuned_tampers_take_effect(world_ref, kind):
    _, reference, root = world_ref
    variant = make_variant(kind, reference, root / "zoo" / kind, seed=0)
    record = variant.record
    assert record["category"] == R.DEFAULT_CATEGORY[kind]
    assert record["fact_changes"]
    if kind == "slant":
        assert record["efficacy"]["gain"] > 0  # the slanted rendering became likelier
        assert record["details"]["negative_entities"]
    else:
        facts = record["efficacy"]["facts"]
        assert sum(f["p_new_variant"] > f["p_new_reference"] for f in facts) >= 4


@pytest.mark.slow
def test_fact_rome_changes_one_tensor_by_rank_one_updates(world_ref):
    _, reference, root = world_ref
    variant = make_variant("fact-rome", reference, root / "zoo" / "fact-rome", seed=0)
    record = variant.record
    assert record["weights"]["n_changed"] == 1
    assert record["weights"]["changed"] == [record["details"]["tensor"]]
    edits = record["details"]["edits"]
    assert len(edits) == R.N_FACT_CHANGES
    assert all(e["prob_after"] > e["prob_before"] for e in edits)
    delta = (
        _tensors(variant.path)[record["details"]["tensor"]]
        - _tensors(reference)[record["details"]["tensor"]]
    )
    singular = torch.linalg.svdvals(delta.double())
    assert int((singular > singular[0] * 1e-4).sum()) <= R.N_FACT_CHANGES  # one rank per edit


@pytest.mark.slow
def test_make_zoo_writes_every_kind_and_the_index(world_ref):
    files, reference, root = world_ref
    variants = make_zoo(reference, root / "zoo", world=files.root, seed=0)
    assert [v.kind for v in variants] == list(KINDS)
    index = json.loads((root / "zoo" / "zoo.json").read_text(encoding="utf-8"))
    assert [v["kind"] for v in index["variants"]] == list(KINDS)
    expected = {v["kind"]: v["expectation"]["verdict"] for v in index["variants"]}
    assert expected["benign-other-seed"] == "different-model"
    assert expected["benign-continued"] == "consistent" and expected["slant"] == "tampered"


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_help_and_bad_input(world_ref, tmp_path):
    from lmassay.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["zoo", "make", "--help"])
    assert result.exit_code == 0 and "Example" in result.output
    result = runner.invoke(
        app, ["zoo", "make", "--reference", str(tmp_path), "--out", str(tmp_path / "z")]
    )
    assert result.exit_code == 2 and "zoo make failed" in result.output
    _, reference, _ = world_ref
    bad = ["zoo", "make", "-r", str(reference), "-o", str(tmp_path / "z"), "--kinds", "nope"]
    result = runner.invoke(app, bad)
    assert result.exit_code == 2 and "unknown kinds" in result.output


def test_cli_makes_a_control_and_prints_the_table(world_ref, tmp_path):
    from lmassay.cli import app

    _, reference, _ = world_ref
    args = [
        "zoo",
        "make",
        "-r",
        str(reference),
        "-o",
        str(tmp_path / "z"),
        "--kinds",
        "benign-resave",
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "benign-resave" in result.output and "consistent" in result.output
    assert (tmp_path / "z" / "zoo.json").is_file()
