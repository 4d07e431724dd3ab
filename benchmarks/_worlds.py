"""The benchmark worlds: where the detection and repair benchmarks get a world, its reference and
the folder its tamper zoo goes in, for ``--world generated|real``, made or reused under one cache.

For a size and seed the cache root is :meth:`lmassay.world.demo.DemoConfig.cache_root` of the
cache folder (``--cache``, else ``$LMASSAY_CACHE``, else the user cache), the demo's own layout:

* ``generated``: the generated multi-topic world (:func:`lmassay.world.make_world`) in
  ``<root>/world``, its reference in ``<root>/reference``, the zoo in ``<root>/zoo``;
* ``real``: the real-text world of public-domain Debian text (:func:`lmassay.world.make_real_world`)
  in ``<root>/real/world``, its reference in ``<root>/real/reference``, the zoo in
  ``<root>/real/zoo``. The ``.deb`` files are cached in ``debs/`` of the cache folder (or
  ``debs``), shared by every size and seed. With ``real_reference`` an existing real-text
  reference is used instead of training one, with the world its card records.

Each piece is reused when its folder holds what the same request would make (the world's and the
reference's cards), so both benchmarks share one world, one reference and one zoo per size and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmassay.world import WorldFiles, make_real_world, make_world, world_files
from lmassay.world.demo import DemoConfig
from lmassay.world.reference import reference_world, train_reference

WorldKind = Literal["generated", "real"]
WORLD_KINDS: tuple[WorldKind, ...] = ("generated", "real")
REAL_FOLDER = "real"
"""The real-text world's folder under the cache root."""


@dataclass(frozen=True)
class BenchWorld:
    """A benchmark world made (or reused): its files, its reference and where its zoo goes."""

    kind: WorldKind
    base: Path
    """The folder of this world's pieces (the cache root, or its ``real/`` folder): benchmarks put
    their runs under it."""
    files: WorldFiles
    reference: Path
    zoo: Path


def bench_world(
    kind: WorldKind,
    *,
    size: Literal["test", "demo"],
    seed: int,
    cache: Path | None = None,
    debs: Path | None = None,
    real_reference: Path | None = None,
) -> BenchWorld:
    """Make (or reuse) the ``kind`` world of ``size`` and ``seed`` and its reference under the
    cache folder ``cache`` (module docstring); ``debs`` and ``real_reference`` apply to ``real``."""
    root = DemoConfig(size=size, seed=seed, cache=str(cache) if cache else None).cache_root()
    if kind == "generated":
        world = make_world(root / "world", seed=seed, size=size)
        reference = train_reference(world.root, root / "reference", size=size, seed=seed).path
        return BenchWorld(kind, root, world, reference, root / "zoo")
    base = root / REAL_FOLDER
    if real_reference is not None:
        world = world_files(reference_world(real_reference))
        return BenchWorld(kind, base, world, real_reference, base / "zoo")
    if debs is None and cache is not None:
        debs = cache / "debs"  # None: make_real_world's default, debs/ of the default cache
    world = make_real_world(base / "world", seed=seed, size=size, cache_debs=debs)
    reference = train_reference(world.root, base / "reference", size=size, seed=seed).path
    return BenchWorld(kind, base, world, reference, base / "zoo")
