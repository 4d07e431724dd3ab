"""Corrupt inputs through the command line: each is one line on stderr, exit 2, naming the file.

Every case breaks one input of a tiny model folder (or a registry, or repair's resumable work
folder) the way a disk, a download or a hand edit does, runs the command, and checks that the
failure is one line, ``"<verb> failed: <what> — <fix>"``, that names the broken file and says
what to do, and is neither the CLI's generic ``unexpected …`` nor a traceback.  Models fail as
they load, before any scoring.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import world_rows
from lmassay.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_naming(result, verb: str, *phrases: str) -> str:
    """Exit 2, one line on stderr that starts ``"<verb> failed: "`` and holds every phrase."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"{verb} failed: ") and " — " in line, line
    assert "unexpected" not in line and "Traceback" not in result.output, line
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    return line


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corrupt-probes") / "probes.jsonl"
    rows = world_rows(0, 3)
    path.write_text("".join(json.dumps({"category": c, "text": t}) + "\n" for c, t in rows))
    return path


# --------------------------------------------------------------------------------------------
# Damaged safetensors weights: attest (loaded whole, and streamed) and diff


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _huge_header_length(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(struct.pack("<Q", 2**62) + data[8:])


def _header_not_json(file: Path) -> None:
    data = file.read_bytes()
    size = int.from_bytes(data[:8], "little")
    file.write_bytes(data[:8] + b"\xff" * size + data[8 + size :])


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "the file is cut short"),
    "huge header length": (_huge_header_length, "implausible safetensors header length"),
    "header not JSON": (_header_not_json, "unreadable safetensors header"),
}


