"""``lmassay demo``: world → reference → tampered variant → attestation, offline and cached."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lmassay.cli import app

runner = CliRunner()


def test_demo_finds_the_suppressed_category_and_reuses_its_cache(world_reference, tmp_path):
    """The test-size demo flags ``religion`` alone, as the variant's ground truth records."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["demo", "--size", "test", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "flagged: religion" in result.stdout
    assert "found the tampering the ground truth records" in result.stdout
    attestation = json.loads((out / "attestation.json").read_text())
    assert attestation["flagged"] == ["religion"] and attestation["verdict"] == "tampered"
    assert (out / "report.html").is_file()

    _, _, cache = world_reference
    truth = json.loads((cache / "zoo" / "suppression" / "tamper.json").read_text())
    assert truth["category"] == "religion" and truth["kind"] == "suppression"

    again = runner.invoke(app, ["demo", "--size", "test", "--out", str(out), "--quiet"])
    assert again.exit_code == 0, (
        again.output
    )  # warm: everything reused, only the attestation reruns


def test_demo_help_and_bad_input(tmp_path):
    assert runner.invoke(app, ["demo", "--help"]).exit_code == 0
    bad = runner.invoke(app, ["demo", "--kind", "nonsense", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert (
        bad.stderr.startswith("demo failed: Invalid value for '--kind'")
        and "nonsense" in bad.stderr
    )
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.output
    file_out = tmp_path / "file"
    file_out.write_text("x")
    bad = runner.invoke(app, ["demo", "--out", str(file_out)])
    assert bad.exit_code == 2 and "is a file" in bad.stderr
