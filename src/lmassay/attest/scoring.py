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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
# Rows × vocabulary per reduction chunk (float32 logits and log-softmax buffers of this size are
# made once per batch and reused for every chunk). On a CPU 32 MiB: about 166 rows at GPT-2's
# vocabulary — the head's weight is read once per chunk, so fewer rows (41 at 8 MiB) were 1.5x
# slower, and more fall out of the last-level cache; on a GPU 64 MiB keeps the kernels busy.
_CHUNK_ELEMENTS = {"cuda": 1 << 24, "mps": 1 << 24, "cpu": 1 << 23}
_MAX_TOKEN_BUDGET = 16384

FUSED_HEAD_TYPES = frozenset(
    {"gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3"}
)
"""``config.model_type`` values whose logits are exactly ``get_output_embeddings()(last hidden
state of base_model)`` (no soft-capping or logit scaling), so the head can be applied to the scored
rows only."""

RowLogits = Callable[[int, int], "torch.Tensor"]
"""``rows(start, stop)`` → float32 logits ``(stop - start, V)`` of the scored rows ``start:stop``."""


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
    """All windows of all texts, in text order (the rule of :func:`rolling_windows`)."""
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


def fused_head(model: Any) -> bool:
    """Whether ``model``'s logits are its output layer applied to ``base_model``'s last hidden state."""
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) in FUSED_HEAD_TYPES
        and getattr(model, "base_model", model) is not model
        and model.get_output_embeddings() is not None
    )


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

    check_token_lists(token_lists)
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
    with torch.inference_mode(), fused_activations(models):
        for batch in plan_batches(windows, budget):
            inputs = batch_inputs(batch)
            sources = [_row_logits(m, inputs) for m in models]
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


def check_token_lists(token_lists: Sequence[Sequence[int]]) -> None:
    """Refuse an empty text: it has no token to score."""
    for index, tokens in enumerate(token_lists):
        if len(tokens) == 0:
            raise InputError(
                f"text number {index + 1} has no tokens", "remove empty texts from the probe corpus"
            )


def empty_results(
    token_lists: Sequence[Sequence[int]], paired: bool, topk: int = 0
) -> list[TokenScores]:
    """Zero-filled :class:`TokenScores` for each text, filled in by :func:`store_batch`."""
    return [_empty_scores(tokens, paired, topk) for tokens in token_lists]


@dataclass
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


def _row_logits(model: Any, inputs: BatchInputs) -> RowLogits:
    """Run ``model`` on the batch; return a function giving float32 logits of scored rows."""
    device = next(model.parameters()).device
    ids = inputs.input_ids.to(device)
    mask = inputs.attention_mask.to(device)
    rows = inputs.row_index.to(device)
    if fused_head(model):
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        return head_rows(hidden.reshape(-1, hidden.shape[-1])[rows], model.get_output_embeddings())
    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    return lambda start, stop: flat[rows[start:stop]].float()  # (C, V)


def head_rows(hidden: torch.Tensor, head: Any) -> RowLogits:
    """Row logits from final hidden states ``(N, H)`` of the scored rows and the output layer.

    A float32 linear head writes each chunk into one buffer, made at the first (largest) chunk
    and reused for the rest of the batch; the tensor returned is valid until the next call.
    """
    import torch

    if not (
        isinstance(head, torch.nn.Linear)
        and head.weight.dtype == torch.float32
        and hidden.dtype == torch.float32
    ):
        return lambda start, stop: head(hidden[start:stop]).float()  # (C, V)
    weight, bias = head.weight, head.bias  # (V, H), (V,) or None
    buffers: list[torch.Tensor] = []

    def logits(start: int, stop: int) -> torch.Tensor:
        if not buffers or buffers[0].shape[0] < stop - start:
            buffers[:] = [hidden.new_empty((stop - start, weight.shape[0]))]
        out = buffers[0][: stop - start]  # (C, V)
        if bias is None:
            return torch.matmul(hidden[start:stop], weight.t(), out=out)
        return torch.addmm(bias, hidden[start:stop], weight.t(), out=out)

    return logits


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


