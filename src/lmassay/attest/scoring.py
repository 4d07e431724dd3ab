"""Score texts token by token with a model, or with a model and a reference in lock-step.

Scoring contract
================
Each text is tokenised once, without special tokens, into ``t_1 … t_n``.  The model sees the
sequence ``s = [p, t_1, …, t_n]`` where ``p`` is the prefix token (the tokenizer's BOS token, else
its EOS token, as lm-evaluation-harness does).  **Every text token is scored exactly once**, as
``log P(t_i | preceding tokens)``, and a sample's log-likelihood is the sum over its ``n`` tokens.

A *conversation* sample (a prompt and its response; ``--chat-template``) is given to this scorer
as the tokens of its rendered context followed by its response, and every one of them is scored as
above; :func:`lmassay.attest.conditioned.keep_scored` then keeps only the response's tokens, so only
those count in the sample's log-likelihood, KL and ``n_tokens`` (which tokens exactly, and how the
context is rendered: :mod:`lmassay.attest.conditioned`).

With context length ``L`` (``max_length``; the model's context by default) texts longer than ``L``
are scored in disjoint rolling windows, the rule of lm-evaluation-harness
``loglikelihood_rolling`` (``get_rolling_token_windows`` with ``context_len=1`` plus
``make_disjoint_window``), so that numbers can be compared with it:

* window 1 predicts ``t_1 … t_m`` with ``m = min(n, L)`` from the input ``s_0 … s_{m-1}``;
* each later window predicts the next ``k = min(L, tokens left)`` tokens ``t_a … t_b`` from the
  input ``s_{b-L} … s_{b-1}``: the ``L`` positions ending just before its last target, so each
  target in a later window sees between ``L - k + 1`` and ``L`` tokens of context.

Per scored token the engine keeps only scalars: the log-probability of the actual token under each
model (log-softmax over the model's full output width, in float32 even when the model runs in
bfloat16/float16), ``KL(reference ‖ model) = Σ_v p_ref(v) (log p_ref(v) − log p_model(v))`` over the
vocabulary (when both output widths match; otherwise over the first ``min`` columns, each
renormalised), and both models' top-1 token.  Full-vocabulary logits never outlive the batch that
made them, and the vocabulary reductions run in row chunks, so memory does not grow with the corpus.

Batching: windows are sorted by length (longest first) and packed so that
``batch size × longest window ≤ token_budget``; sequences are right-padded (causal attention never
looks at the padding that follows the real tokens) and padded positions are never scored.

Where time goes, and what the engine does about it (profiled on GPT-2 small, see
``benchmarks/throughput.py``): for the decoder families whose head is a plain linear map of the
final hidden state (:data:`FUSED_HEAD_TYPES`) the engine runs the model body only, keeps the final
hidden state of the *scored* positions, and applies the output layer chunk by chunk inside the
reduction.  The ``(B, T, V)`` logits (200 MiB per 1,024-token window at GPT-2's vocabulary) are
never materialised, the head is not applied to padding or to the context-only positions of later
rolling windows, and each chunk is written into buffers made once per batch (no allocator churn).
Other models fall back to ``model(...).logits``.  The reduction is one fused ``log_softmax`` per
chunk (:func:`reduce_rows`), and transformers' eight-kernel tanh-GELU runs as one kernel while
scoring (:func:`fused_activations`).  Windows point into their text's token array (no copies of
the token ids), so memory beyond the per-token outputs does not grow with the corpus.

The parts: :mod:`lmassay.attest.windows` cuts texts into windows and packs the batches,
:mod:`lmassay.attest.reduction` turns each batch's logits into the per-token scalars; this module
runs the models and keeps the results.  ``progress`` is a task of :class:`lmassay.progress.Progress`
(:class:`lmassay.progress.ProgressFn`), like every long stage of lmassay.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmassay.attest.reduction import head_rows, output_width, reduce_rows, row_logits
from lmassay.attest.windows import (
    Window,
    batch_inputs,
    check_token_lists,
    make_windows,
    plan_batches,
    resolve_token_budget,
    rolling_windows,
)
from lmassay.progress import ProgressFn

__all__ = [
    "ProgressFn",
    "TokenScores",
    "bits_per_byte",
    "empty_results",
    "fused_activations",
    "head_rows",
    "make_windows",
    "plan_batches",
    "reduce_rows",
    "rolling_windows",
    "score_token_lists",
    "store_batch",
    "tokenize_texts",
]


@dataclass
class TokenScores:
    """Per-token scalars for one sample (length ``n_tokens`` each)."""

    token_ids: np.ndarray  # (n,) int64 — the scored text tokens
    logprob_model: np.ndarray  # (n,) float32
    top1_model: np.ndarray  # (n,) int64
    logprob_reference: np.ndarray | None = None  # (n,) float32
    top1_reference: np.ndarray | None = None  # (n,) int64
    kl: np.ndarray | None = None  # (n,) float32, KL(reference ‖ model) in nats
    topk_model: tuple[np.ndarray, np.ndarray] | None = None  # ids (n, k), logprobs (n, k)
    topk_reference: tuple[np.ndarray, np.ndarray] | None = None
    n_windows: int = 0

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def top1_agree(self) -> np.ndarray | None:
        if self.top1_reference is None:
            return None
        return np.asarray(self.top1_model == self.top1_reference)


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], progress: ProgressFn | None = None, chunk: int = 512
) -> list[list[int]]:
    """Token ids of each text, without special tokens, in chunks so progress can be shown."""
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        part = list(texts[start : start + chunk])
        encoded = tokenizer(part, add_special_tokens=False)["input_ids"]
        out.extend(list(ids) for ids in encoded)
        if progress is not None:
            progress(len(out), len(texts))
    return out


def score_token_lists(
    token_lists: Sequence[Sequence[int]],
    model: Any,
    reference: Any | None = None,
    *,
    prefix_token_id: int,
    max_length: int,
    token_budget: int | None = None,
    topk: int = 0,
    progress: ProgressFn | None = None,
) -> list[TokenScores]:
    """Score pre-tokenised texts with ``model`` (and ``reference`` in the same batches).

    ``model`` and ``reference`` are ``transformers`` causal LMs (anything callable as
    ``model(input_ids=, attention_mask=).logits``); they must share the tokenizer that made
    ``token_lists``.  Returns one :class:`TokenScores` per text, in order.  See the module
    docstring for exactly which tokens are scored and how.  ``progress`` (a task of
    :class:`lmassay.progress.Progress`) is called after each batch with the scored tokens so far
    and the total.
    """
    import torch

    check_token_lists(token_lists)
    models = [model] if reference is None else [model, reference]
    widths = [output_width(m) for m in models]
    device = next(model.parameters()).device.type
    budget = resolve_token_budget(token_budget, widths, max_length, device)
    windows = make_windows(token_lists, prefix_token_id, max_length)
    results = empty_results(token_lists, reference is not None, topk)
    total = sum(len(t) for t in token_lists)
    done = 0
    with torch.inference_mode(), fused_activations(models):
        for batch in plan_batches(windows, budget):
            inputs = batch_inputs(batch)
            sources = [row_logits(m, inputs) for m in models]
            reduced = reduce_rows(sources, inputs.targets, widths, topk, device)
            del sources
            store_batch(results, batch, reduced)
            done += inputs.n_rows
            if progress is not None:
                progress(done, total)
    return results


@contextmanager
def fused_activations(models: Sequence[Any]) -> Iterator[None]:
    """While scoring, run transformers' tanh-GELU (``gelu_new``: GPT-2, GPT-J, …) as one kernel.

    ``NewGELUActivation`` evaluates ``0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`` with eight
    element-wise kernels; ``torch.nn.functional.gelu(approximate="tanh")`` is the same function in
    one (results differ by float rounding only).  On GPT-2 small on a CPU the eight passes over
    the ``(T, 3072)`` activations are ~10% of the forward pass.  The modules are swapped back
    afterwards, also on error.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped: list[tuple[Any, str, Any]] = []
    try:
        for model in models:
            if not hasattr(model, "named_modules"):
                continue
            for _, parent in model.named_modules():
                for child_name, child in parent.named_children():
                    if type(child) is NewGELUActivation:
                        swapped.append((parent, child_name, child))
                        setattr(parent, child_name, GELUTanh())
        yield
    finally:
        for parent, child_name, child in reversed(swapped):
            setattr(parent, child_name, child)


