"""Repair a tampered model: fine-tune or distil it on the flagged categories, then attest it again;
or rewrite single facts by rank-one edits.

``repair(RepairConfig(...))`` is the whole fine-tuning recipe (:mod:`lmassay.repair.run`): its
inputs, the attestation that flagged the model and the repair data with its probe-overlap check
(:mod:`~lmassay.repair.inputs`, :mod:`~lmassay.repair.data`), the trained model
(:mod:`~lmassay.repair.fine_tune`), the losses (:mod:`~lmassay.repair.objectives`), the resumable
training loop (:mod:`~lmassay.repair.training`, :mod:`~lmassay.repair.checkpoint`), the saved
folder (:mod:`~lmassay.repair.saving`) and the before/after comparison
(:mod:`~lmassay.repair.outcome`).

``edit_model(EditConfig(...))`` is the fact-editing recipe (:mod:`lmassay.repair.edit`): the facts
and covariance texts (:mod:`~lmassay.repair.edit_inputs`), the rank-one method
(:mod:`~lmassay.repair.rank_one`, over :mod:`~lmassay.repair.mlp_site` and
:mod:`~lmassay.repair.key_value`) and what is verified and recorded
(:mod:`~lmassay.repair.edit_record`).
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
