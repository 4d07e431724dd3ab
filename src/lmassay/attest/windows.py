"""Texts to model inputs: rolling windows, batches of windows, and the tensors of one batch.

The rules are the scoring contract of :mod:`lmassay.attest.scoring`: each text ``t_1 … t_n`` is
scored as ``[p, t_1, …, t_n]`` (``p`` the prefix token) in disjoint rolling windows of at most
``max_length`` inputs, every text token exactly once; windows are packed longest first so that
``batch size × longest window ≤ token_budget``, and right-padded.  Both the in-memory engine and
layer streaming (:mod:`lmassay.attest.streaming`) plan their batches here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch

# Logit elements of one batch (per model). On a GPU a big batch keeps the device busy (1 GiB of
# float32 logits); on a CPU big batches are slower, not faster — measured on GPT-2 small, 2 cores:
# 8.4 s for 4.1k tokens with a 1,024-token budget against 13.2 s with 5,341 — because the logits
# and activations then fall out of cache, so the CPU budget is a quarter of that.
_LOGIT_BUDGET_ELEMENTS = {"cuda": 1 << 28, "mps": 1 << 28, "cpu": 1 << 26}
_MAX_TOKEN_BUDGET = 16384


@dataclass(frozen=True, eq=False)
class Window:
    """One model input: ``input_ids`` whose last ``n_scored`` next-token predictions are scored.

    ``seq`` is the whole text with its prefix token, ``[p, t_1, …, t_n]`` (shared by all windows
    of the text, not copied); the input is ``seq[start:stop]`` and the targets are
    ``seq[stop - n_scored + 1 : stop + 1]``, the text tokens ``offset … offset+n_scored-1``
    (0-based) of sample ``sample``.
    """

    sample: int
    offset: int
    seq: np.ndarray  # (n + 1,) int64
    start: int
    stop: int
    n_scored: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def input_array(self) -> np.ndarray:
        return self.seq[self.start : self.stop]  # (length,)

    @property
    def target_array(self) -> np.ndarray:
        return self.seq[self.stop - self.n_scored + 1 : self.stop + 1]  # (n_scored,)

    @property
    def input_ids(self) -> tuple[int, ...]:
        return tuple(self.input_array.tolist())

    @property
    def targets(self) -> tuple[int, ...]:
        return tuple(self.target_array.tolist())


def make_windows(
    token_lists: Sequence[Sequence[int]], prefix_token_id: int, max_length: int
) -> list[Window]:
    """All windows of all texts, in text order (the rule in :mod:`lmassay.attest.scoring`).

    Window 1 predicts ``t_1 … t_m`` (``m = min(n, L)``) from ``s_0 … s_{m-1}``; each later window
    predicts the next ``k = min(L, tokens left)`` tokens ``t_a … t_b`` from ``s_{b-L} … s_{b-1}``.
    """
    if max_length < 1:
        raise InputError(
            f"max_length must be at least 1, got {max_length}", "pass --max-length 1 or more"
        )
    out: list[Window] = []
    for index, tokens in enumerate(token_lists):
        seq = np.empty(len(tokens) + 1, dtype=np.int64)  # (n + 1,)
        seq[0] = prefix_token_id
        seq[1:] = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        a = 1  # first target index in seq
        while a <= n:
            b = min(n + 1, a + max_length)  # targets are seq[a:b]
            start = max(0, b - 1 - max_length)
            out.append(Window(index, a - 1, seq, start, b - 1, b - a))
            a = b
    return out


def rolling_windows(
    tokens: Sequence[int], prefix_token_id: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Split one text into ``(input_ids, targets)`` windows by the rule of :func:`make_windows`."""
    return [
        (w.input_array.tolist(), w.target_array.tolist())
        for w in make_windows([tokens], prefix_token_id, max_length)
    ]


def plan_batches(windows: Sequence[Window], token_budget: int) -> list[list[Window]]:
    """Pack windows, longest first, into batches with ``len(batch) × longest ≤ token_budget``."""
    ordered = sorted(windows, key=lambda w: (-w.length, w.sample, w.offset))
    batches: list[list[Window]] = []
    current: list[Window] = []
    longest = 0
    for window in ordered:
        length = window.length
        if current and (len(current) + 1) * max(longest, length) > token_budget:
            batches.append(current)
            current, longest = [], 0
        current.append(window)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def default_token_budget(
    vocab_width: int, max_length: int, n_models: int = 1, device: str = "cpu"
) -> int:
    """Tokens per batch: one batch's float32 logits near 1 GiB on a GPU, 256 MiB on a CPU.

    Never less than one full window (``max_length``), never more than 16,384 tokens.
    """
    elements = _LOGIT_BUDGET_ELEMENTS.get(device, _LOGIT_BUDGET_ELEMENTS["cpu"])
    budget = elements // max(1, vocab_width * n_models)
    return max(max_length, min(_MAX_TOKEN_BUDGET, budget))


def resolve_token_budget(
    token_budget: int | None, widths: Sequence[int], max_length: int, device: str
) -> int:
    """The budget asked for (``--token-budget``), else :func:`default_token_budget` for the
    output widths of the models scored together."""
    budget = token_budget or default_token_budget(max(widths), max_length, len(widths), device)
    if budget < 1:
        raise InputError(
            f"token budget must be positive, got {budget}", "pass --token-budget 1 or more"
        )
    return budget


def check_token_lists(token_lists: Sequence[Sequence[int]]) -> None:
    """Refuse an empty text: it has no token to score."""
    for index, tokens in enumerate(token_lists):
        if len(tokens) == 0:
            raise InputError(
                f"text number {index + 1} has no tokens", "remove empty texts from the probe corpus"
            )


@dataclass(frozen=True)
class BatchInputs:
    """One batch as tensors: right-padded inputs, and which flat positions are scored."""

    input_ids: torch.Tensor  # (B, T) int64, right-padded with 0
    attention_mask: torch.Tensor  # (B, T) int64, 1 on real tokens
    row_index: torch.Tensor  # (N,) int64, flat b * T + position of every scored position
    targets: torch.Tensor  # (N,) int64, the token scored at each of those positions

    @property
    def n_rows(self) -> int:
        return int(self.row_index.shape[0])


def batch_inputs(batch: Sequence[Window]) -> BatchInputs:
    """Right-padded ``(B, T)`` inputs of ``batch`` and the flat indices of its scored positions."""
    import torch

    longest = max(w.length for w in batch)
    ids = np.zeros((len(batch), longest), dtype=np.int64)  # (B, T)
    mask = np.zeros((len(batch), longest), dtype=np.int64)  # (B, T)
    rows, targets = [], []
    for b, window in enumerate(batch):
        ids[b, : window.length] = window.input_array
        mask[b, : window.length] = 1
        rows.append(b * longest + np.arange(window.length - window.n_scored, window.length))
        targets.append(window.target_array)
    return BatchInputs(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        row_index=torch.from_numpy(np.concatenate(rows)),
        targets=torch.from_numpy(np.concatenate(targets)),
    )
