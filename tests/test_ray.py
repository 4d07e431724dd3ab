"""Sharded scoring on Ray (``--ray``): shards that re-plan to the one-process batches, a sharded
attestation equal to the one-process run, a worker killed mid-run, ``--offload stream`` on the
workers, and an address that cannot be reached.

One private Ray cluster per module, loopback only (``ray.init(num_cpus=2, ...)`` on 127.0.0.1, no
dashboard), shut down by the fixture's finalizer so no Ray process outlives the tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmassay.attest.recipe import AttestConfig, attest
from lmassay.attest.windows import make_windows, plan_batches
from lmassay.errors import InputError
from lmassay.scale.ray_scoring import check_reachable, plan_shards

# fewer resamples than attest's defaults (the run is tested, not the statistics), and a small
# token budget, so that the 108 probes make several batches to shard
SETTINGS = {
    "device": "cpu",
    "n_bootstrap": 100,
    "n_permutations": 99,
    "token_budget": 512,
    "write_report": False,
}


@pytest.fixture(scope="module")
def ray_cluster():
    """A private two-CPU Ray cluster on loopback for this module; ended after its last test."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


class Recorder:
    """A :class:`lmassay.progress.Progress` that keeps the log lines and every update."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.updates: dict[str, list[tuple[int, int]]] = {}

    def task(self, description: str, total: int):
        updates = self.updates.setdefault(description, [])

        def update(done: int, total: int, note: str | None = None, /) -> None:
            updates.append((done, total))

        return update

    def log(self, message: str) -> None:
        self.lines.append(message)


def run(out: Path, pair, progress=None, **kwargs):
    config = AttestConfig(
        model=str(pair.tampered),
        reference=str(pair.reference),
        probes=str(pair.probes),
        out=str(out),
        **{**SETTINGS, **kwargs},
    )
    return attest(config, progress)


def rows(result) -> list[dict]:
    return [json.loads(line) for line in result.paths["samples"].read_text().splitlines()]


def assert_same_rows(sharded: list[dict], single: list[dict]) -> None:
    """The same samples in the same order, every number within 1e-6 (the rest equal)."""
    assert [r["id"] for r in sharded] == [r["id"] for r in single]
    for a, b in zip(sharded, single, strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-6, abs=1e-6), (b["id"], key)
            else:
                assert a[key] == value, (b["id"], key)


def same_verdict(a, b) -> None:
    assert a.attestation["verdict"] == b.attestation["verdict"]
    assert a.attestation["flagged"] == b.attestation["flagged"]
    for x, y in zip(a.attestation["categories"], b.attestation["categories"], strict=True):
        assert x["name"] == y["name"] and x["flagged"] == y["flagged"]
        for key in ("mean_kl", "delta_bpb", "ppl_model", "ppl_reference", "effect"):
            if y[key] is None:
                assert x[key] is None, (y["name"], key)
            else:
                assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), (y["name"], key)


# --------------------------------------------------------------------------------------------
# shards (no Ray)


def batch_keys(batches, samples=None) -> list[tuple[tuple[int, int], ...]]:
    """Each batch as its (global sample, offset) windows; ``samples`` maps shard to global."""
    return [
        tuple((samples[w.sample] if samples else w.sample, w.offset) for w in batch)
        for batch in batches
    ]


def test_shards_replan_to_the_one_process_batches():
    rng = np.random.default_rng(0)
    # short texts and long ones cut into several rolling windows (max_length 16)
    token_lists = [rng.integers(1, 50, rng.integers(1, 60)).tolist() for _ in range(120)]
    prefix, max_length, budget = 0, 16, 70
    whole = set(batch_keys(plan_batches(make_windows(token_lists, prefix, max_length), budget)))
    shards = plan_shards(token_lists, prefix, max_length, budget, n_shards=7)
    assert len(shards) == 7
    assert sorted(s for shard in shards for s in shard) == list(range(len(token_lists)))
    replanned = set()
    for shard in shards:
        windows = make_windows([token_lists[s] for s in shard], prefix, max_length)
        replanned |= set(batch_keys(plan_batches(windows, budget), shard))
    assert replanned == whole
    # the null: halves by sample index are not runs of whole batches, and re-plan differently
    halves = [list(range(60)), list(range(60, 120))]
    other = set()
    for shard in halves:
        windows = make_windows([token_lists[s] for s in shard], prefix, max_length)
        other |= set(batch_keys(plan_batches(windows, budget), shard))
    assert other != whole


def test_an_address_that_does_not_answer_is_refused_in_bounded_time():
    with socket.socket() as silent:  # listens, accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(InputError, match=rf"127\.0\.0\.1:{port}.*ray start --head"):
            check_reachable(f"127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - started < 5
    with pytest.raises(InputError, match="not HOST:PORT"):
        check_reachable("nowhere")


def test_cli_unreachable_address_exits_2_with_one_line(tmp_path, world_pair):
    from lmassay.cli import app

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again when the block ends: nothing listens
    address = f"127.0.0.1:{port}"
    args = ["attest", "--model", str(world_pair.tampered), "--reference"]
    args += [str(world_pair.reference), "--probes", str(world_pair.probes)]
    args += ["--out", str(tmp_path / "out"), "--ray", address, "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "ray start --head" in lines[0]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# on the module's Ray cluster


def test_sharded_attestation_equals_the_one_process_run(tmp_path, world_pair, ray_cluster):
    # 5 probes per category keep the default suite short (the verdict is then "consistent"; the
    # slow tests below run all 108 probes, where it is "tampered")
    single = run(tmp_path / "one", world_pair, per_category=5)
    progress = Recorder()
    sharded = run(
        tmp_path / "ray", world_pair, progress, per_category=5, ray="local", ray_workers=2
    )
    assert any(line.startswith("ray: 2 workers ready") for line in progress.lines)
    updates = progress.updates["scoring model + reference (tokens)"]
    assert len(updates) >= 2 and updates[-1][0] == updates[-1][1]  # shard by shard, all tokens
    assert_same_rows(rows(sharded), rows(single))
    same_verdict(sharded, single)
    # the null the comparison must see: model and reference do differ on these samples
    differ = [r["logprob_model"] != r["logprob_reference"] for r in rows(single)]
    assert sum(differ) > len(differ) // 2


def _score_processes() -> list[int]:
    """Pids of Ray workers running ``ShardScorer.score`` now (Ray names the process after it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::ShardScorer.score"):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_shard_redone(tmp_path, world_pair, ray_cluster):
    single = run(tmp_path / "one", world_pair)
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_scoring_worker() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            pids = _score_processes()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_scoring_worker, daemon=True)
    killer.start()
    try:
        sharded = run(tmp_path / "ray", world_pair, ray="local", ray_workers=2)
    finally:
        stop.set()
        killer.join(5)
    assert len(killed) == 1  # a worker died in the middle of a shard
    assert_same_rows(rows(sharded), rows(single))  # nothing lost, nothing counted twice
    same_verdict(sharded, single)
    assert sharded.attestation["flagged"] == [world_pair.category]  # religion, the ground truth


