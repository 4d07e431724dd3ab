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
WorldSize = Literal["test", "demo", "full"]
"""Sizes of the offline world and its reference: test (seconds), demo (minutes), full."""
PairSize = Literal["test", "demo"]
"""Sizes ``lmassay world pair`` and ``lmassay demo`` make: test (seconds) or demo (minutes)."""
Arch = Literal["gpt2", "llama"]
"""Architectures of the world's reference model."""
TamperKind = Literal["suppression", "slant", "fact-finetune", "fact-rome", "backdoor"]
"""The tamper zoo's tampered kinds."""
ControlKind = Literal[
    "benign-resave", "benign-bf16", "benign-int8", "benign-continued", "benign-other-seed"
]
"""The tamper zoo's benign controls."""

DTYPES: tuple[str, ...] = get_args(Dtype)
TRAIN_DTYPES: tuple[str, ...] = get_args(TrainDtype)
COMPARISONS: tuple[str, ...] = get_args(Comparison)
MODES: tuple[str, ...] = get_args(Mode)
METHODS: tuple[str, ...] = get_args(Method)
CHECKPOINTING: tuple[str, ...] = get_args(Checkpointing)
FACT_TOKENS: tuple[str, ...] = get_args(FactToken)
WORLD_SIZES: tuple[str, ...] = get_args(WorldSize)
PAIR_SIZES: tuple[str, ...] = get_args(PairSize)
ARCHS: tuple[str, ...] = get_args(Arch)
TAMPER_KINDS: tuple[str, ...] = get_args(TamperKind)
CONTROL_KINDS: tuple[str, ...] = get_args(ControlKind)
