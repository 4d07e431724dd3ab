"""``lmassay demo``: the whole job, offline, on a world, a reference and a tampered variant made here.

One linear recipe:

1.–3. make (or reuse) the world pair in the cache (:func:`lmassay.world.pair.make_pair`): the
   generated world, the reference model trained on its training split, and one tampered variant
   of it (by default a topic suppression of ``religion``) with its ground-truth record;
4. attest the variant against the reference on the world's held-out probe split
   (:func:`lmassay.attest.attest`), writing ``attestation.json``, ``samples.jsonl`` and the reports to
   ``out``;
5. compare what was flagged with the ground truth.

The cache lives in ``$LMASSAY_CACHE`` or the user cache folder (``platformdirs``), one sub-folder per
demo recipe and seed; every step reuses what a previous run left there when its recorded request
matches, so a warm run only attests.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmassay.attest.document import Verdict
from lmassay.attest.recipe import AttestationResult, AttestConfig, attest
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.world.pair import PairConfig, make_pair

__all__ = ["DemoConfig", "DemoResult", "default_cache_dir", "run_demo"]

DEMO_FORMAT = "demo-v1"  # change it when the same request would make other files


def default_cache_dir() -> Path:
    """``$LMASSAY_CACHE`` if set, else the user cache folder for lmassay."""
    if os.environ.get("LMASSAY_CACHE"):
        return Path(os.environ["LMASSAY_CACHE"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lmassay"))


@dataclass
class DemoConfig:
    """What ``lmassay demo`` does; :meth:`validate` names the offending flag."""

    out: str = "lmassay-demo"
    """Folder for the attestation of the tampered variant (report.html and the rest)."""
    cache: str | None = None
    """Where the world, the reference and the variant are kept (default: :func:`default_cache_dir`)."""
    kind: str = "suppression"
    """Which tamper-zoo kind to demonstrate."""
    category: str | None = None
    """The category to tamper with (default: the kind's own default)."""
    seed: int = 0
    """Seed for the world, the training and the tampering."""
    size: Literal["demo", "test"] = "demo"
    """demo: the README's recipe (minutes cold); test: a tiny one for the test suite (seconds)."""
    n_bootstrap: int = 1000

    def validate(self) -> None:
        self.pair().validate()
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {self.out!r} is a file", "pass a folder")
        cache = Path(self.cache) if self.cache else None
        if cache is not None and cache.exists() and not cache.is_dir():
            raise InputError(f"--cache {self.cache!r} is a file", "pass a folder")

    def pair(self) -> PairConfig:
        """The world pair the demo attests: in the cache, its variant under ``zoo/``."""
        root = self.cache_root()
        name = self.kind + (f"-{self.category}" if self.category else "")
        return PairConfig(
            root=root,
            size=self.size,
            kind=self.kind,
            category=self.category,
            seed=self.seed,
            variant_dir=root / "zoo" / name,
        )

    def cache_root(self) -> Path:
        base = Path(self.cache).expanduser() if self.cache else default_cache_dir()
        return base / DEMO_FORMAT / f"{self.size}-seed{self.seed}"


@dataclass
class DemoResult:
    """What the demo made and found."""

    world: Path
    reference: Path
    variant: Path
    ground_truth: dict[str, Any]
    attestation: AttestationResult
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def expected_category(self) -> str | None:
        category = self.ground_truth.get("category")
        return str(category) if category else None

    @property
    def flagged(self) -> list[str]:
        return list(self.attestation.document.flagged)

    @property
    def found(self) -> bool:
        """Whether the attestation flagged exactly the tampered category (or, for a control, nothing)."""
        expected = self.expected_category
        if expected is None:
            return self.attestation.document.verdict is Verdict.CONSISTENT
        return self.flagged == [expected]


def run_demo(config: DemoConfig, progress: Progress | None = None) -> DemoResult:
    """Make or reuse the world pair; attest its variant; see the module docstring."""
    progress = progress or NullProgress()
    config.validate()
    pair_config = config.pair()
    progress.log(f"world, reference and tampered variant ({config.kind}) in {pair_config.root}")
    pair = make_pair(pair_config, progress)

    t0 = time.perf_counter()
    progress.log(f"attesting the variant against the reference → {config.out}")
    result = attest(
        AttestConfig(
            model=str(pair.tampered),
            reference=str(pair.reference),
            probes=str(pair.probes),
            out=config.out,
            seed=config.seed,
            n_bootstrap=config.n_bootstrap,
        ),
        progress,
    )
    seconds = {**pair.seconds, "attest": round(time.perf_counter() - t0, 2)}
    return DemoResult(
        world=pair.world.root,
        reference=pair.reference,
        variant=pair.tampered,
        ground_truth=pair.ground_truth,
        attestation=result,
        seconds=seconds,
    )