def reduce_rows(
    sources: Sequence[RowLogits],
    targets: torch.Tensor,
    widths: Sequence[int],
    topk: int = 0,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Per-token scalars of the scored rows of one (model) or two (model, reference) sources.

    The one reduction of lmassay: the in-memory engine and layer streaming both call it.  Rows
    are taken in chunks of about ``_CHUNK_ELEMENTS`` logits, in float32, and each chunk is reduced
    before the next is made.  Per model, ``lp = log_softmax(z)`` (one fused kernel, into a buffer
    reused for every chunk) gives ``log p(t) = lp[t]``; the top-1 token is ``argmax z``; and
    ``KL(r ‖ m) = Σ_v exp(lp_r(v)) (lp_r(v) − lp_m(v))``.  When the two output widths differ the KL
    is over the first ``min`` columns, each renormalised.  Identical logits give exactly 0.
    Keys: ``logprob_model``, ``top1_model`` (and ``_reference``), ``kl``, ``topk_*``.
    """
    import torch

    n_rows = int(targets.shape[0])
    elements = _CHUNK_ELEMENTS.get(device, _CHUNK_ELEMENTS["cpu"])
    chunk = max(1, min(n_rows, elements // max(widths)))
    names = ["model", "reference"][: len(sources)]
    common = min(widths)
    buffers: list[torch.Tensor | None] = [None] * len(sources)
    parts: dict[str, list[np.ndarray]] = {}

    def keep(key: str, value: torch.Tensor) -> None:
        parts.setdefault(key, []).append(value.cpu().numpy())

    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        tgt = targets[start:stop]
        for_kl = []
        for i, (name, source) in enumerate(zip(names, sources, strict=True)):
            z = source(start, stop)  # (C, V) float32
            buffer = buffers[i]
            if buffer is None or buffer.shape[1] != z.shape[1] or buffer.device != z.device:
                buffer = buffers[i] = torch.empty((chunk, z.shape[1]), device=z.device)
            keep(f"top1_{name}", z.argmax(dim=-1))  # (C,)
            if len(sources) == 2 and widths[0] != widths[1]:
                for_kl.append(torch.log_softmax(z[:, :common], dim=-1))  # (C, common)
            lp = torch.log_softmax(z, dim=-1, out=buffer[: stop - start])  # (C, V)
            keep(f"logprob_{name}", lp.gather(-1, tgt.to(lp.device)[:, None]).squeeze(-1))
            if topk:
                values, ids = lp.topk(topk, dim=-1)  # (C, k)
                keep(f"topk_{name}_ids", ids)
                keep(f"topk_{name}_logprobs", values)
            if len(sources) == 2 and widths[0] == widths[1]:
                for_kl.append(lp)
        if len(for_kl) == 2:
            keep("kl", _kl_rows(for_kl[0], for_kl[1]))
        del for_kl
    return {key: np.concatenate(values) for key, values in parts.items()}


def _kl_rows(lp_model: torch.Tensor, lp_reference: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ model) per row, in nats, from the two log-softmaxes ``(C, V)``."""
    import torch

    lp_m = lp_model.to(lp_reference.device)
    p_r = lp_reference.exp()  # (C, V)
    diff = torch.sub(lp_reference, lp_m)  # (C, V)
    kl = torch.linalg.vecdot(p_r, diff)  # (C,)
    if not bool(torch.isfinite(kl).all()):  # -inf logits (masked tokens): drop 0 · inf terms
        kl = torch.where(p_r > 0, p_r * diff, torch.zeros_like(p_r)).sum(dim=-1)
    return kl.clamp_min(0.0)


def bits_per_byte(logprob: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte of a summed natural-log probability."""
    return -logprob / (math.log(2) * n_bytes)