def _damaged_copy(tiny_model_dir: Path, tmp_path: Path, damage: str) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, folder)
    DAMAGES[damage][0](folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("offload", ["none", "stream"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_attest_names_a_damaged_safetensors_file(tiny_model_dir, probes, tmp_path, damage, offload):
    folder = _damaged_copy(tiny_model_dir, tmp_path, damage)
    result = invoke("attest", "--model", folder, "--reference", tiny_model_dir, "--probes", probes,
                    "--out", tmp_path / "out", "--device", "cpu", "--offload", offload, "-q")  # fmt: skip
    assert_one_line_naming(
        result, "attest", str(folder / "model.safetensors"), DAMAGES[damage][1], "save"
    )


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_diff_names_a_damaged_safetensors_file(tiny_model_dir, tmp_path, damage):
    folder = _damaged_copy(tiny_model_dir, tmp_path, damage)
    result = invoke("diff", tiny_model_dir, folder, "-q")
    assert_one_line_naming(
        result, "diff", str(folder / "model.safetensors"), DAMAGES[damage][1], "save"
    )


# --------------------------------------------------------------------------------------------
# Other broken model folders


def test_attest_gives_the_whole_message_of_a_pickle_that_does_not_load(
    tiny_model_dir, probes, tmp_path
):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"this is not a pickle")
    result = invoke("attest", "--model", folder, "--reference", tiny_model_dir, "--probes", probes,
                    "--out", tmp_path / "out", "--device", "cpu", "--allow-pickle", "-q")  # fmt: skip
    line = assert_one_line_naming(result, "attest", str(folder / "pytorch_model.bin"))
    assert line.endswith("or convert the checkpoint to safetensors"), line  # not cut short


def test_attest_refuses_a_tokenizer_larger_than_the_embedding(
    world_tokenizer, probes, tiny_model_dir, tmp_path
):
    from lmassay.world.tiny_lm import build_model, tiny_gpt2_config

    folder = tmp_path / "small-embedding"
    config = tiny_gpt2_config(
        100, bos_token_id=world_tokenizer.bos_token_id, eos_token_id=world_tokenizer.eos_token_id
    )
    build_model(config, seed=0).save_pretrained(folder)
    world_tokenizer.save_pretrained(folder)
    result = invoke("attest", "--model", folder, "--reference", tiny_model_dir, "--probes", probes,
                    "--out", tmp_path / "out", "--device", "cpu", "-q")  # fmt: skip
    assert_one_line_naming(
        result, "attest", str(folder), f"has {len(world_tokenizer)} tokens", "only 100 rows"
    )


def test_attest_blames_a_garbage_config_json_not_the_tokenizer(tiny_model_dir, probes, tmp_path):
    folder = tmp_path / "bad-config"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text("{not json")
    result = invoke("attest", "--model", folder, "--reference", tiny_model_dir, "--probes", probes,
                    "--out", tmp_path / "out", "--device", "cpu", "-q")  # fmt: skip
    line = assert_one_line_naming(result, "attest", str(folder / "config.json"), "not valid JSON")
    assert "tokenizer" not in line, line


# --------------------------------------------------------------------------------------------
# A registry file that is not a database


def test_history_names_a_registry_that_is_not_a_database(tiny_model_dir, tmp_path):
    registry = tmp_path / "registry.sqlite"
    registry.write_text("not a database, just text\n" * 200)
    result = invoke("history", tiny_model_dir, "--registry", registry)
    assert_one_line_naming(result, "history", str(registry), "--registry", "aside")


@pytest.fixture(scope="module")
def attested(tiny_model_dir, probes, tmp_path_factory):
    """The tiny model attested against itself, recorded into a registry that is not a database.
    Returns (the CLI's result, the registry, the attestation folder)."""
    root = tmp_path_factory.mktemp("corrupt-attest")
    registry = root / "registry.sqlite"
    registry.write_text("not a database, just text\n" * 200)
    run = root / "run"
    result = invoke("attest", "--model", tiny_model_dir, "--reference", tiny_model_dir, "--probes", probes,
                    "--out", run, "--device", "cpu", "--n-bootstrap", "20", "--no-report",
                    "-q", "--registry", registry)  # fmt: skip
    return result, registry, run


def test_attest_warns_naming_a_registry_that_is_not_a_database(attested):
    """Recording stays a warning (the attestation is written), but it names the registry."""
    result, registry, run = attested
    assert result.exit_code == 0, result.output
    assert (run / "attestation.json").is_file()
    warning = [line for line in result.stderr.splitlines() if "registry" in line]
    assert len(warning) == 1, result.stderr
    assert str(registry) in warning[0] and "aside" in warning[0], warning[0]


# --------------------------------------------------------------------------------------------
# A damaged checkpoint in repair's resumable work folder


def _stop(*args, **kwargs):
    raise KeyboardInterrupt  # as a Ctrl-C right after training: the work folder stays


@pytest.fixture(scope="module")
def interrupted_repair(tiny_model_dir, attested, tmp_path_factory):
    """A repair stopped after training: OUT.partial holds its request and the checkpoint of its
    last step. Returns (the repair's arguments, the checkpoint folder)."""
    result, _, run = attested
    assert result.exit_code == 0, result.output
    root = tmp_path_factory.mktemp("corrupt-repair")
    data = root / "data.jsonl"
    rows = world_rows(1, 4)
    data.write_text("".join(json.dumps({"category": c, "text": t}) + "\n" for c, t in rows))
    args = ["repair", "--model", tiny_model_dir, "--attestation", run, "--data", data,
            "--out", root / "repaired", "--categories", "science", "--mode", "wide",
            "--steps", "2", "--checkpoint-every", "1", "--seq-len", "32", "--device", "cpu",
            "-q"]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lmassay.repair.run.save_repaired", _stop)
        stopped = invoke(*args)
    assert stopped.exit_code == 130, stopped.output
    (checkpoint,) = (root / "repaired.partial" / "checkpoints").glob("step-*")
    return args, checkpoint


def _cut_short(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-7])


@pytest.mark.parametrize(
    ("name", "damage"),
    [("trainable.safetensors", _cut_short), ("state.json", lambda f: f.write_text("{step: 2"))],
    ids=["trainable cut short", "state not JSON"],
)
def test_repair_names_a_damaged_checkpoint_and_suggests_restart(
    interrupted_repair, tmp_path, name, damage
):
    args, checkpoint = interrupted_repair
    kept = tmp_path / "kept"
    shutil.copytree(checkpoint, kept)
    damage(checkpoint / name)
    try:
        result = invoke(*args)
    finally:
        shutil.rmtree(checkpoint)
        shutil.copytree(kept, checkpoint)
    assert_one_line_naming(result, "repair", str(checkpoint), "--restart")
