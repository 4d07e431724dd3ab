"""Score texts token by token with a model, or with a model and a reference in lock-step.

Scoring contract
================
Each text is tokenised once, without special tokens, into ``t_1 … t_n``.  The model sees the
sequence ``s = [p, t_1, …, t_n]`` where ``p`` is the prefix token (the tokenizer's BOS token, else
its EOS token, as lm-evaluation-harness does).  **Every text token is scored exactly once**, as
``log P(t_i | preceding tokens)``, and a sample's log-likelihood is the sum over its ``n`` tokens.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lmassay.errors import InputError

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` with counts of scored tokens."""

# Logit elements of one batch (per model). On a GPU a big batch keeps the device busy (1 GiB of
# float32 logits); on a CPU big batches are slower, not faster — measured on GPT-2 small, 2 cores:
# 8.4 s for 4.1k tokens with a 1,024-token budget against 13.2 s with 5,341 — because the logits
# and activations then fall out of cache, so the CPU budget is a quarter of that.
_LOGIT_BUDGET_ELEMENTS = {"cuda": 1 << 28, "mps": 1 << 28, "cpu": 1 << 26}
_CHUNK_ELEMENTS = 1 << 24  # rows × vocabulary per reduction chunk: 64 MiB per float32 temporary
_MAX_TOKEN_BUDGET = 16384


@dataclass(frozen=True)
class Window:
    """One model input: ``input_ids`` whose last ``n_scored`` next-token predictions are scored.

    The targets are the tokens ``targets``; they are the text tokens ``offset … offset+n_scored-1``
    (0-based) of sample ``sample``.
    """

    sample: int
    offset: int
    input_ids: tuple[int, ...]
    targets: tuple[int, ...]

    @property
    def n_scored(self) -> int:
        return len(self.targets)


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


def rolling_windows(
    tokens: Sequence[int], prefix_token_id: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Split one text into ``(input_ids, targets)`` windows by the rule in the module docstring."""
    if max_length < 1:
        raise InputError(
            f"max_length must be at least 1, got {max_length}", "pass --max-length 1 or more"
        )
    seq = [prefix_token_id, *tokens]
    n = len(tokens)
    windows: list[tuple[list[int], list[int]]] = []
    a = 1  # first target index in seq
    while a <= n:
        b = min(n + 1, a + max_length)  # targets are seq[a:b]
        start = max(0, b - 1 - max_length)
        windows.append((seq[start : b - 1], seq[a:b]))
        a = b
    return windows


def make_windows(
    token_lists: Sequence[Sequence[int]], prefix_token_id: int, max_length: int
) -> list[Window]:
    """All windows of all texts, in text order."""
    out: list[Window] = []
    for index, tokens in enumerate(token_lists):
        offset = 0
        for input_ids, targets in rolling_windows(tokens, prefix_token_id, max_length):
            out.append(Window(index, offset, tuple(input_ids), tuple(targets)))
            offset += len(targets)
    return out


def plan_batches(windows: Sequence[Window], token_budget: int) -> list[list[Window]]:
    """Pack windows, longest first, into batches with ``len(batch) × longest ≤ token_budget``."""
    ordered = sorted(windows, key=lambda w: (-len(w.input_ids), w.sample, w.offset))
    batches: list[list[Window]] = []
    current: list[Window] = []
    longest = 0
    for window in ordered:
        length = len(window.input_ids)
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


def _output_width(model: Any) -> int:
    out = model.get_output_embeddings()
    return int(out.weight.shape[0]) if out is not None else int(model.config.vocab_size)


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
    docstring for exactly which tokens are scored and how.
    """
    import torch

    if any(len(t) == 0 for t in token_lists):
        empty = next(i for i, t in enumerate(token_lists) if len(t) == 0)
        raise InputError(
            f"text number {empty + 1} has no tokens", "remove empty texts from the probe corpus"
        )
    models = [model] if reference is None else [model, reference]
    widths = [_output_width(m) for m in models]
    device = next(model.parameters()).device.type
    budget = token_budget or default_token_budget(max(widths), max_length, len(models), device)
    if budget < 1:
        raise InputError(
            f"token budget must be positive, got {budget}", "pass --token-budget 1 or more"
        )
    windows = make_windows(token_lists, prefix_token_id, max_length)
    results = [_empty_scores(tokens, reference is not None, topk) for tokens in token_lists]
    total = sum(len(t) for t in token_lists)
    done = 0
    with torch.inference_mode():
        for batch in plan_batches(windows, budget):
            reduced = _score_batch(batch, models, widths, topk)
            for window, scalars in zip(batch, reduced, strict=True):
                _store(results[window.sample], window, scalars)
            done += sum(w.n_scored for w in batch)
            if progress is not None:
                progress(done, total)
    return results


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


def _score_batch(
    batch: list[Window], models: list[Any], widths: list[int], topk: int
) -> list[dict[str, np.ndarray]]:
    import torch

    longest = max(len(w.input_ids) for w in batch)
    input_ids = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T), right-padded
    attention = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T)
    rows: list[int] = []  # flat (b * T + position) of every scored position, batch order
    for b, window in enumerate(batch):
        length = len(window.input_ids)
        input_ids[b, :length] = torch.tensor(window.input_ids)
        attention[b, :length] = 1
        rows.extend(b * longest + p for p in range(length - window.n_scored, length))
    targets = torch.tensor([t for w in batch for t in w.targets], dtype=torch.long)  # (N,)
    row_index = torch.tensor(rows, dtype=torch.long)  # (N,)

    flat_logits = []
    for m in models:
        device = next(m.parameters()).device
        logits = m(
            input_ids=input_ids.to(device), attention_mask=attention.to(device)
        ).logits  # (B, T, V)
        flat_logits.append(logits.reshape(-1, logits.shape[-1]))  # (B*T, V)
    reduced = _reduce_rows(flat_logits, row_index, targets, widths, topk)
    del flat_logits

    out: list[dict[str, np.ndarray]] = []
    start = 0
    for window in batch:
        stop = start + window.n_scored
        out.append({key: value[start:stop] for key, value in reduced.items()})
        start = stop
    return out


