"""The command line: help renders, exit codes 0/1/2, one clear line for bad input, report re-rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lmassay.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", [[], ["attest"], ["report"], ["world", "pair"]])
def test_help_renders(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if command == ["attest"]:
        assert "--reference" in result.output and "Example" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("lmassay ")


def attest_args(pair, out, model=None):
    return ["attest", "--model", model or pair.tampered, "--reference", pair.reference,
            "--probes", pair.probes, "--out", out, "--device", "cpu", "--n-bootstrap", "100"]  # fmt: skip


def test_attest_flags_tampered_model_with_exit_1_then_report_rerenders(tmp_path, world_pair):
    out = tmp_path / "run"
    result = invoke(*attest_args(world_pair, out), "--quiet")
    assert result.exit_code == 1, result.output
    att = json.loads((out / "attestation.json").read_text())
    assert att["flagged"] == [world_pair.category]
    (out / "report.html").unlink()
    again = invoke("report", out)
    assert again.exit_code == 0, again.output
    assert (out / "report.html").exists()
    assert world_pair.category in again.output


def test_attest_self_exit_0_and_prints_summary(tmp_path, world_pair):
    result = invoke(*attest_args(world_pair, tmp_path / "self", model=world_pair.reference))
    assert result.exit_code == 0, result.output
    assert "consistent" in result.output
    assert "report.html" in result.output


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda a, p: a.__setitem__(a.index("--probes") + 1, str(p / "missing.jsonl")),
            "missing.jsonl",
        ),
        (lambda a, p: a.__setitem__(a.index("--model") + 1, str(p / "no-model")), "no-model"),
        (lambda a, p: a.extend(["--alpha", "3"]), "--alpha"),
        (lambda a, p: a.extend(["--dtype", "int3"]), "--dtype"),
    ],
)
def test_bad_input_exit_2_with_one_line(tmp_path, world_pair, mutate, needle):
    args = [str(a) for a in attest_args(world_pair, tmp_path / "bad")]
    mutate(args, tmp_path)
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("attest failed: ") and needle in lines[0]
    assert "Traceback" not in result.output
    # without --quiet, progress lines may come first; the error is still one line, the last
    noisy = runner.invoke(app, args)
    assert noisy.exit_code == 2 and "Traceback" not in noisy.output
    failed = [line for line in noisy.stderr.splitlines() if "failed" in line]
    assert failed == [lines[0]] and noisy.stderr.strip().splitlines()[-1] == lines[0]


def test_bad_probe_line_exit_2(tmp_path, world_pair):
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"text": "hello", "category": "a"}\n{not json}\n')
    args = attest_args(world_pair, tmp_path / "bad")
    args[args.index("--probes") + 1] = probes
    result = invoke(*args)
    assert result.exit_code == 2
    assert "line 2" in result.stderr and "probes.jsonl" in result.stderr


def test_report_of_missing_folder_exit_2(tmp_path):
    result = invoke("report", tmp_path / "nothing")
    assert result.exit_code == 2
    assert result.stderr.startswith("report failed: ")


def test_console_script_runs_in_a_subprocess(tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "lmassay.cli", "report", str(tmp_path / "none")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_world_pair_into_a_file_exit_2(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke("world", "pair", "--out", target, "--size", "test")
    assert result.exit_code == 2
    assert result.stderr.startswith("world pair failed: --out") and "is a file" in result.stderr
