"""What ``lmassay tune`` is asked for: one dataclass, validated in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from lmassay.attest.model_loading import ModelOptions
from lmassay.bounded_read import FileSizeLimit
from lmassay.choices import CHECKPOINTING, METHODS, TRAIN_DTYPES, Checkpointing, Method
from lmassay.errors import InputError

Template = Literal["auto", "chat", "plain"]
"""How a pair is rendered: ``chat`` (the tokenizer's chat template), ``plain`` (the plain
instruction format of :mod:`lmassay.tune.pairs`) or ``auto`` (chat when the tokenizer has a
template, else plain)."""
TEMPLATES: tuple[str, ...] = get_args(Template)
DEFAULT_LR = {"lora": 1e-3, "full": 1e-4}


@dataclass(frozen=True)
class TuneConfig(ModelOptions, FileSizeLimit):
    """The settings of one supervised fine-tuning run (the CLI flags, one field each).

    The model-loading fields are :class:`~lmassay.attest.model_loading.ModelOptions`'
    (keyword-only); ``dtype`` must be one of ``auto``, ``float32`` or ``bfloat16``
    (``auto``: bfloat16 on a CUDA GPU that supports it, float32 elsewhere).
    """

    model: str
    """The base model: a local folder or hub id."""
    data: str
    """Instruction pairs: .jsonl, .parquet, a folder saved by datasets, or hf:ORG/NAME."""
    out: str
    """Where the tuned model (a transformers folder, LoRA merged) and its records go."""
    method: Method = "lora"
    template: Template = "auto"
    split: str | None = None
    """The split of a saved DatasetDict or an hf: dataset (hf: default: train)."""
    steps: int = 200
    lr: float | None = None
    """Peak learning rate; by default 1e-3 for LoRA and 1e-4 for full fine-tuning."""
    batch_size: int = 8
    max_length: int = 512
    """Most tokens of a pair (prompt and response); longer responses are cut, and a pair whose
    prompt alone fills it is left out."""
    lora_rank: int = 8
    lora_alpha: int = 16
    checkpoint_every: int = 50
    gradient_checkpointing: Checkpointing = "auto"
    seed: int = 0
    attest: str | None = None
    """Probes to attest the tuned model against its base with, at the end (any --probes form)."""
    restart: bool = False
    """Discard the checkpoints of an interrupted run instead of resuming it."""
    force: bool = False
    """Replace an existing, non-empty OUT."""

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first offending flag."""
        if self.dtype not in TRAIN_DTYPES:
            raise InputError(
                f"--dtype {self.dtype!r} cannot train", f"use {', '.join(TRAIN_DTYPES)}"
            )
        super().validate()
        if self.method not in METHODS:
            raise InputError(
                f"--method {self.method!r} is unknown", f"use one of {', '.join(METHODS)}"
            )
        if self.template not in TEMPLATES:
            raise InputError(
                f"--template {self.template!r} is unknown", f"use one of {', '.join(TEMPLATES)}"
            )
        positive = {
            "--steps": self.steps,
            "--batch-size": self.batch_size,
            "--lora-rank": self.lora_rank,
            "--lora-alpha": self.lora_alpha,
            "--checkpoint-every": self.checkpoint_every,
        }
        for flag, value in positive.items():
            if value < 1:
                raise InputError(f"{flag} {value} is below 1", f"pass {flag} 1 or more")
        if self.max_length < 8:
            raise InputError(
                f"--max-length {self.max_length} is below 8", "pass --max-length 8 or more"
            )
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"--lr {self.lr} is not positive", "pass a learning rate such as 1e-4")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} is negative", "pass 0 or more")
        if self.gradient_checkpointing not in CHECKPOINTING:
            raise InputError(
                f"--gradient-checkpointing {self.gradient_checkpointing!r} is unknown",
                "use auto, on or off",
            )
        self.check_file_size_limit()
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {self.out!r} is a file", "pass a folder for the tuned model")
        if out.is_dir() and any(out.iterdir()) and not self.force:
            raise InputError(
                f"--out {self.out} already exists",
                "pass --force to replace it, or choose another folder",
            )
        if not self.data.startswith("hf:") and not Path(self.data).exists():
            raise InputError(f"--data {self.data} does not exist", "check the path")

    def training_request(self) -> dict[str, Any]:
        """The fields that decide the training, compared when resuming."""
        keep = (
            "method",
            "template",
            "split",
            "steps",
            "batch_size",
            "max_length",
            "lora_rank",
            "lora_alpha",
            "seed",
            "dtype",
        )
        values = asdict(self)
        request = {key: values[key] for key in keep}
        request["lr"] = self.learning_rate
        return request
