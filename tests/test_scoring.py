"""The scoring engine against an independent, unbatched computation (plain forward + log_softmax)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lmassay.attest.scoring import score_token_lists, tokenize_texts
from lmassay.attest.windows import make_windows, plan_batches, rolling_windows
from lmassay.errors import InputError
from lmassay.progress import ProgressFn

VOCAB = 97
PREFIX = 0


def lm_eval_rolling_windows(token_list, prefix_token, max_seq_len, context_len=1):
    """lm-evaluation-harness ``get_rolling_token_windows`` + ``make_disjoint_window`` (MIT), verbatim logic."""
    if not token_list:
        return []
    out = []
    pred_len = max_seq_len - context_len + 1
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))
    out.append(([prefix_token, *token_list[: first_seq_len - 1]], token_list[:first_seq_len]))
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        out.append(
            (
                token_list[window_end - max_seq_len - 1 : window_end - 1],
                token_list[window_end - window_pred_len : window_end],
            )
        )
        predicted += window_pred_len
    # make_disjoint_window, then the model input is (context + continuation)[:-1]
    return [((a + b)[:-1], b) for a, b in ((a[: len(a) - (len(b) - 1)], b) for a, b in out)]


@pytest.mark.parametrize("n", [1, 2, 5, 7, 8, 9, 15, 16, 17, 40])
@pytest.mark.parametrize("max_len", [1, 2, 8])
def test_windows_follow_lm_eval_rule(n, max_len):
    tokens = list(range(10, 10 + n))
    ours = rolling_windows(tokens, PREFIX, max_len)
    theirs = lm_eval_rolling_windows(tokens, PREFIX, max_len)
    assert [(list(a), list(b)) for a, b in ours] == theirs
    # every token scored exactly once, in order
    assert [t for _, b in ours for t in b] == tokens
    assert all(len(a) <= max_len for a, _ in ours)


def test_batches_respect_budget_and_cover_all_windows():
    lists = [list(range(1, 1 + n)) for n in (3, 50, 17, 1, 64, 9)]
    windows = make_windows(lists, PREFIX, 16)
    batches = plan_batches(windows, 40)
    assert sorted((w.sample, w.offset) for b in batches for w in b) == sorted(
        (w.sample, w.offset) for w in windows
    )
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(len(w.input_ids) for w in batch) <= 40


def gpt2(seed: int, n_positions: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(cfg).eval()


def llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


def reference_scores(tokens, model, ref, max_len):
    """Independent computation: each token's own window, one unbatched forward per window."""
    seq = [PREFIX, *tokens]
    n = len(tokens)
    lp_m, lp_r, kl = [], [], []
    for i in range(1, n + 1):
        w = (i - 1) // max_len
        b = min(n + 1, (w + 1) * max_len + 1)
        start = max(0, b - 1 - max_len)
        inp = torch.tensor([seq[start : b - 1]])
        pos = i - 1 - start
        with torch.no_grad():
            a = torch.log_softmax(model(inp).logits[0, pos].double(), -1)
            r = torch.log_softmax(ref(inp).logits[0, pos].double(), -1)
        lp_m.append(a[seq[i]].item())
        lp_r.append(r[seq[i]].item())
        kl.append(torch.sum(r.exp() * (r - a)).item())
    return np.array(lp_m), np.array(lp_r), np.array(kl)


def random_texts(seed, lengths):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=n).tolist() for n in lengths]