def empty_results(
    token_lists: Sequence[Sequence[int]], paired: bool, topk: int = 0
) -> list[TokenScores]:
    """Zero-filled :class:`TokenScores` for each text, filled in by :func:`store_batch`."""
    return [_empty_scores(tokens, paired, topk) for tokens in token_lists]


def store_batch(
    results: list[TokenScores], batch: Sequence[Window], reduced: dict[str, np.ndarray]
) -> None:
    """Write a batch's reduced per-token scalars (rows in batch order) into ``results``."""
    start = 0
    for window in batch:
        stop = start + window.n_scored
        _store(
            results[window.sample],
            window,
            {key: value[start:stop] for key, value in reduced.items()},
        )
        start = stop


def _empty_scores(tokens: Sequence[int], paired: bool, topk: int) -> TokenScores:
    n = len(tokens)
    ids = np.asarray(tokens, dtype=np.int64)

    def topk_arrays() -> tuple[np.ndarray, np.ndarray] | None:
        return (np.zeros((n, topk), np.int64), np.zeros((n, topk), np.float32)) if topk else None

    return TokenScores(
        token_ids=ids,
        logprob_model=np.zeros(n, np.float32),
        top1_model=np.zeros(n, np.int64),
        logprob_reference=np.zeros(n, np.float32) if paired else None,
        top1_reference=np.zeros(n, np.int64) if paired else None,
        kl=np.zeros(n, np.float32) if paired else None,
        topk_model=topk_arrays(),
        topk_reference=topk_arrays() if paired else None,
    )


def _store(scores: TokenScores, window: Window, scalars: dict[str, np.ndarray]) -> None:
    span = slice(window.offset, window.offset + window.n_scored)
    scores.logprob_model[span] = scalars["logprob_model"]
    scores.top1_model[span] = scalars["top1_model"]
    if (
        scores.kl is not None
        and scores.logprob_reference is not None
        and scores.top1_reference is not None
    ):
        scores.logprob_reference[span] = scalars["logprob_reference"]
        scores.top1_reference[span] = scalars["top1_reference"]
        scores.kl[span] = scalars["kl"]
    for key in ("topk_model", "topk_reference"):
        pair = getattr(scores, key)
        if pair is not None:
            pair[0][span] = scalars[f"{key}_ids"]
            pair[1][span] = scalars[f"{key}_logprobs"]
    scores.n_windows += 1


def bits_per_byte(logprob: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte of a summed natural-log probability."""
    return -logprob / (math.log(2) * n_bytes)
