"""Labelled data for ``lmassay curate train``: texts marked ``remove`` or ``keep``.

The contract: JSONL lines ``{"text": ..., "label": "remove" | "keep"}`` with an optional
``category``; any source :func:`lmassay.instruction_data.iter_rows` reads (parquet, a saved
``datasets`` folder, ``hf:``) and any text it finds (:func:`~lmassay.instruction_data.row_text`:
``--text-field``, an instruction pair, or ``text``); ``--label-field`` names another label field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lmassay.errors import InputError
from lmassay.instruction_data import iter_located_rows, row_text

REMOVE, KEEP = "remove", "keep"
LABELS = (REMOVE, KEEP)


@dataclass(frozen=True)
class LabelledTexts:
    """Texts, their labels (1 = remove, 0 = keep) and categories (None where a row has none)."""

    texts: list[str]
    labels: np.ndarray  # (N,) int8
    categories: list[str | None]

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled(
    source: str | os.PathLike[str],
    *,
    text_field: str | None = None,
    label_field: str = "label",
    category_field: str = "category",
    split: str | None = None,
) -> LabelledTexts:
    """Every row of ``source`` as a labelled text; :class:`InputError` naming the row for a
    missing or unknown label or a missing text (and naming the source when it holds no rows)."""
    texts: list[str] = []
    labels: list[int] = []
    categories: list[str | None] = []
    for where, row in iter_located_rows(source, split=split):
        label = row.get(label_field)
        if label is None:
            raise InputError(
                f"{where}: no {label_field!r} field (fields: {', '.join(map(repr, row))})",
                f'label every row "{REMOVE}" or "{KEEP}", or pass --label-field NAME',
            )
        if not isinstance(label, str) or label.strip().lower() not in LABELS:
            raise InputError(
                f"{where}: label {label!r} is neither {REMOVE!r} nor {KEEP!r}",
                f'label every row "{REMOVE}" or "{KEEP}"',
            )
        texts.append(row_text(row, text_field, where))
        labels.append(1 if label.strip().lower() == REMOVE else 0)
        category = row.get(category_field)
        categories.append(None if category is None else str(category))
    return LabelledTexts(texts, np.asarray(labels, dtype=np.int8), categories)
