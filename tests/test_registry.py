"""The SQLite registry: WAL mode, history by path and digest, concurrent writers lose no rows."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmassay.cli import app
from lmassay.errors import InputError
from lmassay.sealing.registry import (
    Registry,
    RegistryEvent,
    default_registry_path,
    history,
    record_event,
)

runner = CliRunner()
N_PROCESSES, N_ROWS = 4, 40


@pytest.fixture(autouse=True)
def _tmp_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("LMASSAY_REGISTRY", str(tmp_path / "env-registry.sqlite"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_wal_mode_and_round_trip(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    assert reg.journal_mode().lower() == "wal"
    digest = "sha256:" + "ab" * 32
    rowid = reg.record(
        RegistryEvent(
            action="seal", path="/m", digest=digest, signer="sha256:k", details={"n_files": 3}
        )
    )
    (event,) = reg.events(digests=("ABABABAB",))  # a prefix, case-insensitive
    assert event.id == rowid and event.digest == digest and event.details == {"n_files": 3}
    assert reg.events(digests=("cdcdcdcd",)) == []
    assert [e.id for e in reg.events(path="/m")] == [rowid]
    with pytest.raises(ValueError):
        reg.record(RegistryEvent(action="delete"))


def test_default_path_env_and_platformdirs(monkeypatch, tmp_path):
    import platformdirs

    assert default_registry_path() == tmp_path / "env-registry.sqlite"
    monkeypatch.delenv("LMASSAY_REGISTRY")
    expected = Path(platformdirs.user_data_dir("lmassay")) / "registry.sqlite"
    assert default_registry_path() == expected


def _writer(path: str, worker: int) -> None:
    reg = Registry(path)
    for i in range(N_ROWS):
        reg.record(RegistryEvent(action="verify", path=f"/w{worker}", verdict=str(i)))


def test_concurrent_writers_lose_no_rows(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Registry(path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(path, w)) for w in range(N_PROCESSES)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert all(p.exitcode == 0 for p in workers)
    reg = Registry(path)
    assert reg.count() == N_PROCESSES * N_ROWS
    for w in range(N_PROCESSES):
        verdicts = sorted(int(e.verdict or -1) for e in reg.events(path=f"/w{w}"))
        assert verdicts == list(range(N_ROWS))
    with sqlite3.connect(path) as conn:  # ids are unique and dense
        assert conn.execute("SELECT COUNT(DISTINCT id) FROM events").fetchone()[0] == 160


def test_history_of_a_folder_by_path_and_digest(tmp_path):
    from lmassay.sealing import generate_keypair

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    keys = generate_keypair(tmp_path / "k.pem")
    registry = tmp_path / "cli.sqlite"
    assert invoke("seal", folder, "--key", keys.private_key, "--registry", registry).exit_code == 0
    args = ("--signature", folder / "model.sig", "--public-key", keys.public_key)
    assert invoke("verify", folder, *args, "--registry", registry).exit_code == 0
    events, root = history(str(folder), registry)
    assert [e.action for e in events] == ["seal", "verify"]
    assert all(e.digest == root and e.signer == keys.fingerprint for e in events)
    assert events[1].verdict == "valid"
    by_digest, _ = history(root[len("sha256:") : len("sha256:") + 12], registry)
    assert [e.id for e in by_digest] == [e.id for e in events]
    result = invoke("history", folder, "--registry", registry)
    assert result.exit_code == 0 and "seal" in result.output and "verify" in result.output
    result = invoke("history", "zz-not-a-digest", "--registry", registry)
    assert result.exit_code == 2 and "neither an existing path nor a sha256 digest" in result.output
    # the env var is the default registry; --no-record leaves it alone
    assert invoke("verify", folder, *args, "--no-record").exit_code == 0
    assert not (tmp_path / "env-registry.sqlite").exists()


def test_history_finds_rows_by_the_legacy_tree_digest(tmp_path):
    """Rows written by lmassay 0.1 name a model by attestation.json's tree digest."""
    from lmassay.digests import digest_tree, model_identity

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / ".hidden").write_text("not in the tree digest", encoding="utf-8")
    registry = tmp_path / "r.sqlite"
    tree = str(digest_tree(folder))
    Registry(registry).record(RegistryEvent(action="attest", path="/elsewhere", tree_digest=tree))
    events, root = history(str(folder), registry)
    assert [e.tree_digest for e in events] == [tree]
    assert root == str(model_identity(folder).root) != tree


def test_record_attestation_without_signing(tmp_path):
    from lmassay.attest.document import Attestation
    from lmassay.sealing.registry import record_attestation

    att = Attestation.from_json(
        {
            "schema": "lmassay.attestation/v1",
            "verdict": "consistent",
            "flagged": [],
            "comparison": "kl",
            "summary": {},
            "categories": [],
            "model": {"name": "org/model", "digest": {"algorithm": "sha256", "value": "cd" * 32}},
            "probes": {"digest": {"algorithm": "sha256", "value": "ef" * 32}},
        }
    )
    registry = tmp_path / "r.sqlite"
    done = record_attestation(att, tmp_path / "run", "org/model", registry=registry)
    assert done.statement is None and done.warning is None
    (event,) = Registry(registry).events()
    assert event.action == "attest" and event.digest == "sha256:" + "cd" * 32
    assert event.path == "org/model" and event.details["probes"] == "ef" * 32
    done = record_attestation(att, tmp_path / "run", "org/model", registry=tmp_path)
    assert done.warning and "not recorded" in done.warning


def test_unusable_registry_is_a_warning_not_a_failure(tmp_path):
    row, warning = record_event(RegistryEvent(action="seal"), tmp_path)  # a folder
    assert row is None and warning and "folder" in warning
    with pytest.raises(InputError):
        Registry(tmp_path)
