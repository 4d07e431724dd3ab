"""How the model's weights relate to the reference's: a modified copy, or independent weights.

A fine-tune, a tamper, a re-save or a quantisation changes a copy of the reference: most tensors
move by a small fraction of their norm (the zoo's fine-tunes: median relative change 0.12; a
rank-one edit touches one tensor). A model trained from another initialisation shares nothing
with the reference: every tensor differs by about as much as its own norm (median ≈ 1.4 for two
independent initialisations of the same shape, since ‖A − B‖ ≈ √2 ‖A‖ for independent weights of
equal scale). The functional divergence alone cannot tell these apart on a narrow world, where
two independently trained models agree almost everywhere; the weights can, whenever the two
checkpoints share an architecture.

:func:`weight_relation` gives the median over tensors of ``‖W_model − W_reference‖ / ‖W_reference‖``
(the same figure as ``lmassay diff``, computed without the spectrum), or ``None`` when it cannot
be computed: either side is not a local folder of safetensors weights, or their tensors differ in
name or shape. :data:`INDEPENDENT_WEIGHTS` is the median above which the weights are taken to be
independent.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from lmassay.attest.statistics.records import INDEPENDENT_WEIGHTS
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress


@dataclass(frozen=True)
class WeightRelation:
    """The median relative change of the shared tensors, and how many there are."""

    median_relative_change: float
    n_tensors: int
    n_changed: int

    @property
    def independent(self) -> bool:
        return self.median_relative_change > INDEPENDENT_WEIGHTS

    def to_json(self) -> dict[str, float | int | bool]:
        return {
            "median_relative_change": self.median_relative_change,
            "n_tensors": self.n_tensors,
            "n_changed": self.n_changed,
            "independent": self.independent,
            "threshold": INDEPENDENT_WEIGHTS,
        }


def weight_relation(
    model: str, reference: str, progress: Progress | None = None
) -> WeightRelation | None:
    """The relation of the weights of the local folders ``model`` and ``reference``, or ``None``
    when they are not both local safetensors checkpoints of one architecture."""
    from lmassay.sealing.weight_diff import DiffConfig, diff_weights

    if not (Path(model).is_dir() and Path(reference).is_dir()):
        return None
    try:
        diff = diff_weights(DiffConfig(base=reference, model=model, spectrum=False), progress)
    except InputError:  # another architecture, or weights that are not safetensors
        (progress or NullProgress()).log("weights not comparable: the functional call alone")
        return None
    changes = [t.rel_change for t in diff.tensors if t.rel_change is not None]
    if not changes:
        return None
    median = statistics.median(changes)
    return WeightRelation(
        median_relative_change=median if math.isfinite(median) else math.inf,
        n_tensors=len(diff.tensors),
        n_changed=len(diff.changed),
    )
