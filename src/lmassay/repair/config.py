"""What ``lmassay repair`` is asked for: one dataclass, validated in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmassay.attest.model_loading import ModelOptions
from lmassay.bounded_read import FileSizeLimit
from lmassay.choices import (
    CHECKPOINTING,
    METHODS,
    MODES,
    TRAIN_DTYPES,
    Checkpointing,
    Method,
    Mode,
)
from lmassay.errors import InputError

DEFAULT_LR = {"lora": 1e-3, "full": 1e-4}


@dataclass(frozen=True)
class RepairConfig(ModelOptions, FileSizeLimit):
    """The settings of one repair (the CLI flags, one field each).

    The model-loading fields are :class:`~lmassay.attest.model_loading.ModelOptions`'
    (keyword-only); ``dtype`` must be one of :data:`TRAIN_DTYPES`.
    """

    model: str
    """The model to repair: a local folder or hub id (the model the attestation judged)."""
    attestation: str
    """The attestation that flagged it: its attestation.json or the run folder."""
    data: str
    """Repair text: JSONL with text and category, a folder of category folders, parquet, or a saved
    dataset. It must not contain the attestation's probes."""
    out: str
    """Where the repaired model (a transformers folder) and OUT/repair/ (repair.json, the new
    attestation and its report) go."""
    mode: Mode = "distill"
    method: Method = "lora"
    reference: str | None = None
    """The known-good model; by default the attestation's reference. Distill needs it."""
    categories: tuple[str, ...] = ()
    """The categories to repair; by default those the attestation flagged."""
    text_field: str = "text"
    category_field: str = "category"
    steps: int = 200
    lr: float | None = None
    """Peak learning rate; by default 1e-3 for LoRA and 1e-4 for full fine-tuning."""
    batch_size: int = 8
    seq_len: int = 128
    lora_rank: int = 8
    lora_alpha: int = 16
    kl_weight: float = 1.0
    """Narrow and distill: weight of the anchor term on the other categories' text (0: none):
    KL(reference ‖ model) for distill, KL(start ‖ model) for narrow."""
    anchor_samples: int | None = None
    """Narrow and distill: texts to sample from the reference as anchor text. By default 256 when
    --data lacks a category of the attestation that is not repaired, else none; 0: never."""
    holdout: float = 0.1
    """Share of the repair text kept aside to monitor the repair (never trained on)."""
    eval_every: int = 25
    stop_gap: float | None = None
    """Stop early once every held-out group's effect (see :mod:`lmassay.repair.training`) is at
    most this many nats/token. By default narrow and wide stop at half the attestation's noise floor (language-
    model fine-tuning overshoots: it moves a category past the reference), and distill, whose
    target is the reference itself, runs all its steps. Needs a reference."""
    early_stop: bool = True
    """False: run all steps whatever the held-out gap."""
    keep_best: bool = True
    """Keep the weights of the held-out check whose worst category effect is smallest (False:
    keep the last step's)."""
    checkpoint_every: int = 50
    save_adapter: bool = False
    gradient_checkpointing: Checkpointing = "auto"
    seed: int = 0
    restart: bool = False
    """Discard the checkpoints of an interrupted run instead of resuming it."""
    force: bool = False
    """Replace an existing OUT."""

    def resolved_stop_gap(self, noise_floor: float | None) -> float | None:
        """The held-out gap that stops training (None: run all steps)."""
        if not self.early_stop:
            return None
        if self.stop_gap is not None:
            return self.stop_gap
        if self.mode == "distill" or noise_floor is None:
            return None
        return 0.5 * noise_floor

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
        if self.mode not in MODES:
            raise InputError(
                f"--mode {self.mode!r} is not a repair mode", f"use one of {', '.join(MODES)}"
            )
        if self.method not in METHODS:
            raise InputError(
                f"--method {self.method!r} is unknown", f"use one of {', '.join(METHODS)}"
            )
        positive = {
            "--steps": self.steps,
            "--batch-size": self.batch_size,
            "--lora-rank": self.lora_rank,
            "--eval-every": self.eval_every,
            "--checkpoint-every": self.checkpoint_every,
        }
        for flag, value in positive.items():
            if value < 1:
                raise InputError(f"{flag} {value} is below 1", f"pass {flag} 1 or more")
        if self.seq_len < 8:
            raise InputError(f"--seq-len {self.seq_len} is below 8", "pass --seq-len 8 or more")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"--lr {self.lr} is not positive", "pass a learning rate such as 1e-4")
        if not self.lora_alpha > 0:
            raise InputError(f"--lora-alpha {self.lora_alpha} is not positive", "pass e.g. 16")
        if not self.kl_weight >= 0:
            raise InputError(f"--kl-weight {self.kl_weight} is negative", "pass 0 or more")
        if self.anchor_samples is not None and self.anchor_samples < 0:
            raise InputError(
                f"--anchor-samples {self.anchor_samples} is negative", "pass 0 or more"
            )
        if not 0 <= self.holdout < 0.5:
            raise InputError(f"--holdout {self.holdout} is outside [0, 0.5)", "pass e.g. 0.1")
        if self.stop_gap is not None and not self.stop_gap >= 0:
            raise InputError(f"--stop-gap {self.stop_gap} is negative", "pass 0 or more")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} is negative", "pass 0 or more")
        if self.save_adapter and self.method != "lora":
            raise InputError(
                "--save-adapter needs --method lora", "drop --save-adapter or use LoRA"
            )
        if self.gradient_checkpointing not in CHECKPOINTING:
            raise InputError(
                f"--gradient-checkpointing {self.gradient_checkpointing!r} is unknown",
                "use auto, on or off",
            )
        self.check_file_size_limit()
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise InputError(
                f"--out {self.out!r} is a file", "pass a folder for the repaired model"
            )
        if Path(self.data).resolve() == Path(self.attestation).resolve():
            raise InputError("--data is the attestation file", "pass the repair text corpus")

    def training_request(self) -> dict[str, Any]:
        """The fields that decide the training, compared when resuming."""
        keep = (
            "mode",
            "method",
            "categories",
            "text_field",
            "category_field",
            "steps",
            "lr",
            "batch_size",
            "seq_len",
            "lora_rank",
            "lora_alpha",
            "kl_weight",
            "anchor_samples",
            "holdout",
            "eval_every",
            "stop_gap",
            "early_stop",
            "keep_best",
            "seed",
            "dtype",
        )
        values = asdict(self)
        request = {key: values[key] for key in keep}
        request["categories"] = list(self.categories)
        request["lr"] = self.learning_rate
        return request
