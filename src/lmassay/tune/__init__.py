"""Supervised fine-tuning on instruction pairs, attested against the base: ``lmassay tune``.

``tune(TuneConfig(...))`` is the whole recipe (:mod:`lmassay.tune.run`): the pairs read from any
dataset the shared reader takes (:mod:`lmassay.instruction_data`), rendered with the model's chat
template or a plain instruction format and masked so that only response tokens are in the loss
(:mod:`~lmassay.tune.pairs`), trained with LoRA or all weights by repair's resumable loop
(:mod:`lmassay.repair.training`), saved as an ordinary safetensors folder with LoRA merged, and,
with ``attest=PROBES``, attested against the base so the per-category drift is in the record
(``OUT/tune/tune.json``, rendered by :mod:`~lmassay.tune.report`).

The package imports torch only when :func:`tune` (or another training name) is first used, so
the command line can build its help from :mod:`lmassay.tune.config` without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmassay.tune.config import TEMPLATES, Template, TuneConfig

if TYPE_CHECKING:
    from lmassay.tune.pairs import PLAIN_INSTRUCTION, encode_pairs, response_loss
    from lmassay.tune.run import TuneResult, read_pairs, tune

_LAZY = {
    "PLAIN_INSTRUCTION": "pairs",
    "encode_pairs": "pairs",
    "response_loss": "pairs",
    "TuneResult": "run",
    "read_pairs": "run",
    "tune": "run",
}

__all__ = [
    "PLAIN_INSTRUCTION",
    "TEMPLATES",
    "Template",
    "TuneConfig",
    "TuneResult",
    "encode_pairs",
    "read_pairs",
    "response_loss",
    "tune",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lmassay.tune' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lmassay.tune.{_LAZY[name]}"), name)
