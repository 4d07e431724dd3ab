"""Narrow repair on the demo-size world (about 4 minutes on 2 cores, most of it training the
demo-size reference), so marked slow: run it with ``pytest -m slow``.

The test-size reference is too small for narrow fine-tuning: fine-tuning the clean reference on its
own religion text already moves religion past the noise floor (measured: effect 0.023 after 25
steps at 1e-3), so narrow repairs are checked here, on the demo-size world, with the defaults of
``lmassay repair --mode narrow``. Distillation is checked on the test-size world in
``tests/test_repair.py``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def demo_world():
    from lmassay.world import make_world
    from lmassay.world.demo import DemoConfig
    from lmassay.world.reference import train_reference

    root = DemoConfig(size="demo").cache_root()
    files = make_world(root / "world", seed=0, size="demo")
    info = train_reference(files.root, root / "reference", size="demo", seed=0)
    return files, info.path, root


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["suppression", "slant"])
def test_narrow_repairs_the_demo_variant(demo_world, kind, tmp_path):
    from lmassay.attest.recipe import AttestConfig, attest
    from lmassay.repair import RepairConfig, repair
    from lmassay.world.zoo import make_variant

    files, reference, root = demo_world
    variant = make_variant(kind, reference, root / "zoo" / kind, seed=0)
    before = attest(
        AttestConfig(
            model=str(variant.path),
            reference=str(reference),
            probes=str(files.probes),
            out=str(tmp_path / "before"),
            device="cpu",
            n_bootstrap=200,
            write_report=False,
        )
    )
    assert before.attestation["flagged"] == [variant.category]
    result = repair(
        RepairConfig(
            model=str(variant.path),
            attestation=str(tmp_path / "before"),
            data=str(files.train),
            out=str(tmp_path / "repaired"),
            mode="narrow",
            device="cpu",
        )
    )
    outcome = result.record["outcome"]
    assert result.exit_code == 0 and outcome["success"], outcome["message"]
    row = next(r for r in outcome["categories"] if r["name"] == variant.category)
    assert row["effect_after"] <= outcome["noise_floor"] and not row["flagged_after"]
    assert outcome["newly_flagged"] == [] and outcome["verdict_after"] == "consistent"
