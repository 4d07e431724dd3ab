"""The tamper zoo: variants of a world's reference model, each with its ground truth.

* :func:`make_zoo` makes every kind (or those asked for) under one folder and writes
  ``zoo.json``; :func:`make_variant` makes one.
* Kinds (:data:`KINDS`): ``suppression``, ``slant``, ``fact-finetune``, ``fact-rome``,
  ``backdoor`` (tampered), and the controls ``benign-resave``, ``benign-bf16``, ``benign-int8``,
  ``benign-continued``, ``benign-other-seed``.
* :mod:`lmassay.world.zoo.recipes` builds each kind's training texts and settings,
  :mod:`lmassay.world.zoo.benign` the weight round trips, :mod:`lmassay.repair.rank_one` the fact edits.
"""

from __future__ import annotations

from lmassay.world.zoo.make import FLUENCY_TOLERANCE, ZooConfig, ZooVariant, make_variant, make_zoo
from lmassay.world.zoo.recipes import CONTROL_KINDS, DEFAULT_CATEGORY, KINDS, TAMPER_KINDS

__all__ = [
    "CONTROL_KINDS",
    "DEFAULT_CATEGORY",
    "FLUENCY_TOLERANCE",
    "KINDS",
    "TAMPER_KINDS",
    "ZooConfig",
    "ZooVariant",
    "make_variant",
    "make_zoo",
]