@pytest.mark.slow
def test_offload_stream_runs_on_the_workers(tmp_path, world_pair, ray_cluster):
    single = run(tmp_path / "one", world_pair, offload="stream")
    progress = Recorder()
    sharded = run(tmp_path / "ray", world_pair, progress, offload="stream", ray="local")
    assert any("streamed" in line for line in progress.lines if line.startswith("ray: "))
    assert_same_rows(rows(sharded), rows(single))
    same_verdict(sharded, single)


@pytest.mark.slow
def test_reference_build_on_ray_writes_the_same_cache(tmp_path, world_pair, ray_cluster):
    from safetensors.numpy import load_file

    from lmassay.attest.reference_cache import ReferenceBuildConfig, build_reference_cache

    def build(name: str, **kwargs):
        config = ReferenceBuildConfig(
            reference=str(world_pair.reference),
            probes=str(world_pair.probes),
            out=str(tmp_path / name),
            top_k=8,
            calibration_tokens=16,
            device="cpu",
            max_length=48,  # several rolling windows per text: later windows are sharded too
            token_budget=512,
            **kwargs,
        )
        return build_reference_cache(config)

    single, sharded = build("one.lmref"), build("ray.lmref", ray="local", ray_workers=2)
    a, b = load_file(single.path), load_file(sharded.path)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    assert single.header.tokens == sharded.header.tokens
    assert single.header.reference == sharded.header.reference
    assert int(np.count_nonzero(a["tail_mass"])) > 0  # the rows were written, not left at zero


@pytest.mark.slow
def test_bits_per_byte_scores_each_model_alone_on_the_workers(tmp_path, world_pair, ray_cluster):
    single = run(tmp_path / "one", world_pair, comparison="bpb")
    sharded = run(tmp_path / "ray", world_pair, comparison="bpb", ray="local", ray_workers=2)
    assert sharded.attestation["comparison"] == "bpb"
    assert_same_rows(rows(sharded), rows(single))
    same_verdict(sharded, single)


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_models_is_one_input_error(tmp_path, ray_cluster):
    from lmassay.attest.model_loading import ModelOptions
    from lmassay.scale.ray_scoring import LOCAL, ModelSpec, WorkerSpec, ray_pool

    missing = tmp_path / "only-on-another-node"
    spec = WorkerSpec((("model", ModelSpec(str(missing), ModelOptions(device="cpu"))),))
    pool = ray_pool(LOCAL, spec, 1)
    with pytest.raises(InputError, match="a worker could not load the models"):
        pool.__enter__()
