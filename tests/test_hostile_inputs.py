"""Hostile but realistic input, as a table: each case is a command, the exit code it must give, a
phrase its one-line error must hold, and what it must not leave in ``--out``.

Every case runs in-process on a tiny random model (no training), so the table stays cheap. Cases
about one reader in depth live beside it (``test_corrupt_inputs.py``, ``test_bounded_reads.py``,
``test_output_folder.py``); this table checks that the command line keeps the promises: exit 2, one
line naming the input and a fix, no traceback, nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import world_rows
from lmassay.cli import app
from lmassay.output_folder import locked

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    """``setup(tmp, model)`` prepares the inputs and returns the command's arguments."""

    name: str
    setup: Callable[[Path, Path], list[str]]
    exit_code: int
    phrase: str
    out: str = "out"  # the --out folder, relative to tmp
    must_not_leave: tuple[str, ...] = ("attestation.json", "samples.jsonl", "report.md")
    keeps: dict[str, str] = field(
        default_factory=dict
    )  # files under tmp that must stay as they are


def _probes(tmp: Path) -> Path:
    path = tmp / "probes.jsonl"
    rows = [{"text": text, "category": cat} for cat, text in world_rows(n_per_category=6)[:36]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _attest(tmp: Path, model: Path, *, out: Path | None = None, probes: Path | None = None):
    return [
        "attest", "--model", str(model), "--reference", str(model),
        "--probes", str(probes or _probes(tmp)), "--out", str(out or tmp / "out"),
        "--n-bootstrap", "50", "--quiet",
    ]  # fmt: skip


def _out_is_a_file(tmp: Path, model: Path) -> list[str]:
    (tmp / "out").write_text("not a folder")
    return _attest(tmp, model)


def _out_under_a_file(tmp: Path, model: Path) -> list[str]:
    (tmp / "blocker").write_text("x")
    return _attest(tmp, model, out=tmp / "blocker" / "run")


def _out_with_foreign_files(tmp: Path, model: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return _attest(tmp, model)


def _earlier_run_with_foreign_file(tmp: Path, model: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "attestation.json").write_text('{"old": true}')
    (tmp / "out" / "notes.txt").write_text("mine")
    return _attest(tmp, model)


def _report_of_corrupt_attestation(tmp: Path, model: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "attestation.json").write_text('{"schema": "lmassay.attestation/v1", "verd')
    return ["report", str(tmp / "out")]


def _edit_into_a_file(tmp: Path, model: Path) -> list[str]:
    facts = tmp / "facts.jsonl"
    facts.write_text(json.dumps({"prompt": "The capital of X is", "target": " Y"}) + "\n")
    (tmp / "edited").write_text("a file")
    return ["edit", "--model", str(model), "--facts", str(facts), "--out", str(tmp / "edited")]


def _probes_link_to_dev_zero(tmp: Path, model: Path) -> list[str]:
    (tmp / "zero.jsonl").symlink_to("/dev/zero")
    return _attest(tmp, model, probes=tmp / "zero.jsonl")


def _probes_fifo(tmp: Path, model: Path) -> list[str]:
    os.mkfifo(tmp / "pipe.jsonl")
    return _attest(tmp, model, probes=tmp / "pipe.jsonl")


def _probes_over_the_limit(tmp: Path, model: Path) -> list[str]:
    return [*_attest(tmp, model), "--max-file-size", "1KiB"]


def _model_copy(tmp: Path, model: Path) -> Path:
    copy = tmp / "model"
    shutil.copytree(model, copy)
    return copy


def _truncated_weights(tmp: Path, model: Path) -> list[str]:
    copy = _model_copy(tmp, model)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return _attest(tmp, copy)


def _garbage_config(tmp: Path, model: Path) -> list[str]:
    copy = _model_copy(tmp, model)
    (copy / "config.json").write_text("{garbage")
    return _attest(tmp, copy)


def _diff_truncated(tmp: Path, model: Path) -> list[str]:
    args = _truncated_weights(tmp, model)
    return ["diff", str(model), args[args.index("--model") + 1], "--json", str(tmp / "diff.json")]


def _registry_not_a_database(tmp: Path, model: Path) -> list[str]:
    (tmp / "registry.sqlite").write_bytes(b"not a database" * 100)
    return ["history", str(model), "--registry", str(tmp / "registry.sqlite")]


CASES = [
    Case("attest --out is a file", _out_is_a_file, 2, "is a file", must_not_leave=()),
    Case("attest --out under a file", _out_under_a_file, 2, "cannot be written", out="blocker"),
    Case(
        "attest --out holds other files",
        _out_with_foreign_files,
        2,
        "holds files this command did not write (notes.txt)",
        keeps={"out/notes.txt": "mine"},
    ),
    Case(
        "attest over an earlier run with a foreign file",
        _earlier_run_with_foreign_file,
        2,
        "notes.txt",
        must_not_leave=("samples.jsonl", "report.md"),
        keeps={"out/attestation.json": '{"old": true}', "out/notes.txt": "mine"},
    ),
    Case(
        "report of a truncated attestation.json",
        _report_of_corrupt_attestation,
        2,
        "attestation.json",
        must_not_leave=("report.md", "report.html"),
    ),
    Case("edit --out is a file", _edit_into_a_file, 2, "is a file", must_not_leave=()),
    Case("probes: a link to /dev/zero", _probes_link_to_dev_zero, 2, "is a character device"),
    Case("probes: a FIFO", _probes_fifo, 2, "named pipe (FIFO)"),
    Case("probes over --max-file-size", _probes_over_the_limit, 2, "over the 1 KiB limit"),
    Case("weights cut short", _truncated_weights, 2, "model.safetensors"),
    Case("config.json is not JSON", _garbage_config, 2, "config.json is not valid JSON"),
    Case(
        "diff of weights cut short",
        _diff_truncated,
        2,
        "model.safetensors",
        out=".",
        must_not_leave=("diff.json",),
    ),
    Case(
        "registry that is not a database",
        _registry_not_a_database,
        2,
        "is not a usable SQLite database",
        keeps={"registry.sqlite": "not a database" * 100},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_input(tmp_path, tiny_model_dir, case):
    args = case.setup(tmp_path, tiny_model_dir)
    result = runner.invoke(app, args)
    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output and "unexpected" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert case.phrase in lines[0] and " — " in lines[0], lines[0]
    out = tmp_path / case.out
    if out.is_dir():
        left = {p.name for p in out.iterdir()}
        assert not left & set(case.must_not_leave), left
        assert not [name for name in left if name.endswith(".tmp")], left
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name or ".lock" in p.name]
    for relative, content in case.keeps.items():
        assert (tmp_path / relative).read_text() == content


def test_a_second_attest_on_a_folder_in_use_is_refused_before_scoring(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    with locked(out):
        result = runner.invoke(app, _attest(tmp_path, tiny_model_dir))
    assert result.exit_code == 2
    assert "being written by another lmassay run" in result.stderr
    assert not out.exists()


_ATTEST_TWICE = """
import subprocess, sys
args = sys.argv[1:]
runs = [subprocess.Popen([sys.executable, "-m", "lmassay.cli", *args], stderr=subprocess.PIPE,
                         text=True) for _ in range(2)]
for run in runs:
    _, err = run.communicate(timeout=240)
    print(run.returncode, err.strip().splitlines()[-1] if err.strip() else "")
"""


@pytest.mark.slow  # two attest subprocesses: about 40 s on 2 cores
def test_two_attest_runs_on_one_folder_never_mix_their_files(tmp_path, tiny_model_dir):
    """Issue 17's race: two runs into one --out used to finish both and mix their files. Now one
    is refused (exit 2) or, if it starts after the other finished, replaces the folder whole."""
    args = _attest(tmp_path, tiny_model_dir)
    done = subprocess.run(
        [sys.executable, "-c", _ATTEST_TWICE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    codes = [int(line.split()[0]) for line in done.stdout.splitlines()]
    assert len(codes) == 2 and 0 in codes, done
    if 2 in codes:
        assert "being written by another lmassay run" in done.stdout
    out = tmp_path / "out"
    attestation = json.loads((out / "attestation.json").read_text())
    report = (out / "report.md").read_text()
    assert attestation["verdict"].upper() in report
    finished = attestation["provenance"]["finished"]
    rows = (out / "samples.jsonl").read_text().splitlines()
    assert len(rows) == attestation["summary"]["n_samples"] and finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "probes.jsonl"]


def test_an_os_error_without_a_file_name_reads_as_one_clean_line(capsys):
    """A full disk during a write outside an output folder (ENOSPC has no file name) used to
    print 'No space left on device: — check the path…' with an empty path."""
    import errno

    import typer

    from lmassay.cli._app import run_command

    def full_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(typer.Exit):
        run_command("attest", full_disk)
    err = capsys.readouterr().err.strip()
    assert err == (
        "attest failed: No space left on device — check the path, its permissions and free disk "
        "space"
    )


def test_report_of_a_missing_run_creates_nothing(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere" / "run")])
    assert result.exit_code == 2 and "not found" in result.stderr
    assert list(tmp_path.iterdir()) == []
