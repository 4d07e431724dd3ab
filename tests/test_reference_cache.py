"""The reference cache: the bounded KL against closed forms and an independent full computation,
the file round trip (build, seal, verify, attest from it) and the refusals, on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attestation_check import assert_valid_attestation
from conftest import save_tiny_model, world_rows
from lmassay.attest.model_loading import load_model
from lmassay.attest.probes import load_probes
from lmassay.attest.reference_cache import (
    Calibration,
    ReferenceBuildConfig,
    bounded_kl,
    build_reference_cache,
    open_reference_cache,
    score_against_cache,
    tail_mass,
)
from lmassay.attest.scoring import score_token_lists, tokenize_texts
from lmassay.cli import app
from lmassay.digests import digest_file
from lmassay.sealing.keys import generate_keypair

runner = CliRunner()
TOP_K = 8


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------
# the bound itself


def test_bounded_kl_matches_the_closed_form_and_is_exact_at_full_width():
    r = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    m = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    lr, lm = r.log(), m.log()
    ids = torch.tensor([[0, 1]])
    got = bounded_kl(lr.gather(1, ids), lm.gather(1, ids), torch.tensor([0.2]), torch.tensor([0.5]))
    # top-2 terms, then the tail bucket {2, 3}: 0.2 vs 0.5
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert float(got[0]) == pytest.approx(expected, abs=1e-6)
    full = float((r * (lr - lm)).sum())
    assert float(got[0]) < full  # the log-sum inequality: the bucket loses the tail's divergence
    every = torch.arange(4)[None, :]
    at_full = bounded_kl(lr, lm, torch.zeros(1), torch.zeros(1))
    assert float(at_full[0]) == pytest.approx(full, abs=1e-6)
    assert (
        float(
            bounded_kl(lr.gather(1, every), lr.gather(1, every), torch.zeros(1), torch.zeros(1))[0]
        )
        == 0
    )


def test_bound_never_exceeds_full_kl_and_tail_mass_keeps_small_tails():
    gen = torch.Generator().manual_seed(0)
    z_r = torch.randn(64, 300, generator=gen) * 4
    z_m = z_r + torch.randn(64, 300, generator=gen)
    lp_r, lp_m = torch.log_softmax(z_r, -1), torch.log_softmax(z_m, -1)
    full = (lp_r.double().exp() * (lp_r.double() - lp_m.double())).sum(-1)
    for k in (1, 4, 32, 300):
        values, ids = lp_r.topk(k, dim=-1)
        lp_m_k = lp_m.gather(1, ids)
        bound = bounded_kl(
            values, lp_m_k, tail_mass(lp_r, ids, values), tail_mass(lp_m, ids, lp_m_k)
        )
        assert bool((bound.double() <= full + 1e-5).all())
    # a tail of ~1e-9: 1 - sum(top-K) in float32 would lose it; summed over the complement it stays
    z = torch.tensor([[30.0, 29.0, 0.0, 0.0, 0.0]])
    lp = torch.log_softmax(z, -1)
    ids = torch.tensor([[0, 1]])
    exact = 3 * math.exp(0.0 - torch.logsumexp(z.double(), -1).item())
    assert float(tail_mass(lp, ids, lp.gather(1, ids))[0]) == pytest.approx(exact, rel=1e-4)


# --------------------------------------------------------------------------------------------
# a cache of a tiny reference, and a second tiny model scored against it


@pytest.fixture(scope="module")
def setting(tmp_path_factory, world_tokenizer, tiny_model_dir):
    """Two random tiny GPT-2s with the world tokenizer (the session's as the reference), a small
    probe file and a cache (K = 8)."""
    root = tmp_path_factory.mktemp("refcache")
    reference = tiny_model_dir
    model = save_tiny_model(root / "model", world_tokenizer, seed=1)
    probes = root / "probes.jsonl"
    rows = world_rows(0, 5)
    with probes.open("w") as handle:
        for i, (category, text) in enumerate(rows):
            row = {"id": f"s{i}", "category": category, "text": text[:160]}
            handle.write(json.dumps(row) + "\n")
    config = ReferenceBuildConfig(
        reference=str(reference),
        probes=str(probes),
        out=str(root / "ref.lmref"),
        top_k=TOP_K,
        calibration_tokens=16,
        device="cpu",
        max_length=48,  # texts are longer: later rolling windows are cached too
    )
    return {"root": root, "reference": reference, "model": model, "probes": probes,
            "config": config, "built": build_reference_cache(config)}  # fmt: skip


def test_cache_scores_match_an_independent_full_computation(setting):
    config = setting["config"]
    reference = load_model(str(setting["reference"]), device="cpu")
    model = load_model(str(setting["model"]), device="cpu")
    probes = load_probes(config.probes)
    token_lists = tokenize_texts(model.tokenizer, [s.text for s in probes.samples])
    cache = open_reference_cache(config.out)
    assert cache.check(model, probes.samples, token_lists, None) == 48
    calibration = Calibration()
    cached = score_against_cache(token_lists, model, cache, max_length=48, calibration=calibration)
    paired = score_token_lists(
        token_lists, model.model, reference.model, prefix_token_id=model.prefix_token_id,
        max_length=48, topk=300,
    )  # fmt: skip
    for got, full in zip(cached, paired, strict=True):
        np.testing.assert_array_equal(got.logprob_reference, full.logprob_reference)
        np.testing.assert_array_equal(got.logprob_model, full.logprob_model)
        np.testing.assert_array_equal(got.top1_reference, full.top1_reference)
        # the same bound, computed here in numpy from the full distributions (float64)
        ids_r, lp_r = full.topk_reference
        ids_m, lp_m = full.topk_model
        lp_m_full = np.empty_like(lp_m, dtype=np.float64)
        np.put_along_axis(lp_m_full, ids_m, lp_m.astype(np.float64), axis=1)  # (n, V) by id
        lr = lp_r[:, :TOP_K].astype(np.float64)
        lm = np.take_along_axis(lp_m_full, ids_r[:, :TOP_K], axis=1)
        t_r = np.exp(lp_r[:, TOP_K:].astype(np.float64)).sum(1)
        t_m = 1 - np.exp(lm).sum(1)
        expected = (np.exp(lr) * (lr - lm)).sum(1) + t_r * np.log(t_r / t_m)
        np.testing.assert_allclose(got.kl, expected, atol=2e-3)  # float16 log-probs in the file
        assert float(np.mean(got.kl - full.kl)) <= 1e-4  # a lower bound (up to that rounding)
    summary = calibration.to_json()
    n_calibration = min(16, sum(map(len, token_lists)) // 1000)  # one per 1,000 tokens at most
    assert summary is not None and summary["n_tokens"] == n_calibration > 0
    assert summary["mean_kl_bound"] <= summary["mean_kl"] + 1e-3


def test_round_trip_build_seal_verify_attest_and_a_flipped_byte(setting, tmp_path):
    config, built = setting["config"], setting["built"]
    cache = tmp_path / "ref.lmref"
    cache.write_bytes(Path(config.out).read_bytes())
    keys = generate_keypair(tmp_path / "keys" / "lab.pem")
    assert invoke("seal", cache, "--key", keys.private_key, "--no-record").exit_code == 0
    signature = cache.with_name(cache.name + ".sig")
    ok = invoke("verify", cache, "-s", signature, "-p", keys.public_key, "--no-record")
    assert ok.exit_code == 0, ok.output

    out = tmp_path / "run"
    result = invoke(
        "attest", "-m", setting["model"], "--reference-cache", cache, "-p", setting["probes"],
        "--out", out, "--device", "cpu", "--n-bootstrap", 50, "--n-permutations", 0, "-q",
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    att = assert_valid_attestation(out)
    assert att["comparison"] == "kl"
    assert (
        att["reference_cache"]["digest"] == built.digest.to_json() == digest_file(cache).to_json()
    )
    assert att["reference"]["digest"] == built.header.reference["digest"]
    assert att["reference_cache"]["calibration"]["n_tokens"] == built.header.calibration["n_tokens"]
    assert any("lower bound" in w for w in att["warnings"])
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(r["logprob_reference"] is not None and r["mean_kl"] >= 0 for r in rows)

    data = bytearray(cache.read_bytes())
    data[-5] ^= 0x01  # one byte of the last tensor
    cache.write_bytes(bytes(data))
    bad = invoke("verify", cache, "-s", signature, "-p", keys.public_key, "--no-record")
    assert bad.exit_code == 1, bad.output


def _attest(setting, tmp_path, cache, *extra):
    return invoke(
        "attest", "-m", setting["model"], "--reference-cache", cache, "-p", setting["probes"],
        "--out", tmp_path / "run", "--device", "cpu", "-q", *extra,
    )  # fmt: skip


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_cache_for_other_probes_contract_or_tokenizer_is_refused(setting, tmp_path):
    cache = setting["config"].out
    line = _one_line(_attest(setting, tmp_path, cache, "--per-category", 3))
    assert "field probes" in line
    line = _one_line(_attest(setting, tmp_path, cache, "--max-length", 32))
    assert "field contract.max_length" in line

    from lmassay.world.tiny_lm import train_tokenizer

    other_tokenizer = train_tokenizer([text for _, text in world_rows(1, 5)], vocab_size=280)
    other = save_tiny_model(tmp_path / "other", other_tokenizer, seed=2)
    result = invoke(
        "attest", "-m", other, "--reference-cache", cache, "-p", setting["probes"],
        "--out", tmp_path / "run2", "--device", "cpu", "-q",
    )  # fmt: skip
    assert "field tokenizer" in _one_line(result)


def test_bad_flags_and_damaged_files_are_one_line_errors(setting, tmp_path):
    cache = Path(setting["config"].out)
    truncated = tmp_path / "cut.lmref"
    truncated.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    assert "cannot be read" in _one_line(_attest(setting, tmp_path, truncated))
    not_cache = tmp_path / "model.safetensors"
    not_cache.write_bytes((Path(setting["model"]) / "model.safetensors").read_bytes())
    assert "without an lmassay header" in _one_line(_attest(setting, tmp_path, not_cache))
    both = _attest(setting, tmp_path, cache, "--reference", setting["reference"])
    assert "--reference-cache was given with --reference" in _one_line(both)
    build = invoke(
        "reference", "build", "-r", setting["reference"], "-p", setting["probes"],
        "--out", tmp_path / "x.lmref", "--top-k", 0,
    )  # fmt: skip
    assert "--top-k 0 is below 1" in _one_line(build)
    chat = tmp_path / "chat.jsonl"
    turns = [{"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "Ob."}]
    chat.write_text(
        "".join(
            json.dumps({"id": f"c{i}", "category": "a", "messages": turns}) + "\n" for i in range(5)
        )
    )
    build = invoke(
        "reference",
        "build",
        "-r",
        setting["reference"],
        "-p",
        chat,
        "--out",
        tmp_path / "x.lmref",
        "-q",
    )
    assert "conversations" in _one_line(build)
    assert not (tmp_path / "x.lmref").exists()
