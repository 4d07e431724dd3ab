"""The benchmark worlds (``benchmarks/_worlds.py``) and the detection benchmark's rows and rates on
a real-text zoo (``benchmarks/detection.py``).

The real-text world is made offline from the small fixture ``.deb`` files of
``tests/test_real_text.py``, placed where the benchmarks look for them (``debs/`` of the cache
folder); the references are trained with a few-step recipe."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # after the packages

import _worlds
import detection
from lmassay.world import read_card
from lmassay.world.reference import CARD_NAME, RECIPES, reference_world
from lmassay.world.zoo import ZooVariant
from test_real_text import deb_cache, small_sizes  # noqa: F401  (fixtures)


@pytest.fixture
def few_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test-size reference recipe shrunk to a few steps of a one-layer model."""
    tiny = replace(RECIPES["test"], steps=3, n_layer=1, n_embd=32, n_head=2, batch_size=4)
    monkeypatch.setitem(RECIPES, "test", tiny)


@pytest.mark.usefixtures("small_sizes", "deb_cache", "few_steps")
def test_real_world_goes_under_real_and_is_reused(tmp_path: Path) -> None:
    # deb_cache wrote the packages to tmp_path/debs: the cache folder's debs/, found without --debs
    made = _worlds.bench_world("real", size="test", seed=0, cache=tmp_path)
    base = tmp_path / "demo-v1" / "test-seed0" / "real"
    assert made.kind == "real" and made.base == base
    assert made.files.root == base / "world" and made.zoo == base / "zoo"
    assert made.reference == base / "reference"
    world_card = read_card(made.files.root)
    assert world_card["kind"] == "real-text"
    assert {p["version"] for p in world_card["request"]["packages"]} == {"1.0-1"}  # the fixtures
    assert reference_world(made.reference) == made.files.root  # trained on this world

    card = made.reference / CARD_NAME
    stamp = card.stat().st_mtime_ns
    again = _worlds.bench_world("real", size="test", seed=0, cache=tmp_path)
    assert again == made and card.stat().st_mtime_ns == stamp  # reused, not retrained

    # --real-reference: that reference and the world its card records; the zoo stays under real/
    moved = tmp_path / "elsewhere" / "reference"
    moved.parent.mkdir()
    made.reference.rename(moved)
    given = _worlds.bench_world("real", size="test", seed=0, cache=tmp_path, real_reference=moved)
    assert given.reference == moved and given.files.root == made.files.root
    assert given.zoo == base / "zoo"


def test_generated_world_is_the_demo_cache_s_own(world_reference: Any) -> None:
    files, info, root = world_reference  # the session's test-size world, in the demo's cache
    card = info.path / CARD_NAME
    stamp = card.stat().st_mtime_ns
    made = _worlds.bench_world("generated", size="test", seed=0)  # cache: $LMASSAY_CACHE
    assert made.kind == "generated" and made.base == root and made.files == files
    assert made.reference == info.path and made.zoo == root / "zoo"
    assert card.stat().st_mtime_ns == stamp  # reused, not retrained


def _variant(kind: str, category: str | None, expected: str) -> ZooVariant:
    """A variant as the real-text zoo records it (the fields of tamper.json the benchmark reads)."""
    record = {
        "kind": kind,
        "category": category,
        "expected": expected,
        "expectation": {"verdict": expected, "category": category},
    }
    return ZooVariant(kind, Path("zoo") / kind, record, reused=True)


_CATEGORIES = ("religion", "computing", "hacker-lore", "lexicon", "quotations")


def _attestation(
    verdict: str, kl: dict[str, float], flagged: dict[str, list[str]]
) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "flagged": list(flagged),
        "categories": [
            {"name": n, "mean_kl": kl[n], "flagged": n in flagged, "reasons": flagged.get(n, [])}
            for n in _CATEGORIES
        ],
        "summary": {"weight_change": 0.05},
    }


def test_rows_and_rates_on_a_real_text_zoo() -> None:
    base = dict.fromkeys(_CATEGORIES, 0.1)
    rows = [
        # suppression: religion flagged and first, quotations flagged falsely
        detection._row(
            _variant("suppression", "religion", "tampered"),
            0,
            _attestation(
                "tampered",
                {**base, "religion": 0.37, "quotations": 0.2},
                {"religion": ["mean"], "quotations": ["mean"]},
            ),
            1.0,
        ),
        # slant: missed, religion ranks 4th of 5
        detection._row(
            _variant("slant", "religion", "tampered"),
            0,
            _attestation(
                "consistent",
                {**base, "religion": 0.105, "computing": 0.2, "lexicon": 0.15, "quotations": 0.12},
                {},
            ),
            1.0,
        ),
        # a control with one false flag by the sparse test
        detection._row(
            _variant("benign-continued", None, "consistent"),
            0,
            _attestation("tampered", base, {"lexicon": ["sparse"]}),
            1.0,
        ),
        # another seed: not an untampered (variant, category) pair, whatever it flags
        detection._row(
            _variant("benign-other-seed", None, "different-model"),
            0,
            _attestation("different-model", base, {"computing": ["mean"]}),
            1.0,
        ),
    ]
    assert [r["rank_of_true"] for r in rows] == [1, 4, None, None]
    assert rows[0]["reasons"] == {"religion": ["mean"], "quotations": ["mean"]}
    assert rows[0]["kl_true"] == 0.37 and rows[0]["kl_median_others"] == pytest.approx(0.1)
    assert rows[2]["expected_category"] is None and rows[2]["expected_verdict"] == "consistent"
    assert detection._rates(rows) == {
        "n_tampered_with_category": 2,
        "flagged_true": 1,
        "flagged_true_ranked_first": 1,
        "n_untampered_pairs": 4 + 4 + 5,  # the other categories of both tampers, every control's
        "n_false_flags": 2,  # quotations beside the suppression, lexicon on the control
    }
