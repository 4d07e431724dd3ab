"""Tests of the typed attestation document (lmassay.attest.document) and its shipped JSON Schema."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from attestation_check import assert_valid_attestation
from lmassay._atomic import atomic_write_json
from lmassay.attest.document import (
    Attestation,
    BaselineInfo,
    CategoryRow,
    Comparison,
    Evidence,
    EvidenceSample,
    EvidenceToken,
    ModelInfo,
    ProbesInfo,
    Provenance,
    Summary,
    Verdict,
    json_schema,
)
from lmassay.digests import Digest
from lmassay.errors import InputError

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(DATA.glob("attestation_*.json"))


def _raw(name: str = "tampered") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"attestation_{name}.json").read_text("utf-8"))
    return loaded


def _dumped(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def test_golden_files_exist() -> None:
    assert [p.name for p in GOLDEN] == ["attestation_consistent.json", "attestation_tampered.json"]


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_files_follow_the_schema(path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())
    assert_valid_attestation(path)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_round_trip_is_byte_identical(path: Path, tmp_path: Path) -> None:
    raw = json.loads(path.read_text("utf-8"))
    doc = Attestation.read(path)
    assert _dumped(doc.to_json()) == _dumped(raw)
    written = doc.write(tmp_path / "attestation.json")
    assert written.read_text("utf-8") == _dumped(raw)
    assert Attestation.read(tmp_path) == doc


def test_tampered_golden_file_is_rewritten_byte_for_byte(tmp_path: Path) -> None:
    source = DATA / "attestation_tampered.json"
    out = Attestation.read(source).write(tmp_path / "a.json")
    assert out.read_bytes() == source.read_bytes()


def test_typed_values() -> None:
    doc = Attestation.read(DATA / "attestation_tampered.json")
    assert doc.verdict is Verdict.TAMPERED and doc.comparison is Comparison.KL
    assert doc.flagged == ("cooking",) and doc.exit_code == 1 and doc.statistic == "mean_kl"
    cooking = next(c for c in doc.categories if c.name == "cooking")
    assert isinstance(cooking, CategoryRow) and cooking.flagged is True
    assert cooking.mean_kl_ci == (0.67486, 0.99583)
    assert isinstance(doc.summary, Summary) and doc.summary.alpha == 0.05
    assert isinstance(doc.model, ModelInfo) and doc.model.digest == Digest("sha256", "3f9a" * 16)
    assert isinstance(doc.probes, ProbesInfo) and doc.probes.categories["tiny"] == 3
    assert isinstance(doc.provenance, Provenance) and doc.provenance.libraries["torch"] == "2.13.0"
    token = doc.evidence[0].samples[0].tokens[0]
    assert isinstance(token, EvidenceToken) and token.token == " salt"
    assert token.top_reference is not None and token.top_reference[0] == (" salt", 0.83)
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.verdict = Verdict.CONSISTENT  # type: ignore[misc]


def test_unknown_fields_survive_in_order() -> None:
    raw = _raw()
    raw = {"future_top": {"x": 1}, **raw}
    raw["categories"][0]["future_field"] = [1, 2]
    raw["summary"] = {"future": None, **raw["summary"]}
    raw["evidence"][0]["samples"][0]["tokens"][0]["note"] = "kept"
    doc = Attestation.from_json(raw)
    assert doc.extra == {"future_top": {"x": 1}}
    assert doc.categories[0].extra == {"future_field": [1, 2]}
    assert _dumped(doc.to_json()) == _dumped(raw)


def test_older_documents_without_later_fields_still_read() -> None:
    raw = _raw("consistent")
    for key in ("created", "kl_direction", "evidence", "warnings", "provenance", "probes"):
        del raw[key]
    del raw["model"]["tokenizer_digest"], raw["summary"]["different_model_threshold"]
    for category in raw["categories"]:
        for key in ("tail_kl", "tail_kl_ci", "auc", "distribution", "tested"):
            category.pop(key, None)
    doc = Attestation.from_json(raw)
    assert doc.evidence == () and doc.provenance is None and doc.categories[0].tested is None
    assert doc.to_json() == raw  # missing fields stay missing
    assert_valid_attestation(raw)


def test_string_digest_of_older_files_is_kept() -> None:
    raw = _raw()
    raw["model"]["digest"] = "sha256:" + "ab" * 32
    doc = Attestation.from_json(raw)
    assert doc.model is not None and doc.model.digest == "sha256:" + "ab" * 32
    assert doc.to_json() == raw


def test_ints_stay_ints() -> None:
    raw = _raw()
    raw["summary"]["noise_floor"] = 0
    assert _dumped(Attestation.from_json(raw).to_json()) == _dumped(raw)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a.update(comparison="kld"), "comparison 'kld' is not one of kl, bpb, none"),
        (lambda a: a["categories"][1].update(p_value="small"), "categories[1].p_value"),
        (lambda a: a["categories"][0].update(mean_kl_ci=[1.0]), "categories[0].mean_kl_ci"),
        (lambda a: a["summary"].update(n_tokens=1.5), "summary.n_tokens is 1.5, not an integer"),
        (lambda a: a["model"].update(digest={"value": "x"}), "model.digest"),
        (
            lambda a: a["evidence"][0]["samples"][0]["tokens"][0].update(top_model=[["a"]]),
            "top_model[0]",
        ),
        (lambda a: a.update(flagged="cooking"), 'flagged is "cooking", not a list'),
        (lambda a: a["probes"]["categories"].update(tiny="3"), "probes.categories.tiny"),
        (lambda a: a.pop("summary"), "lacks required key(s) summary"),
        (lambda a: a.update(schema="lmassay.attestation/v2"), "lmassay.attestation/v2"),
    ],
)
def test_malformed_documents_fail_once_naming_file_and_field(
    tmp_path: Path, change: Any, expected: str
) -> None:
    raw = copy.deepcopy(_raw())
    change(raw)
    path = tmp_path / "attestation.json"
    atomic_write_json(path, raw)
    with pytest.raises(InputError) as info:
        Attestation.read(tmp_path)
    assert str(path) in info.value.what
    assert expected in info.value.what
    assert info.value.fix


def test_every_problem_is_listed_in_the_one_error() -> None:
    raw = _raw()
    raw["verdict"] = "fine"
    raw["categories"][2]["n_tokens"] = "many"
    with pytest.raises(InputError) as info:
        Attestation.from_json(raw, "attestation x.json")
    assert "verdict 'fine'" in info.value.what and "categories[2].n_tokens" in info.value.what


def test_built_records_write_every_field_in_declared_order() -> None:
    sample = EvidenceSample.for_bpb(
        id="s1", delta_bpb=0.5, bpb_model=1.5, bpb_reference=1.0, n_tokens=9, excerpt="text"
    )
    assert list(sample.to_json()) == [
        "id",
        "delta_bpb",
        "bpb_model",
        "bpb_reference",
        "n_tokens",
        "excerpt",
        "tokens",
    ]
    kl = EvidenceSample.for_kl(id="s2", mean_kl=None, max_kl=1.0, n_tokens=3, tokens=())
    assert kl.to_json() == {"id": "s2", "mean_kl": None, "max_kl": 1.0, "n_tokens": 3, "tokens": []}
    assert BaselineInfo(path="runs/a", model=None, digest=Digest("sha256", "00")).to_json() == {
        "path": "runs/a",
        "model": None,
        "digest": {"algorithm": "sha256", "value": "00"},
    }
    doc = Attestation.read(DATA / "attestation_tampered.json")
    fresh = dataclasses.replace(doc, keys=())
    assert list(fresh.to_json())[:6] == [
        "schema",
        "created",
        "verdict",
        "flagged",
        "comparison",
        "summary",
    ]
    assert "baseline" in fresh.to_json()  # a built document writes every field it knows
    replaced = dataclasses.replace(doc, evidence=(Evidence(category="cooking"),))
    assert replaced.to_json()["evidence"] == [
        {"category": "cooking", "samples": [], "reasons": [], "ranked_by": None}
    ]


def _schema_properties(name: str) -> list[str]:
    schema = json_schema()
    node = schema if name == "" else schema["$defs"][name]
    return sorted(node["properties"])


@pytest.mark.parametrize(
    ("kind", "definition"),
    [
        (Attestation, ""),
        (Summary, "summary"),
        (CategoryRow, "category"),
        (Evidence, "evidence"),
        (EvidenceSample, "evidence_sample"),
        (EvidenceToken, "evidence_token"),
        (ModelInfo, "model"),
        (BaselineInfo, "baseline"),
        (ProbesInfo, "probes"),
        (Provenance, "provenance"),
    ],
)
def test_schema_and_records_name_the_same_fields(kind: Any, definition: str) -> None:
    fields = sorted(f.name for f in dataclasses.fields(kind) if f.name not in ("extra", "keys"))
    assert _schema_properties(definition) == fields


def test_schema_rejects_what_the_reader_rejects() -> None:
    raw = _raw()
    raw["verdict"] = "fine"
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not validator.is_valid(raw)
    raw = _raw()
    raw["categories"][0]["p_value"] = "small"
    assert not validator.is_valid(raw)


def test_attestations_written_by_attest_follow_the_schema(tmp_path: Path) -> None:
    """A KL run, a bits-per-byte run against it as baseline, and a model scored alone."""
    from conftest import save_tiny_model
    from lmassay.attest import AttestConfig, attest
    from lmassay.world.tiny_lm import train_tokenizer

    texts = {
        c: [f"{c} sample {i} with some words about {c} and {i * 7}" for i in range(6)]
        for c in ("alpha", "beta", "gamma")
    }
    tokenizer = train_tokenizer([t for v in texts.values() for t in v], vocab_size=300)
    model = save_tiny_model(tmp_path / "model", tokenizer, seed=0)
    reference = save_tiny_model(tmp_path / "reference", tokenizer, seed=1)
    probes = tmp_path / "probes.jsonl"
    probes.write_text(
        "".join(json.dumps({"text": t, "category": c}) + "\n" for c, v in texts.items() for t in v)
    )
    common = {"model": str(model), "probes": str(probes), "n_bootstrap": 20, "device": "cpu"}
    runs = {
        "kl": {"reference": str(reference), "out": str(tmp_path / "kl")},
        "bpb": {"baseline": str(tmp_path / "kl"), "out": str(tmp_path / "bpb")},
        "none": {"out": str(tmp_path / "none")},
    }
    for comparison, extra in runs.items():
        result = attest(AttestConfig(**common, **extra))
        path = result.paths["attestation"]
        raw = assert_valid_attestation(path)
        assert raw["comparison"] == comparison and result.attestation == raw
        assert (
            Attestation.read(path).write(tmp_path / "again.json").read_bytes() == path.read_bytes()
        )
