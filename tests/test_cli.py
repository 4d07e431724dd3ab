"""The command line: help renders, exit codes 0/1/2, one clear line for bad input, report re-rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing

import pytest
import typer
from typer.testing import CliRunner

from lmassay.choices import (
    CHECKPOINTING,
    COMPARISONS,
    DTYPES,
    FACT_TOKENS,
    METHODS,
    MODES,
    TRAIN_DTYPES,
)
from lmassay.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _commands(command, path=()):
    """Every command path of the app: (), ("attest",), ..., ("world", "make"), ..."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _choices(param):
    """The values of a ``Literal`` (or ``Literal | None``) typed option; () for any other."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return ()


@pytest.mark.parametrize("help_flag", ["-h", "--help"])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "lmassay")
def test_help_renders_at_80_columns_with_every_option_and_choice(path, help_flag):
    result = runner.invoke(app, [*path, help_flag], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Usage" in result.output and max(map(len, lines)) == 80
    assert "…" not in result.output, "\n".join(line for line in lines if "…" in line)
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    for param in command.params:
        for flag in (*param.opts, *param.secondary_opts):
            if flag.startswith("-"):
                assert flag in result.output, f"{flag} cut or missing in {' '.join(path)} help"
        for choice in _choices(param):
            assert choice in result.output, f"{param.name}: choice {choice} not shown"


@pytest.mark.parametrize(
    ("path", "typed"),
    [
        (["attest"], {"comparison": COMPARISONS, "offload": ("none", "stream"), "dtype": DTYPES}),
        (["edit"], {"fact_token": FACT_TOKENS, "dtype": DTYPES}),
        (
            ["repair"],
            {"mode": MODES, "method": METHODS, "dtype": TRAIN_DTYPES,
             "gradient_checkpointing": CHECKPOINTING},
        ),
    ],
)  # fmt: skip
def test_closed_options_are_typed_as_their_choices(path, typed):
    command = typer.main.get_command(app).commands[path[0]]
    params = {param.name: param for param in command.params}
    assert {name: _choices(params[name]) for name in typed} == typed
    result = runner.invoke(app, [*path, "-h"])
    assert "cuda:N" in result.output  # --device takes any GPU by index, and says so


def test_a_value_outside_the_choices_is_refused_before_running(tmp_path):
    result = invoke("attest", "-m", tmp_path, "-p", tmp_path / "p.jsonl", "-o", tmp_path / "o",
                    "--dtype", "int3")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("attest failed: Invalid value for '--dtype'")
    assert "float32" in result.stderr and result.stderr.count("\n") == 1  # one line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attest"], "attest failed: Missing option '--model'"),
        (["world", "pair", "--bogus"], "world pair failed: No such option: --bogus"),
        (["repair", "--mode", "sideways"], "repair failed: Invalid value for '--mode'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command_and_its_help(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith(needle) and result.stderr.count("\n") == 1
    assert (
        f"see `lmassay {' '.join(args[:2] if args[0] == 'world' else args[:1])} -h`"
        in result.stderr
    )


@pytest.mark.parametrize("command", ["repair", "edit", "attest"])
def test_cuda_n_device_is_checked_before_any_input_is_read(tmp_path, command):
    """--device cuda:N is accepted as a name, and a GPU that is not there fails first, one line."""
    missing = tmp_path / "missing"
    args = {
        "repair": ["--attestation", missing, "--data", missing],
        "edit": ["--facts", missing],
        "attest": ["--probes", missing],
    }[command]
    result = invoke(command, "--model", missing, "--out", tmp_path / "out", *args,
                    "--device", "cuda:99", "-q")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"{command} failed: --device cuda:99 was asked for but ")
    assert "GPU" in result.stderr and result.stderr.count("\n") == 1


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
        (lambda a, p: a.extend(["--n-bootstrap", "0"]), "--n-bootstrap"),
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
