"""The notebook API: ``lmassay.attest(model=..., reference=..., probes=...)`` with model objects
or paths, probes as rows, a ``datasets.Dataset`` or a spec; written only with ``out=``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmassay
from conftest import world_rows
from lmassay.attest.document import Attestation
from lmassay.digests import Digest, digest_entries
from lmassay.errors import InputError

FAST = {"n_bootstrap": 50, "n_permutations": 0, "device": "cpu"}


def _rows() -> list[dict[str, str]]:
    return [
        {"id": f"{c}-{i}", "category": c, "text": t} for i, (c, t) in enumerate(world_rows(0, 5))
    ]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.train()  # the run must put it in eval mode, and give it back in training mode
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_import_is_cheap_and_the_name_is_the_callable_package() -> None:
    code = (
        "import sys, lmassay\n"
        "f = lmassay.attest\n"
        "assert callable(f) and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "import lmassay.attest.recipe, lmassay.attest.probes\n"
        "assert lmassay.attest is f and callable(lmassay.attest)\n"
        "from lmassay.errors import InputError\n"
        "try:\n    lmassay.attest(model='m', n_bootstraps=3)\n"
        "except InputError as e:\n    print(e.one_line('attest'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "unknown settings ['n_bootstraps']" in done.stdout
    assert callable(lmassay.attest) and lmassay.attest is sys.modules["lmassay.attest"]


def test_objects_and_rows_write_nothing_without_out(
    loaded, tiny_model_dir, tmp_path, monkeypatch
) -> None:
    from safetensors import safe_open

    from lmassay.sealing.manifest import safetensors_tensor_digests

    monkeypatch.chdir(tmp_path)
    model, tokenizer = loaded
    result = lmassay.attest(
        model=(model, tokenizer), reference=tiny_model_dir, probes=_rows(), **FAST
    )
    assert model.training  # given back as it came
    assert result.paths == {} and list(tmp_path.iterdir()) == []  # nothing written
    doc = result.document
    assert doc.model is not None and doc.reference is not None
    # An object claims no folder: no path, no folder digest; the tensors' digest names it.
    assert (doc.model.path, doc.model.digest, doc.model.files) == (None, None, ())
    assert doc.model.name == f"{tiny_model_dir} (in memory)"
    assert doc.reference.digest is not None and doc.reference.tensors_digest is None
    # The same weights: KL is zero and the verdict consistent.
    assert doc.verdict.value == "consistent"
    assert max(abs(row["mean_kl"]) for row in result.samples) < 1e-6
    # The tensors' digest, computed independently from the saved file's per-tensor SHA-256
    # (as lmassay seal records them); GPT-2's tied lm_head is stored once, as wte.
    weights = Path(tiny_model_dir) / "model.safetensors"
    stored = {t.name: t.digest for t in safetensors_tensor_digests(weights, "model.safetensors")}
    with safe_open(weights, "pt") as handle:
        assert set(handle.keys()) == set(stored)
    names = model.state_dict().keys()
    expected = digest_entries((n, stored.get(n) or stored["transformer.wte.weight"]) for n in names)
    assert doc.model.tensors_digest == expected
    assert isinstance(expected, Digest)


def test_a_dataset_reads_as_its_jsonl_and_out_writes(tiny_model_dir, tmp_path) -> None:
    """A datasets.Dataset of rows is the same corpus (digest) as those rows in a JSONL file."""
    import datasets

    from lmassay.attest.probes import load_probes, probes_from_rows

    rows = _rows()
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from_file = load_probes(path)
    from_dataset = probes_from_rows(datasets.Dataset.from_list(rows))
    assert from_dataset.digest == from_file.digest
    assert from_dataset.samples == from_file.samples
    out = tmp_path / "run"
    result = lmassay.attest(
        model=tiny_model_dir,
        probes=datasets.Dataset.from_list(rows),
        out=out,
        write_report=False,
        **FAST,
    )
    assert result.document.comparison.value == "none"  # scored alone: no reference
    assert result.document.probes is not None
    assert result.document.probes.digest == from_file.digest
    assert result.document.probes.path == f"datasets.Dataset ({len(rows)} rows)"
    assert result.paths["attestation"] == out / "attestation.json"
    assert Attestation.read(out / "attestation.json") == result.document
    assert json.loads((out / "attestation.json").read_text())["probes"]["format"] == "rows"


def test_bad_arguments_raise_the_typed_error(loaded, tiny_model_dir) -> None:
    import datasets

    model, tokenizer = loaded
    cases = [
        ({"model": model}, "without its tokenizer"),
        ({"model": str(tiny_model_dir), "tokenizer": tokenizer}, "not a model object"),
        ({"model": (model, tokenizer, 1)}, "tuple of 3 items"),
        ({"model": 3}, "is a int"),
        ({"model": (model, tokenizer), "offload": "stream"}, "offload"),
        ({"model": (model, tokenizer), "probes": datasets.DatasetDict()}, "one split"),
        ({"model": (model, tokenizer), "probes": ["just text"]}, "row 0 is a str"),
        ({"model": (model, tokenizer), "out": "x", "probes": 4}, "probes= is a int"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            lmassay.attest(**kwargs)