@pytest.mark.parametrize("make", [gpt2, llama])
@pytest.mark.parametrize("budget", [16, 50, 4096])
def test_pair_matches_unbatched_forward(make, budget):
    model, ref = make(1), make(2)
    max_len = 16
    texts = random_texts(0, [1, 3, 15, 16, 17, 40, 5, 33])
    scores = score_token_lists(
        texts, model, ref, prefix_token_id=PREFIX, max_length=max_len, token_budget=budget
    )
    for tokens, s in zip(texts, scores, strict=True):
        lp_m, lp_r, kl = reference_scores(tokens, model, ref, max_len)
        assert s.n_tokens == len(tokens)
        np.testing.assert_allclose(s.logprob_model, lp_m, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(s.logprob_reference, lp_r, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(s.kl, kl, rtol=1e-3, atol=1e-5)
        assert s.n_windows == -(-len(tokens) // max_len)


def test_single_model_matches_unbatched_forward_with_full_context():
    model = gpt2(3, n_positions=64)
    texts = random_texts(1, [2, 9, 30, 64, 11])
    scores = score_token_lists(
        texts, model, prefix_token_id=PREFIX, max_length=64, token_budget=100
    )
    for tokens, s in zip(texts, scores, strict=True):
        inp = torch.tensor([[PREFIX, *tokens[:-1]]])
        with torch.no_grad():
            lp = torch.log_softmax(model(inp).logits[0].float(), -1)
        expected = lp[torch.arange(len(tokens)), torch.tensor(tokens)].numpy()
        np.testing.assert_allclose(s.logprob_model, expected, rtol=1e-5, atol=1e-5)
        assert s.kl is None and s.logprob_reference is None
        np.testing.assert_array_equal(s.top1_model, lp.argmax(-1).numpy())


def test_model_against_itself_gives_exactly_zero_kl():
    model = gpt2(4)
    twin = gpt2(4)
    texts = random_texts(2, [5, 31, 17, 2])
    scores = score_token_lists(
        texts, model, twin, prefix_token_id=PREFIX, max_length=16, token_budget=40
    )
    for s in scores:
        assert np.all(s.kl == 0.0)
        assert np.all(s.top1_agree)
        np.testing.assert_array_equal(s.logprob_model, s.logprob_reference)


def test_bfloat16_close_to_float32_reference_and_float32_outputs():
    model32, ref32 = gpt2(5), gpt2(6)
    model16 = gpt2(5).to(torch.bfloat16)
    ref16 = gpt2(6).to(torch.bfloat16)
    texts = random_texts(3, [7, 20, 33])
    s16 = score_token_lists(
        texts, model16, ref16, prefix_token_id=PREFIX, max_length=16, token_budget=64
    )
    for tokens, s in zip(texts, s16, strict=True):
        lp_m, _lp_r, kl = reference_scores(tokens, model32, ref32, 16)
        assert s.logprob_model.dtype == np.float32 and s.kl.dtype == np.float32
        np.testing.assert_allclose(s.logprob_model, lp_m, atol=0.05, rtol=0.02)
        np.testing.assert_allclose(s.kl, kl, atol=0.02, rtol=0.1)
    # bfloat16 against its own unbatched bfloat16 forward (padding must not matter beyond rounding)
    for tokens, s in zip(texts, s16, strict=True):
        inp = torch.tensor([[PREFIX, *tokens[: min(len(tokens), 16) - 1]]])
        with torch.no_grad():
            lp = torch.log_softmax(model16(inp).logits[0].float(), -1)
        k = min(len(tokens), 16)
        expected = lp[torch.arange(k), torch.tensor(tokens[:k])].numpy()
        np.testing.assert_allclose(s.logprob_model[:k], expected, atol=0.05)


def test_padded_output_width_compares_over_shared_columns():
    model = gpt2(9)
    torch.manual_seed(10)
    wide = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB + 7, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    ).eval()
    texts = random_texts(5, [4, 9])
    scores = score_token_lists(texts, model, wide, prefix_token_id=PREFIX, max_length=16)
    for tokens, s in zip(texts, scores, strict=True):
        inp = torch.tensor([[PREFIX, *tokens[:-1]]])
        with torch.no_grad():
            full_r = torch.log_softmax(wide(inp).logits[0].double(), -1)
            a = torch.log_softmax(model(inp).logits[0].double(), -1)
            r = torch.log_softmax(wide(inp).logits[0, :, :VOCAB].double(), -1)
        np.testing.assert_allclose(s.kl, (r.exp() * (r - a)).sum(-1).numpy(), rtol=1e-4, atol=1e-6)
        expected_r = full_r[torch.arange(len(tokens)), torch.tensor(tokens)].numpy()
        np.testing.assert_allclose(s.logprob_reference, expected_r, rtol=1e-5, atol=1e-5)


def test_topk_capture_matches_full_distribution():
    model, ref = gpt2(7), gpt2(8)
    texts = random_texts(4, [6, 12])
    scores = score_token_lists(texts, model, ref, prefix_token_id=PREFIX, max_length=16, topk=3)
    for tokens, s in zip(texts, scores, strict=True):
        inp = torch.tensor([[PREFIX, *tokens[:-1]]])
        with torch.no_grad():
            lp = torch.log_softmax(model(inp).logits[0].float(), -1)
        values, ids = lp.topk(3, -1)
        np.testing.assert_array_equal(s.topk_model[0], ids.numpy())
        np.testing.assert_allclose(s.topk_model[1], values.numpy(), atol=1e-5)
        np.testing.assert_array_equal(s.topk_model[0][:, 0], s.top1_model)


class RecordingProgress:
    """A :class:`lmassay.progress.Progress` that keeps every task's updates."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[int, list[tuple[int, int]]]] = {}

    def task(self, description: str, total: int) -> ProgressFn:
        updates: list[tuple[int, int]] = []
        self.tasks[description] = (total, updates)

        def update(done: int, new_total: int, note: str | None = None, /) -> None:
            updates.append((done, new_total))

        return update

    def log(self, message: str) -> None:
        return None


def test_progress_counts_scored_tokens_once_per_batch():
    texts = random_texts(7, [3, 20, 9, 1, 33])
    total = sum(map(len, texts))
    progress = RecordingProgress()
    score_token_lists(
        texts,
        gpt2(12),
        prefix_token_id=PREFIX,
        max_length=16,
        token_budget=32,
        progress=progress.task("scoring", total),
    )
    _, updates = progress.tasks["scoring"]
    n_batches = len(plan_batches(make_windows(texts, PREFIX, 16), 32))
    assert len(updates) == n_batches > 1
    assert [t for _, t in updates] == [total] * n_batches
    done = [d for d, _ in updates]
    assert done == sorted(done) and done[-1] == total and done[0] > 0


def test_tokenize_texts_reports_progress_per_chunk():
    def tokenizer(texts: list[str], add_special_tokens: bool) -> dict[str, list[list[int]]]:
        assert not add_special_tokens
        return {"input_ids": [[len(t)] * len(t) for t in texts]}

    progress = RecordingProgress()
    texts = [f"{'x' * (i % 4 + 1)}" for i in range(7)]
    ids = tokenize_texts(tokenizer, texts, progress.task("tokenising", len(texts)), chunk=3)
    assert ids == [[len(t)] * len(t) for t in texts]
    assert progress.tasks["tokenising"][1] == [(3, 7), (6, 7), (7, 7)]


def test_empty_token_list_is_a_clear_error():
    with pytest.raises(InputError, match="text number 2 has no tokens"):
        score_token_lists([[1, 2], []], gpt2(0), prefix_token_id=PREFIX, max_length=16)


def test_fused_gelu_is_swapped_back_and_matches():
    from transformers.activations import NewGELUActivation

    from lmassay.attest.scoring import fused_activations

    model = gpt2(11)
    inp = torch.tensor([random_texts(6, [20])[0]])
    with torch.no_grad():
        plain = model(inp).logits
        with fused_activations([model]):
            assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
            fused = model(inp).logits
    assert all(type(b.mlp.act) is NewGELUActivation for b in model.transformer.h)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
