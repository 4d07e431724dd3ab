"""Output folders written as one set: staged, locked, put in place in one step, leftovers cleaned."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lmassay import output_folder
from lmassay.errors import InputError
from lmassay.output_folder import OutputFolder, locked

OWNED = ("a.json", "b.jsonl")


def _old_run(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "a.json").write_text("old a")
    (out / "b.jsonl").write_text("old b")


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_commit_replaces_the_old_folder_whole(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    with OutputFolder(out, owned=OWNED) as folder:
        (folder.staging / "a.json").write_text("new a")
        assert (out / "a.json").read_text() == "old a"  # nothing visible before the commit
        assert folder.final(folder.staging / "a.json") == out / "a.json"
        folder.commit()
    assert sorted(p.name for p in out.iterdir()) == ["a.json"]  # the old b.jsonl went with it
    assert (out / "a.json").read_text() == "new a"
    assert _siblings(out) == []  # no staging folder, no lock file


@pytest.mark.parametrize("swap", [True, False], ids=["exchange", "two-renames"])
def test_both_publishing_paths_give_the_new_folder(tmp_path, monkeypatch, swap):
    if not swap:
        monkeypatch.setattr(output_folder, "exchange", lambda a, b: False)
    out = tmp_path / "run"
    _old_run(out)
    with OutputFolder(out, owned=OWNED) as folder:
        (folder.staging / "b.jsonl").write_text("new b")
        folder.commit()
    assert [p.read_text() for p in out.iterdir()] == ["new b"]
    assert _siblings(out) == []


def test_an_error_before_commit_leaves_the_old_folder_untouched(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    with pytest.raises(ValueError), OutputFolder(out, owned=OWNED) as folder:
        (folder.staging / "a.json").write_text("half")
        raise ValueError("scoring failed")
    assert (out / "a.json").read_text() == "old a"
    assert (out / "b.jsonl").read_text() == "old b"
    assert _siblings(out) == []


def test_a_write_error_names_the_folder_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    with (
        pytest.raises(InputError) as caught,
        OutputFolder(out, owned=OWNED) as folder,
        folder.writing(),
    ):
        raise OSError(errno.ENOSPC, "No space left on device")
    line = caught.value.one_line("attest")
    assert (
        f"--out {out}" in line and "No space left on device" in line and "free disk space" in line
    )
    assert (out / "a.json").read_text() == "old a"


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    with (
        locked(out),
        pytest.raises(InputError, match="being written by another lmassay run"),
        OutputFolder(out, owned=OWNED),
    ):
        pass
    with OutputFolder(out, owned=OWNED) as folder:  # free again once released
        folder.commit()
    assert out.is_dir()


def test_waiting_runs_one_after_the_other(tmp_path):
    out = tmp_path / "run"
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with locked(out):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    told: list[str] = []
    with locked(out, wait=True, on_wait=told.append):
        order.append("second in")
    thread.join(5)
    assert order == ["first done", "second in"]
    assert told and "waiting for another lmassay run" in told[0]


def test_a_folder_with_other_files_is_refused_not_deleted(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match=r"thesis\.tex"), OutputFolder(out, owned=OWNED):
        pass
    assert (out / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_an_impossible_out_is_refused_on_entry(tmp_path, case):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker if case == "a file" else blocker / "run"
    with pytest.raises(InputError, match="--out"), OutputFolder(out, owned=OWNED):
        pass


def test_too_little_free_space_is_refused_on_entry(tmp_path):
    out = tmp_path / "run"
    with (
        pytest.raises(InputError, match=r"free on its disk, about .* needed"),
        OutputFolder(out, owned=OWNED, needs_bytes=2**62),
    ):
        pass
    assert not out.exists() and _siblings(out) == []


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lmassay.output_folder import OutputFolder
    with OutputFolder(Path(sys.argv[1]), owned=("a.json", "b.jsonl")) as folder:
        (folder.staging / "a.json").write_text("half of the new run")
        (Path(sys.argv[1]).parent / "ready").write_text("")
        time.sleep(60)
    """
)


def test_a_killed_run_leaves_the_old_folder_and_its_leftovers_are_cleaned(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    (out / ".b.jsonl.k3j9x_2a.tmp").write_text('{"half": ')  # what older versions left behind
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out)])
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline and writer.poll() is None, "the writer did not start"
            time.sleep(0.05)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(10)
    (tmp_path / "ready").unlink()
    assert (out / "a.json").read_text() == "old a"
    assert any(name.startswith(".run.partial-") for name in _siblings(out))
    with OutputFolder(out, owned=OWNED) as folder:  # the lock died with its holder
        assert not any(
            name.startswith(".run.partial-")
            for name in _siblings(out)
            if not (tmp_path / name).samefile(folder.staging)
        )
        assert not (out / ".b.jsonl.k3j9x_2a.tmp").exists()
        (folder.staging / "a.json").write_text("new a")
        folder.commit()
    assert (out / "a.json").read_text() == "new a"
    assert _siblings(out) == []


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _old_run(out)
    monkeypatch.setattr(output_folder, "exchange", lambda a, b: False)
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".partial-" in str(src):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(output_folder.os, "replace", failing_replace)
    with pytest.raises(InputError, match="Input/output error"), OutputFolder(out) as folder:
        (folder.staging / "a.json").write_text("new a")
        folder.commit()
    assert (out / "a.json").read_text() == "old a" and (out / "b.jsonl").read_text() == "old b"
