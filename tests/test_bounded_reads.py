"""User-supplied files are read only when they are regular files within a size limit (issue 17).

A probe path that links to ``/dev/zero`` was read until memory ran out; a named pipe blocked for
ever. Every case here must fail fast *and* fail boundedly on code without the checks: the CLI run
of ``/dev/zero`` is a subprocess under a memory cap and a timeout, and every other read that could
block runs in a thread with a deadline (:func:`_within`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmassay.attest.document import Attestation
from lmassay.attest.probes import load_probes
from lmassay.bounded_read import (
    DATA_LIMIT,
    FileLimitError,
    format_size,
    iter_lines,
    parse_size,
    read_bytes,
)
from lmassay.cli import app
from lmassay.errors import InputError
from lmassay.repair.config import RepairConfig
from lmassay.repair.edit_inputs import read_covariance_texts, read_fact_edits

runner = CliRunner()

FACT = '{"prompt": "The capital of France is", "subject": "France", "target": "Paris"}\n'


def _within(seconds: float, func: Callable[[], Any]) -> Any:
    """``func()``, failing the test when it has not returned within ``seconds`` (it may block on a
    pipe: the thread is a daemon, so a blocked read does not keep pytest from exiting)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still reading after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture
def fifo(tmp_path: Path):
    """A named pipe ``probes.jsonl``; a reader still blocked on it is released afterwards."""
    path = tmp_path / "probes.jsonl"
    os.mkfifo(path)
    yield path
    # succeeds only while a reader waits: open it for writing and close, giving it EOF
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def _probes(path: Path, n: int = 4) -> Path:
    rows = [{"text": f"sample text number {i}", "category": "a"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _attest(*args: object) -> Any:
    return runner.invoke(app, ["attest", "--model", "nowhere", "--out", "unused", *map(str, args)])


def _one_line(result: Any) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------- the CLI


def _memory_cap() -> None:  # in the child: 4 GiB of address space, so a runaway read stops there
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def test_probes_linked_to_dev_zero_exit_2_at_once_naming_the_path(tmp_path: Path) -> None:
    link = tmp_path / "probes.jsonl"
    link.symlink_to("/dev/zero")
    command = [sys.executable, "-m", "lmassay.cli", "attest", "--model", "nowhere"]
    done = subprocess.run(
        [*command, "--probes", str(link), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_memory_cap,
        env={**os.environ, "LMASSAY_DEBUG": ""},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(link) in lines[0] and "/dev/zero" in lines[0]
    assert "character device, not a regular file" in lines[0]
    assert "memory" not in lines[0]


def test_probes_that_are_a_named_pipe_exit_2(fifo: Path) -> None:
    result = _within(30, lambda: _attest("--probes", fifo))
    assert result.exit_code == 2
    line = _one_line(result)
    assert str(fifo) in line and "named pipe (FIFO), not a regular file" in line


def test_bad_max_file_size_exits_2_naming_the_flag(tmp_path: Path) -> None:
    result = _attest("--probes", _probes(tmp_path / "p.jsonl"), "--max-file-size", "lots")
    assert result.exit_code == 2
    line = _one_line(result)
    assert "--max-file-size 'lots' is not a size" in line and "8GiB" in line


def test_attest_max_file_size_lowers_the_limit(tmp_path: Path) -> None:
    probes = _probes(tmp_path / "p.jsonl", n=200)
    result = _attest("--probes", probes, "--max-file-size", "1KiB")
    assert result.exit_code == 2
    line = _one_line(result)
    assert str(probes) in line and "over the 1 KiB limit" in line and "--max-file-size" in line


# --------------------------------------------------------------------------- the probe readers


def test_directory_named_as_a_jsonl_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "facts.jsonl"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder, not a regular file") as exc:
        read_fact_edits(folder)
    assert str(folder) in exc.value.what


def test_probe_file_over_the_limit_names_file_size_limit_and_flag(tmp_path: Path) -> None:
    probes = _probes(tmp_path / "p.jsonl", n=200)
    size = probes.stat().st_size
    with pytest.raises(FileLimitError) as exc:
        load_probes(probes, max_bytes=1024)
    assert str(probes) in exc.value.what
    assert f"is {format_size(size)}, over the 1 KiB limit" in exc.value.what
    assert "--max-file-size" in exc.value.fix
    assert len(load_probes(probes, max_bytes=size)) == 200  # the limit itself is allowed


def test_txt_folder_is_bounded_in_total(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "a").mkdir(parents=True)
    for i in range(4):
        (root / "a" / f"{i}.txt").write_text("x" * 400)
    (root / "a" / "zero.txt").symlink_to("/dev/zero")  # not a regular file: ignored with a warning
    with pytest.raises(FileLimitError, match=r"probe folder .*corpus holds 1\.56 KiB of files"):
        _within(30, lambda: load_probes(root, max_bytes=1000))
    loaded = _within(30, lambda: load_probes(root, max_bytes=1600))
    assert len(loaded) == 4 and any("zero.txt" in w for w in loaded.warnings)


def test_parquet_linked_to_a_device_is_refused_before_pyarrow(tmp_path: Path) -> None:
    link = tmp_path / "p.parquet"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="character device, not a regular file"):
        _within(30, lambda: load_probes(link))


def test_saved_dataset_with_a_device_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    (folder / "state.json").write_text("{}")
    (folder / "data-00000-of-00001.arrow").symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"data-00000-of-00001\.arrow .*character device"):
        _within(30, lambda: load_probes(folder))


def test_jsonl_growing_past_the_limit_while_read_is_stopped(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"0123456789\n" * 10)
    lines = iter_lines(path, what="probe file", limit=110)
    next(lines)
    with path.open("ab") as grow:  # the size was checked at open: later bytes are still bounded
        grow.write(b"more\n" * 10)
    with pytest.raises(FileLimitError, match="grew past the 110 B limit"):
        list(lines)


# --------------------------------------------------------------------------- repair and edit


def test_repair_data_over_the_limit_is_named(tmp_path: Path) -> None:
    data = _probes(tmp_path / "repair.jsonl", n=200)
    config = RepairConfig(model="m", attestation="a", data=str(data), out="o", max_file_size="2KiB")
    config.validate()
    assert config.max_file_bytes == 2048
    with pytest.raises(FileLimitError, match=r"repair\.jsonl is .* over the 2 KiB limit"):
        load_probes(config.data, max_bytes=config.max_file_bytes)


def test_repair_config_refuses_a_bad_size() -> None:
    config = RepairConfig(model="m", attestation="a", data="d", out="o", max_file_size="-1GiB")
    with pytest.raises(InputError, match="--max-file-size '-1GiB' is not a size"):
        config.validate()


def test_facts_file_linked_to_dev_zero_or_a_pipe_or_too_large(tmp_path: Path, fifo: Path) -> None:
    link = tmp_path / "facts.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"facts file .*facts\.jsonl \(a link to /dev/zero\)"):
        _within(30, lambda: read_fact_edits(link))
    with pytest.raises(InputError, match="named pipe"):
        _within(30, lambda: read_fact_edits(fifo))
    with pytest.raises(InputError, match=r"covariance texts file .*\(a link to /dev/zero\)"):
        _within(30, lambda: read_covariance_texts(link))
    facts = tmp_path / "many.jsonl"
    facts.write_text(FACT * 20)
    with pytest.raises(FileLimitError) as exc:
        read_fact_edits(facts, max_bytes=1024)
    assert f"{facts} is {format_size(facts.stat().st_size)}, over the 1 KiB limit" in str(exc.value)
    assert "--max-file-size" in exc.value.fix
    assert len(read_fact_edits(facts, max_bytes=DATA_LIMIT)) == 20


# --------------------------------------------------------------------------- documents and sizes


def test_attestation_that_is_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "attestation.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"attestation .* character device") as exc:
        _within(30, lambda: Attestation.read(tmp_path))
    assert str(link) in exc.value.what


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * 2**20), ("8GiB", 8 * 2**30), ("8gib", 8 * 2**30), ("1.5GB", 1_500_000_000),
     ("100", 100), ("2K", 2048), (" 3 MiB ", 3 * 2**20)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "-1", "0", "0.1B", "1e9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_read_bytes_reads_a_regular_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert read_bytes(path, what="file", limit=3) == b"abc"
    with pytest.raises(FileLimitError, match="is 3 B, over the 2 B limit"):
        read_bytes(path, what="file", limit=2)
