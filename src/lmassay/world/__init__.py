"""The offline world: a generated fictional world, its text, and a reference model trained on it.

Tests, the demo and the benchmarks use it instead of downloaded models and data.

* :func:`build_world` invents entities and facts of nine categories from a seed;
  :func:`render_documents` writes paragraphs about them (optionally with edited facts or a
  negative slant on some entities — what the zoo of tampered models trains on).
* :func:`make_world` writes a world folder (training split, probe split, facts, fact probes,
  ``world.json``); :func:`load_world` reads it back and checks it.
* :func:`make_real_world` (:mod:`lmassay.world.real_text`) writes a second, real-text world
  folder in the same layout: paragraphs of public-domain and free text from Debian packages, one
  category per package, no facts.
* :func:`lmassay.world.reference.train_reference` trains the reference model on a world folder
  (imported lazily: it needs torch), with the tiny-model kit of :mod:`lmassay.world.tiny_lm`.
* :mod:`lmassay.world.zoo` makes tampered variants of the reference with their ground truth;
  :func:`lmassay.world.pair.make_pair` makes a world, its reference and one variant in one step
  (``lmassay world pair``, and the first half of ``lmassay demo``, :mod:`lmassay.world.demo`).
"""

from __future__ import annotations

from lmassay.world._store import SIZES, WorldFiles, load_world, make_world, read_card, world_files
from lmassay.world._templates import split_sentences
from lmassay.world.generator import CATEGORIES, Entity, Fact, World, build_world
from lmassay.world.real_text import make_real_world
from lmassay.world.render import held_out_template, render_documents

__all__ = [
    "CATEGORIES",
    "SIZES",
    "Entity",
    "Fact",
    "World",
    "WorldFiles",
    "build_world",
    "held_out_template",
    "load_world",
    "make_real_world",
    "make_world",
    "read_card",
    "render_documents",
    "split_sentences",
    "world_files",
]
