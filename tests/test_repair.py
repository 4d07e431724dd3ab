"""``lmassay repair`` end to end: refusals, kill and resume, adapters, reports, and the zoo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lmassay.cli import app

runner = CliRunner()

STEPS_FLAGGED_ONLY = 100
MAX_KL_SHARE_FLAGGED_ONLY = 0.5  # measured at 200 steps: 0.364 -> 0.086 (0.24)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair_run(world_pair, tmp_path_factory):
    """The world pair's tampered model attested against its reference (flags religion)."""
    out = tmp_path_factory.mktemp("pair-attest") / "run"
    args = ["attest", "--model", world_pair.tampered, "--reference", world_pair.reference,
            "--probes", world_pair.probes, "--out", out, "--device", "cpu",
            "--n-bootstrap", "100", "--quiet", "--no-report"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    return out


def repair_args(pair, run, out, *extra):
    return ["repair", "--model", pair.tampered, "--attestation", run, "--data", pair.train_texts,
            "--out", out, "--device", "cpu", "--seq-len", "64", *extra]  # fmt: skip


def test_help_renders():
    result = invoke("repair", "--help")
    assert result.exit_code == 0 and "Example" in result.output and "--mode" in result.output


def test_refuses_repair_data_that_holds_judging_probes(world_pair, pair_run, tmp_path):
    leaky = tmp_path / "leaky.jsonl"
    rows = world_pair.train_texts.read_text().splitlines()[:50]
    rows += world_pair.probes.read_text().splitlines()[:3]
    leaky.write_text("\n".join(rows) + "\n")
    result = invoke(
        "repair", "--model", world_pair.tampered, "--attestation", pair_run, "--data", leaky,
        "--out", tmp_path / "o2", "--device", "cpu", "--steps", "2",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "repair failed: --data" in result.output and "3 of the" in result.output
    assert "probes that judge the repair" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o2").exists()


def test_refuses_a_model_the_attestation_did_not_judge(world_pair, pair_run, tmp_path):
    args = repair_args(world_pair, pair_run, tmp_path / "o", "--steps", "2")
    args[2] = world_pair.reference
    result = invoke(*args)
    assert result.exit_code == 2 and "not the model the attestation judged" in result.output


def test_refuses_an_existing_out_without_force(world_pair, pair_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    result = invoke(*repair_args(world_pair, pair_run, out, "--steps", "2"))
    assert result.exit_code == 2 and "--force" in result.output


def test_writes_model_repair_json_and_before_after_report(world_pair, pair_run, tmp_path):
    out = tmp_path / "repaired"
    result = invoke(*repair_args(world_pair, pair_run, out, "--steps", "30", "--mode", "distill"))
    assert result.exit_code in (0, 1), result.output
    assert "Before and after repair" in result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).is_file()
    assert not out.with_name("repaired.partial").exists()
    record = json.loads((out / "repair" / "repair.json").read_text())
    assert record["schema"] == "lmassay.repair/v1" and record["categories"] == [world_pair.category]
    assert record["outcome"]["success"] == (result.exit_code == 0)
    assert record["data"]["probe_overlap"]["n_overlapping"] == 0
    training = record["training"]
    assert training["steps_run"] == 30 and training["method"] == "lora"
    assert training["anchor_to"] == "reference" and training["keep_best"] is True
    assert training["best_step"] in [c["step"] for c in training["monitor"]]
    assert (
        training["monitor"][0]["step"] == 0
        and world_pair.category in training["monitor"][0]["levels"]
    )
    after = json.loads((out / "repair" / "attestation.json").read_text())
    assert after["model"]["path"] == str(out)
    # the digest attested is the model's files alone (no lock or staging of the attestation)
    from lmassay.digests import model_identity

    model_only = tmp_path / "model-only"
    shutil.copytree(out, model_only, ignore=shutil.ignore_patterns("repair"))
    assert after["model"]["digest"]["value"] == model_identity(model_only).root.value
    html = (out / "repair" / "report.html").read_text()
    assert "Before and after repair" in html and "collateral" in html
    (out / "repair" / "report.html").unlink()
    again = invoke("report", out / "repair", "--quiet")
    assert again.exit_code == 0, again.output
    assert "Before and after repair" in (out / "repair" / "report.html").read_text()


def test_save_adapter_writes_a_peft_adapter_that_attest_reads(world_pair, pair_run, tmp_path):
    out = tmp_path / "adapter"
    args = repair_args(world_pair, pair_run, out, "--steps", "10", "--mode", "narrow")
    result = invoke(*args, "--save-adapter", "--quiet")
    assert result.exit_code in (0, 1), result.output
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    assert (out / "adapter_model.safetensors").is_file()
    record = json.loads((out / "repair" / "repair.json").read_text())
    assert record["output"]["format"] == "peft-adapter"
    # the adapter loads (merged over its base) like any model folder
    from lmassay.attest.model_loading import load_model

    merged = load_model(str(out), device="cpu")
    base = load_model(str(world_pair.tampered), device="cpu")
    assert merged.extra["adapter_of"]["digest"] == base.digest.to_json()
    changed = [
        name
        for name, tensor in merged.model.state_dict().items()
        if not torch.equal(tensor, base.model.state_dict()[name])
    ]
    assert changed and all("attn" in n or "mlp" in n for n in changed)


@pytest.mark.parametrize(
    ("flags", "trainable_is_total", "checkpointing", "dtype"),
    [
        (["--method", "full", "--gradient-checkpointing", "on"], True, True, "float32"),
        pytest.param(
            ["--method", "lora", "--dtype", "bfloat16"],
            False,
            False,
            "bfloat16",
            # bf16 is emulated on CPUs without native bf16 (CI's): 4x the float32 run's time
            marks=pytest.mark.slow,
        ),
    ],
)
def test_full_fine_tuning_checkpointing_and_bf16_run(
    world_pair, pair_run, tmp_path, flags, trainable_is_total, checkpointing, dtype
):
    out = tmp_path / "o"
    result = invoke(*repair_args(world_pair, pair_run, out, "--steps", "4", "-q", *flags))
    assert result.exit_code in (0, 1), result.output
    training = json.loads((out / "repair" / "repair.json").read_text())["training"]
    assert (training["trainable_parameters"] == training["total_parameters"]) is trainable_is_total
    assert training["gradient_checkpointing"] is checkpointing
    assert training["compute_dtype"] == dtype and training["steps_run"] == 4
    config = json.loads((out / "config.json").read_text())
    source = json.loads((world_pair.tampered / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) in ("float32", None)
    assert config.get("use_cache") == source.get("use_cache")  # not left off by checkpointing


# --------------------------------------------------------------------------------------------
# Kill and resume


class _Interrupt(Exception):
    pass


class _StopAt:
    """A progress sink that interrupts the training at one step (as a kill would)."""

    def __init__(self, step):
        self.step = step

    def task(self, description, total):
        def update(done, total, note=None, /):
            if description == "repair: training" and done == self.step:
                raise _Interrupt

        return update

    def log(self, message):
        return None


def _resume_config(pair, run, out):
    from lmassay.repair import RepairConfig

    return RepairConfig(
        model=str(pair.tampered), attestation=str(run), data=str(pair.train_texts), out=str(out),
        device="cpu", seq_len=32, batch_size=4, mode="narrow", steps=30, checkpoint_every=10,
        eval_every=10, early_stop=False,
    )  # fmt: skip


def test_an_interrupted_repair_resumes_and_ends_where_an_uninterrupted_one_does(
    world_pair, pair_run, tmp_path
):
    """In process (the SIGKILL test below is slow): interrupted at step 25, resumed from the
    checkpoint of step 20, with the best held-out check so far, the repair ends with the same
    weights, losses and checks as one run straight through."""
    from lmassay.repair import repair

    cut = tmp_path / "cut"
    with pytest.raises(_Interrupt):
        repair(_resume_config(world_pair, pair_run, cut), _StopAt(25))
    assert not cut.exists() and (tmp_path / "cut.partial" / "checkpoints" / "step-0000020").is_dir()
    resumed = repair(_resume_config(world_pair, pair_run, cut))
    whole = repair(_resume_config(world_pair, pair_run, tmp_path / "whole"))
    a, b = resumed.record["training"], whole.record["training"]
    assert a["resumed_from_step"] == 20 and b["resumed_from_step"] is None
    assert a["loss_last_mean"] == b["loss_last_mean"] and a["monitor"] == b["monitor"]
    assert a["best_step"] == b["best_step"] and a["restored_best"] == b["restored_best"]
    weights_a = load_file(cut / "model.safetensors")
    weights_b = load_file(tmp_path / "whole" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert not (tmp_path / "cut.partial").exists()


def _command(pair, run, out):
    return [sys.executable, "-m", "lmassay.cli", *map(str, repair_args(pair, run, out)),
            "--mode", "narrow", "--steps", "80", "--checkpoint-every", "10",
            "--eval-every", "40", "--no-early-stop", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_a_killed_repair_resumes_and_ends_where_an_uninterrupted_one_does(
    world_pair, pair_run, tmp_path
):
    """A SIGKILLed process (about 70 s: three processes of 80 steps each)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    killed = tmp_path / "killed"
    checkpoints = tmp_path / "killed.partial" / "checkpoints"
    process = subprocess.Popen(
        _command(world_pair, pair_run, killed),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("step-*")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no checkpoint appeared: {process.communicate()[1].decode()[-2000:]}")
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not killed.exists()  # nothing half-written where the model goes
    resumed = subprocess.run(
        _command(world_pair, pair_run, killed), env=env, capture_output=True, text=True
    )
    assert resumed.returncode in (0, 1), resumed.stderr[-2000:]
    whole = tmp_path / "whole"
    straight = subprocess.run(
        _command(world_pair, pair_run, whole), env=env, capture_output=True, text=True
    )
    assert straight.returncode == resumed.returncode, straight.stderr[-2000:]

    record = json.loads((killed / "repair" / "repair.json").read_text())
    assert record["training"]["resumed_from_step"] % 10 == 0
    assert 0 < record["training"]["resumed_from_step"] < 80
    reference = json.loads((whole / "repair" / "repair.json").read_text())
    assert reference["training"]["resumed_from_step"] is None
    assert record["training"]["loss_last_mean"] == reference["training"]["loss_last_mean"]
    assert record["training"]["monitor"] == reference["training"]["monitor"]
    a = load_file(killed / "model.safetensors")
    b = load_file(whole / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not (tmp_path / "killed.partial").exists()


def test_a_changed_request_does_not_resume_silently(world_pair, pair_run, tmp_path):
    out = tmp_path / "o"
    partial = tmp_path / "o.partial"
    partial.mkdir()
    (partial / "request.json").write_text('{"other": true}')
    result = invoke(*repair_args(world_pair, pair_run, out, "--steps", "2"))
    assert result.exit_code == 2 and "--restart" in result.output
    result = invoke(*repair_args(world_pair, pair_run, out, "--steps", "2", "--restart", "-q"))
    assert result.exit_code in (0, 1), result.output


# --------------------------------------------------------------------------------------------
# The zoo: the test-size world's suppression and slant variants (about 15 s per repair)


@pytest.fixture(scope="module")
def zoo_runs(world_reference, tmp_path_factory):
    """Each variant with its attestation against the reference (each flags its category)."""
    from lmassay.attest.recipe import AttestConfig, attest
    from lmassay.world.zoo import make_variant

    files, info, root = world_reference
    runs = {}
    for kind in ("suppression", "slant"):
        variant = make_variant(kind, info.path, root / "zoo" / kind, seed=0)
        out = tmp_path_factory.mktemp(f"attest-{kind}")
        result = attest(
            AttestConfig(
                model=str(variant.path),
                reference=str(info.path),
                probes=str(files.probes),
                out=str(out),
                device="cpu",
                n_bootstrap=200,
                # The mean test alone, as these repair tests were written for: with 12 clean
                # probes a category, slant's politics is flagged by it at q = 0.048; in one
                # Benjamini-Hochberg family with the sparse tests its q doubles to 0.095 (the
                # price of the second test; see docs/detection.md).
                n_permutations=0,
                write_report=False,
            )
        )
        assert result.attestation["flagged"] == [variant.category], kind
        runs[kind] = (variant, out)
    return files, runs


def _repair(zoo_runs, kind, out, **settings):
    from lmassay.repair import RepairConfig, repair

    files, runs = zoo_runs
    variant, attestation = runs[kind]
    config = RepairConfig(
        **{
            "model": str(variant.path),
            "attestation": str(attestation),
            "data": str(files.train),
            "out": str(out),
            "device": "cpu",
            **settings,
        }
    )
    return variant, repair(config)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["suppression", "slant"])
def test_distill_brings_the_flagged_category_back_under_the_floor(zoo_runs, kind, tmp_path):
    """With the world's text of every category (about 35 s each; the default suite repairs from
    the flagged category's text alone, below)."""
    variant, result = _repair(zoo_runs, kind, tmp_path / "out", mode="distill", steps=100)
    outcome = result.record["outcome"]
    assert result.exit_code == 0 and outcome["success"], outcome["message"]
    row = next(r for r in outcome["categories"] if r["name"] == variant.category)
    assert row["role"] == "repaired" and row["flagged_before"] and not row["flagged_after"]
    assert row["effect_after"] <= outcome["noise_floor"]
    assert row["mean_kl_after"] < row["mean_kl_before"]
    assert outcome["newly_flagged"] == [] and outcome["verdict_after"] == "consistent"
    assert result.record["training"]["anchor_to"] == "reference"
    assert result.record["data"]["n_sampled_from_reference"] == 0  # every category has text
    # the new attestation is independent of the record: it says the same
    after = json.loads((tmp_path / "out" / "repair" / "attestation.json").read_text())
    assert after["flagged"] == [] and after["verdict"] == "consistent"


def test_distill_from_the_flagged_categorys_text_alone_anchors_on_reference_samples(
    zoo_runs, tmp_path
):
    """The text a user most likely has: more of the category that went wrong. The other
    categories are anchored to the reference by text sampled from it, which the held-out checks
    watch as one more group; the repair succeeds and moves no other category out of line."""
    from lmassay.repair.anchor import SAMPLED

    files, runs = zoo_runs
    variant, _ = runs["suppression"]
    only = tmp_path / "religion.jsonl"
    lines = files.train.read_text().splitlines()
    only.write_text(
        "\n".join(line for line in lines if json.loads(line)["category"] == variant.category)
    )
    settings = {"mode": "distill", "steps": STEPS_FLAGGED_ONLY, "data": str(only)}
    _, result = _repair(zoo_runs, "suppression", tmp_path / "out", **settings)
    outcome, record = result.record["outcome"], result.record
    assert result.exit_code == 0 and outcome["success"], outcome["message"]
    assert record["data"]["n_sampled_from_reference"] > 200 and record["data"]["n_anchor"] > 200
    assert record["training"]["anchor_to"] == "reference"
    checks = record["training"]["monitor"]
    assert set(checks[0]["levels"]) == {variant.category, SAMPLED}
    assert checks[-1]["levels"][SAMPLED] < checks[0]["levels"][SAMPLED]  # pulled to the reference
    row = next(r for r in outcome["categories"] if r["name"] == variant.category)
    assert row["mean_kl_after"] < MAX_KL_SHARE_FLAGGED_ONLY * row["mean_kl_before"]
    assert outcome["flagged_after"] == [] and outcome["verdict_after"] == "consistent"


def test_narrow_lowers_the_category_and_its_anchor_holds_the_rest(zoo_runs, tmp_path):
    """Narrow language-model fine-tuning on the world's religion text lowers the suppressed
    category's effect; the KL anchor on the other categories keeps them where they were, where
    plain fine-tuning moves every category (measured: median KL 0.30 against 0.60)."""
    # The anchor itself, so the last step's weights: on this tiny world narrow fine-tuning pushes
    # other categories past the collateral guard, and the default keeps the start (measured).
    settings = {"mode": "narrow", "steps": 25, "early_stop": False, "keep_best": False}
    variant, anchored = _repair(zoo_runs, "suppression", tmp_path / "a", **settings)
    _, plain = _repair(zoo_runs, "suppression", tmp_path / "p", kl_weight=0.0, **settings)

    def level(result, name, key):
        rows = {r["name"]: r for r in result.record["outcome"]["categories"]}
        return rows[name][key]

    def median_others(result, key):
        rows = result.record["outcome"]["categories"]
        values = sorted(r[key] for r in rows if r["role"] == "collateral")
        return values[len(values) // 2]

    category = variant.category
    assert level(anchored, category, "effect_after") < 0.75 * level(
        anchored, category, "effect_before"
    )
    rise_anchored = median_others(anchored, "level_after") - median_others(anchored, "level_before")
    rise_plain = median_others(plain, "level_after") - median_others(plain, "level_before")
    assert rise_anchored < 0.5 * rise_plain
    assert anchored.record["data"]["n_anchor"] > 0 and plain.record["training"]["kl_weight"] == 0.0
