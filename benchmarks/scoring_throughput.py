"""Scoring throughput on a GPT-2-small-shaped model built from a config (no download).

Scores a fixed set of synthetic documents of mixed length (token ids drawn with a fixed seed) with
the lmassay engine, once with the model alone and once paired with a reference (log-probs under
both, full-vocabulary KL, top-1 agreement), and prints a table of tokens per second.

    python benchmarks/scoring_throughput.py            # GPT-2 small, 124M parameters
    python benchmarks/scoring_throughput.py --tokens 8000 --layers 2   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmassay.scoring import score_token_lists


def build(seed: int, layers: int, dtype: torch.dtype) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=layers)).eval()  # GPT-2 small shape by default
    return model.to(dtype)


def documents(total_tokens: int, seed: int, vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    docs, count = [], 0
    while count < total_tokens:
        n = int(rng.integers(100, 1500))
        docs.append(rng.integers(0, vocab - 1, size=n).tolist())
        count += n
    return docs


def naive_single(docs: list[list[int]], model: GPT2LMHeadModel) -> list[float]:
    """The straightforward way: one unbatched forward per window, full log_softmax, gather."""
    from lmassay.scoring import rolling_windows

    totals = []
    with torch.inference_mode():
        for doc in docs:
            total = 0.0
            for inputs, targets in rolling_windows(
                doc, model.config.eos_token_id, model.config.n_positions
            ):
                logits = model(torch.tensor([inputs])).logits[0, -len(targets) :]
                logp = torch.log_softmax(logits.float(), dim=-1)
                total += float(logp[torch.arange(len(targets)), torch.tensor(targets)].sum())
            totals.append(total)
    return totals


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=8_000, help="probe tokens to score")
    parser.add_argument(
        "--layers", type=int, default=12, help="transformer blocks (12 = GPT-2 small)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    model, reference = build(0, args.layers, dtype), build(1, args.layers, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    docs = documents(args.tokens, seed=0, vocab=model.config.vocab_size)
    n_tokens = sum(len(d) for d in docs)
    common = {"prefix_token_id": model.config.eos_token_id, "max_length": model.config.n_positions}

    score_token_lists(docs[:1], model, reference, **common)  # warm-up
    naive_s, naive = timed(lambda: naive_single(docs, model))
    single_s, single = timed(lambda: score_token_lists(docs, model, **common))
    ours = [float(np.sum(s.logprob_model, dtype=np.float64)) for s in single]
    max_rel = max(abs(a - b) / abs(b) for a, b in zip(ours, naive, strict=True))
    paired_s, scores = timed(lambda: score_token_lists(docs, model, reference, **common))
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(
        f"# lmassay scoring throughput — {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"model: GPT-2 shape, {args.layers} layers, {n_params / 1e6:.1f}M parameters, {args.dtype}; "
        f"{len(docs)} documents, {n_tokens} tokens (100–1500 per document)\n"
    )
    print("| run | seconds | tokens/s | × single-model time |")
    print("|---|---:|---:|---:|")
    print(
        f"| naive: unbatched forward + log_softmax per window | {naive_s:.2f} | {n_tokens / naive_s:,.0f} | "
        f"{naive_s / single_s:.2f} |"
    )
    print(f"| single model (log-probs) | {single_s:.2f} | {n_tokens / single_s:,.0f} | 1.00 |")
    print(
        f"| paired attestation (2 models + KL + top-1) | {paired_s:.2f} | {n_tokens / paired_s:,.0f} | "
        f"{paired_s / single_s:.2f} |"
    )
    mean_kl = float(np.mean(np.concatenate([s.kl for s in scores])))
    print(f"\nper-document log-likelihood, lmassay vs naive: max relative difference {max_rel:.1e}")
    print(
        f"peak RSS {peak_rss_mib:,.0f} MiB; mean KL between the two random models {mean_kl:.3f} nats/token"
    )


if __name__ == "__main__":
    main()
