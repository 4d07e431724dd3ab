"""The configurations of ``lmassay curate train`` and ``curate filter``, validated in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmassay.attest.model_loading import ModelOptions
from lmassay.curate.features import POOLINGS, Pooling
from lmassay.errors import require


@dataclass(frozen=True, kw_only=True)
class TrainConfig(ModelOptions):
    """``lmassay curate train``: a classifier on the LM's features from labelled texts."""

    model: str
    """The known-good LM whose hidden states are the features (folder or hub id)."""
    labelled: str
    """Labelled data: JSONL ``{"text", "label": "remove" | "keep"}`` or any dataset source."""
    out: str
    """The classifier folder to write."""
    text_field: str | None = None
    """Field holding the text (default: ``text``, or an instruction pair's prompt and response)."""
    label_field: str = "label"
    category_field: str = "category"
    split: str | None = None
    layer: int | None = None
    """``hidden_states`` index (0 embeddings, i block i, negative from the end); None: the block
    three quarters deep."""
    pooling: Pooling = "mean"
    max_tokens: int | None = None
    """Most tokens of a text read from its start (the prefix included); None: 1,024 or the
    model's context if shorter."""
    c: float = 1.0
    """Inverse L2 strength of the logistic regression (on standardised features)."""
    sweep: bool = False
    """Also cross-validate every layer and pooling, for the report (features of all layers)."""
    token_budget: int = 4096
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        require(
            [
                (self.pooling in POOLINGS, f"--pooling {self.pooling!r} is not known",
                 f"use one of {', '.join(POOLINGS)}"),
                (self.max_tokens is None or self.max_tokens >= 2,
                 f"--max-tokens {self.max_tokens} is too small", "pass 2 or more"),
                (math.isfinite(self.c) and self.c > 0, f"--c {self.c} is not positive",
                 "pass e.g. 1.0"),
                (self.token_budget >= 1, f"--token-budget {self.token_budget} is not positive",
                 "pass e.g. 4096"),
            ]
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FilterConfig(ModelOptions):
    """``lmassay curate filter``: score a dataset and split it into kept and removed items."""

    classifier: str
    data: str
    out: str
    model: str | None = None
    """The LM to read features with (default: the one the classifier records); its digest must
    be the classifier's."""
    threshold: float | None = None
    """Remove items scoring at least this (default: the classifier's)."""
    target_recall: float | None = None
    """Instead of a threshold: the highest one whose cross-validated recall reaches this."""
    text_field: str | None = None
    """Default: the field the classifier was trained on."""
    category_field: str = "category"
    split: str | None = None
    batch_size: int = 256
    """Rows scored together (memory is bounded by this, not by the dataset)."""
    examples: int = 10
    """Items shown on each side of the threshold in report.html."""
    token_budget: int = 4096

    def validate(self) -> None:
        super().validate()
        require(
            [
                (self.threshold is None or self.target_recall is None,
                 "--threshold and --target-recall were both given", "pass one of them"),
                (self.threshold is None or 0.0 <= self.threshold <= 1.0,
                 f"--threshold {self.threshold} is not in [0, 1]", "pass e.g. 0.5"),
                (self.target_recall is None or 0.0 < self.target_recall <= 1.0,
                 f"--target-recall {self.target_recall} is not in (0, 1]", "pass e.g. 0.95"),
                (self.batch_size >= 1, f"--batch-size {self.batch_size} is not positive",
                 "pass e.g. 256"),
                (self.examples >= 0, f"--examples {self.examples} is negative", "pass 0 or more"),
                (self.token_budget >= 1, f"--token-budget {self.token_budget} is not positive",
                 "pass e.g. 4096"),
            ]
        )  # fmt: skip
