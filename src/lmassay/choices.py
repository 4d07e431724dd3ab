"""The closed sets of values that lmassay's flags take, as ``Literal`` types.

One definition each, used by the configurations that validate them and by :mod:`lmassay.cli.options`,
which shows them in ``--help``. This module imports nothing heavy, so the command line can build its
help without importing torch.
"""

from __future__ import annotations

from typing import Literal, get_args

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
"""Dtype a model is loaded (or an edit computed) in; ``auto``: float32 on CPU, bfloat16 on GPU."""
TrainDtype = Literal["auto", "float32", "bfloat16"]
"""Dtypes ``lmassay repair`` trains in (float16 would need loss scaling)."""
Comparison = Literal["auto", "kl", "bpb"]
"""How ``lmassay attest`` compares the model with the reference."""
Mode = Literal["wide", "narrow", "distill"]
"""What ``lmassay repair`` trains on and against."""
Method = Literal["lora", "full"]
"""Which parameters ``lmassay repair`` trains."""
Checkpointing = Literal["auto", "on", "off"]
"""Activation (gradient) checkpointing while repairing; ``auto``: on for CUDA."""
FactToken = Literal["subject_last", "last"]
"""Where a rank-one edit reads its key: the subject's last token or the prompt's last."""

DTYPES: tuple[str, ...] = get_args(Dtype)
TRAIN_DTYPES: tuple[str, ...] = get_args(TrainDtype)
COMPARISONS: tuple[str, ...] = get_args(Comparison)
MODES: tuple[str, ...] = get_args(Mode)
METHODS: tuple[str, ...] = get_args(Method)
CHECKPOINTING: tuple[str, ...] = get_args(Checkpointing)
FACT_TOKENS: tuple[str, ...] = get_args(FactToken)
