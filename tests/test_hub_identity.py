"""Hub-native identity: hub ids resolved through huggingface_hub's cache layout (no network),
the revision asked for and the commit it resolved to recorded in attestation.json, edit.json and
by seal, verify and diff; the offline hint; one --device/--revision definition for every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from conftest import world_rows
from lmassay.attest.document import Attestation, json_schema
from lmassay.attest.model_source import locate_model
from lmassay.cli import app
from lmassay.errors import ModelLoadError

MAIN = "a" * 40
V1 = "b" * 40


def _fake_snapshot(
    cache: Path, repo: str, commit: str, source: Path, refs: tuple[str, ...]
) -> Path:
    """``source``'s files as huggingface_hub lays a snapshot out: blobs, links, refs."""
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for file in sorted(source.iterdir()):
        blob = root / "blobs" / f"{commit[:8]}-{file.name}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (root / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (root / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_model_dir, world_tokenizer) -> Path:
    """A hub cache holding ``org/tiny`` at two commits: main (``MAIN``) and tag v1 (``V1``,
    another seed's weights)."""
    import huggingface_hub.constants

    from conftest import save_tiny_model

    cache = tmp_path / "hub"
    other = save_tiny_model(tmp_path / "other", world_tokenizer, seed=1)
    _fake_snapshot(cache, "org/tiny", MAIN, tiny_model_dir, ("main",))
    _fake_snapshot(cache, "org/tiny", V1, other, ("v1",))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_locate_model_records_the_resolved_commit(hub_cache) -> None:
    main = locate_model("org/tiny")
    assert main.hub is not None and main.hub.to_json() == {
        "id": "org/tiny",
        "revision": None,
        "commit": MAIN,
    }
    assert main.path == hub_cache / "models--org--tiny" / "snapshots" / MAIN
    tagged = locate_model("org/tiny", revision="v1")
    assert tagged.hub is not None and (tagged.hub.revision, tagged.hub.commit) == ("v1", V1)
    by_commit = locate_model("org/tiny", revision=V1)
    assert by_commit.hub is not None and by_commit.hub.commit == V1
    assert locate_model(str(main.path)).hub is None  # a folder is a folder, even in the cache


def test_uncached_id_offline_names_hf_download(hub_cache) -> None:
    with pytest.raises(ModelLoadError) as caught:
        locate_model("org/missing", revision="v2")
    line = caught.value.one_line("attest")
    assert "hf download org/missing --revision v2" in line
    assert "huggingface-cli" not in line
    with pytest.raises(ModelLoadError, match="at revision 'nope'"):
        locate_model("org/tiny", revision="nope")


def _probes(path: Path) -> Path:
    rows = [{"category": c, "text": t} for c, t in world_rows(0, 5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FAST = ["--n-bootstrap", "50", "--n-permutations", "0", "--no-report", "--quiet"]


def test_attest_records_model_and_reference_commits(hub_cache, tmp_path) -> None:
    probes = _probes(tmp_path / "probes.jsonl")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            *("attest", "-m", "org/tiny", "--revision", "v1", "-r", "org/tiny"),
            *("--reference-revision", "main", "-p", str(probes), "--out", str(out)),
            *("--device", "cpu", *FAST),
        ],
    )
    assert result.exit_code in (0, 1), result.output
    raw = json.loads((out / "attestation.json").read_text())
    jsonschema.validate(raw, json_schema())
    assert raw["model"]["hub"] == {"id": "org/tiny", "revision": "v1", "commit": V1}
    assert raw["reference"]["hub"] == {"id": "org/tiny", "revision": "main", "commit": MAIN}
    assert raw["model"]["path"].endswith(f"snapshots/{V1}")
    assert raw["model"]["digest"] != raw["reference"]["digest"]  # two commits, two weights
    document = Attestation.read(out / "attestation.json")
    assert document.model is not None and document.model.hub is not None
    assert document.model.hub.commit == V1
    assert document.to_json() == raw  # typed and back, exactly
    config = raw["provenance"]["config"]
    assert (config["revision"], config["reference_revision"]) == ("v1", "main")