def _reduce_rows(
    flat_logits: list[torch.Tensor],
    row_index: torch.Tensor,
    targets: torch.Tensor,
    widths: list[int],
    topk: int,
) -> dict[str, np.ndarray]:
    """Per-token scalars from the scored rows of each model's logits, in row chunks (float32).

    With ``z`` the logits, ``m = max z`` (whose index is the top-1 token), ``e = exp(z − m)``,
    ``s = Σ e`` and ``lse = m + log s``: ``log p(t) = z[t] − lse`` and
    ``KL(r ‖ m) = Σ_v e_r(v) (z_r(v) − z_m(v)) / s_r − (lse_r − lse_m)``.  No log-softmax is
    materialised and each row is exponentiated once per model; identical logits give exactly 0.
    """
    import torch

    n_rows = int(row_index.shape[0])
    chunk = max(1, _CHUNK_ELEMENTS // max(widths))
    names = ["model", "reference"][: len(flat_logits)]
    parts: dict[str, list[np.ndarray]] = {}

    def keep(key: str, value: torch.Tensor) -> None:
        parts.setdefault(key, []).append(value.cpu().numpy())

    for start in range(0, n_rows, chunk):
        idx = row_index[start : start + chunk]
        tgt = targets[start : start + chunk]
        rows = []
        for name, flat in zip(names, flat_logits, strict=True):
            z = flat[idx.to(flat.device)].float()  # (C, V) float32
            top, top1 = z.max(dim=-1)  # (C,), (C,)
            e = torch.exp(z - top[:, None])  # (C, V)
            total = e.sum(dim=-1)  # (C,)
            lse = top + torch.log(total)  # (C,)
            keep(f"logprob_{name}", z.gather(-1, tgt.to(z.device)[:, None]).squeeze(-1) - lse)
            keep(f"top1_{name}", top1)
            if topk:
                values, ids = z.topk(topk, dim=-1)  # (C, k)
                keep(f"topk_{name}_ids", ids)
                keep(f"topk_{name}_logprobs", values - lse[:, None])
            rows.append(_Rows(z, e, total, lse))
        if len(rows) == 2:
            keep("kl", _kl_rows(rows[0], rows[1], widths))
        del rows
    return {key: np.concatenate(values) for key, values in parts.items()}


@dataclass
class _Rows:
    """One chunk of one model's float32 logits ``z`` (C, V), ``e = exp(z − max)``, ``Σ e``, logsumexp."""

    z: torch.Tensor
    e: torch.Tensor
    total: torch.Tensor
    lse: torch.Tensor


def _kl_rows(model: _Rows, reference: _Rows, widths: list[int]) -> torch.Tensor:
    """KL(reference ‖ model) per row of a chunk, in nats."""
    import torch

    device = model.z.device
    z_m, z_r = model.z, reference.z.to(device)
    e_r, total_r = reference.e.to(device), reference.total.to(device)
    lse_m, lse_r = model.lse, reference.lse.to(device)
    if widths[0] != widths[1]:  # compare over the shared columns, each renormalised
        common = min(widths)
        z_m, z_r, e_r = z_m[:, :common], z_r[:, :common], e_r[:, :common]
        lse_m, lse_r = torch.logsumexp(z_m, dim=-1), torch.logsumexp(z_r, dim=-1)
        total_r = e_r.sum(dim=-1)
    kl = torch.linalg.vecdot(e_r, z_r - z_m) / total_r - (lse_r - lse_m)  # (C,)
    if not bool(torch.isfinite(kl).all()):  # -inf logits (masked tokens): drop 0 · inf terms
        terms = torch.where(e_r > 0, e_r * (z_r - z_m), torch.zeros_like(e_r))
        kl = terms.sum(dim=-1) / total_r - (lse_r - lse_m)
    return kl.clamp_min(0.0)


def bits_per_byte(logprob: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte of a summed natural-log probability."""
    return -logprob / (math.log(2) * n_bytes)
