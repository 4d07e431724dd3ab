"""Repair a tampered model: fine-tune or distil it on the flagged categories, then attest again.

``repair(RepairConfig(...))`` is the whole recipe (:mod:`lmassay.repair.run`); the parts are the
repair data and its probe-overlap check (:mod:`~lmassay.repair.data`), the losses
(:mod:`~lmassay.repair.objectives`), the resumable training loop (:mod:`~lmassay.repair.training`,
:mod:`~lmassay.repair.checkpoint`) and the before/after comparison (:mod:`~lmassay.repair.outcome`).
"""

from lmassay.repair.config import METHODS, MODES, RepairConfig
from lmassay.repair.data import ProbeOverlap, RepairTexts, find_probe_overlap, split_repair_texts
from lmassay.repair.outcome import compare_attestations
from lmassay.repair.run import RepairResult, repair

__all__ = [
    "METHODS",
    "MODES",
    "ProbeOverlap",
    "RepairConfig",
    "RepairResult",
    "RepairTexts",
    "compare_attestations",
    "find_probe_overlap",
    "repair",
    "split_repair_texts",
]