def test_a_local_folder_records_no_hub(tiny_model_dir, tmp_path) -> None:
    from lmassay.attest.model_loading import load_model

    described = load_model(str(tiny_model_dir), device="cpu").describe()
    assert "hub" not in described and "tensors_digest" not in described


def test_older_model_records_stay_readable() -> None:
    """A v1 file written before ``hub`` existed reads, and writes back without it."""
    from lmassay.attest.document import ModelInfo, from_json

    old = {"name": "m", "path": "/m", "digest": {"algorithm": "sha256", "value": "0" * 64}}
    info = from_json(ModelInfo, old, "old file")
    assert info.hub is None and info.to_json() == old
    with pytest.raises(Exception, match="hub"):
        from_json(ModelInfo, {**old, "hub": {"id": "x"}}, "broken file")


@pytest.mark.parametrize("command", ["attest", "edit", "repair"])
def test_revision_reaches_every_loading_command(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--revision" in result.output and "cuda:N" in result.output


def test_bad_revision_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["attest", "-m", "org/tiny", "--revision", " v1", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "--revision" in result.output and "Traceback" not in result.output


def test_download_bars_stay_visible_while_transformers_bars_are_hidden() -> None:
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    from lmassay.cli._app import quiet_libraries
    from lmassay.progress import cli_progress, hidden_library_bars

    if constants.HF_HUB_DISABLE_PROGRESS_BARS:
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS is set in this environment")
    enable_progress_bars()
    hf_logging.enable_progress_bar()
    with hidden_library_bars():
        assert not hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    assert hf_logging.is_progress_bar_enabled()
    quiet_libraries()  # what every command runs first
    assert not hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    with hidden_library_bars():
        assert not are_progress_bars_disabled()
    assert not are_progress_bars_disabled()
    with cli_progress(quiet=True):
        assert are_progress_bars_disabled()  # --quiet hides downloads too
    assert not are_progress_bars_disabled()


@pytest.mark.slow  # keygen, seal, two verifications and a diff: about 7 s idle
def test_seal_verify_and_diff_take_hub_ids(hub_cache, tmp_path) -> None:
    """A snapshot (links into blobs) is sealed by content, verified, and diffed at two commits."""
    runner = CliRunner()
    key = tmp_path / "k.pem"
    assert runner.invoke(app, ["keygen", "--out", str(key)]).exit_code == 0
    refused = runner.invoke(app, ["seal", "org/tiny", "--key", str(key)])
    assert refused.exit_code == 2 and "--out" in refused.output
    sig = tmp_path / "tiny-v1.sig"
    sealed = runner.invoke(
        app, ["seal", "org/tiny", "--revision", "v1", "--key", str(key), "--out", str(sig)]
    )
    assert sealed.exit_code == 0, sealed.output
    assert f"commit {V1}" in sealed.output
    pub = str(key.with_suffix(".pub"))
    report = tmp_path / "verify.json"
    args = ["verify", "org/tiny", "--signature", str(sig), "--public-key", pub]
    verified = runner.invoke(app, [*args, "--revision", V1, "--json", str(report)])
    assert verified.exit_code == 0, verified.output
    assert json.loads(report.read_text())["hub"] == {"id": "org/tiny", "revision": V1, "commit": V1}
    other = runner.invoke(app, args)  # the default branch: other weights
    assert other.exit_code == 1, other.output
    diff_json = tmp_path / "diff.json"
    diffed = runner.invoke(
        app, ["diff", "org/tiny", "org/tiny", "--revision", "v1", "--json", str(diff_json), "-q"]
    )
    assert diffed.exit_code == 0, diffed.output
    recorded = json.loads(diff_json.read_text())
    assert recorded["base_hub"] == {"id": "org/tiny", "revision": None, "commit": MAIN}
    assert recorded["model_hub"] == {"id": "org/tiny", "revision": "v1", "commit": V1}
    assert f"commit {MAIN}" in diffed.output and f"commit {V1}" in diffed.output
    assert "unchanged" not in diffed.output.split("tensors changed")[1].split("\n")[3]
    stray = runner.invoke(app, ["diff", str(tmp_path), "org/tiny", "--base-revision", "v1"])
    assert stray.exit_code == 2 and "is a path" in stray.output
