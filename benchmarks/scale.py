"""Sharded scoring on Ray: 1 worker against 2 (and more) on this machine, and a projection.

Models and documents are those of ``benchmarks/throughput.py`` (built from configs with fixed
seeds, no download): the GPT-2-shaped ``gpt2-small-4x256`` model and its reference (50,257-token
vocabulary, 1,024-token context) and word-level documents of mixed length.  The work measured is
``lmassay attest``'s heavy step: model + reference in lock-step (log-probs under both, full-vocabulary
KL, top-1 agreement), through :class:`lmassay.scale.ray_scoring.RayPool` on a private local Ray
cluster (loopback, ``num_cpus`` = ``--cpus``), each worker an actor with one CPU thread.

For each worker count the workers are started and load the models (timed apart: "load"), then
the documents are scored ``--repeats`` times (median "score" wall time, which includes the driver's
shard planning and gathering).  The one-process engine (:func:`lmassay.attest.streaming.score_models`
with one thread in this process) is the baseline, and the sharded per-token results must equal
it exactly.  The load average is printed before and after: the figures mean little on a busy
machine.

The projection multiplies the measured one-worker throughput by the worker count and by the
measured two-worker efficiency; it is a projection, not a measurement.  For GPUs, put the
throughput of one GPU worker (``benchmarks/throughput.py --device cuda``) in the same formula.

    python benchmarks/scale.py                  # 1 and 2 workers, ~6k tokens
    python benchmarks/scale.py --tokens 20000 --workers 1,2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=6000, help="document tokens scored")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="the cluster's CPUs")
    parser.add_argument("--repeats", type=int, default=1, help="scoring runs per worker count")
    parser.add_argument("--project", type=int, default=8, help="workers in the projection")
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "lmassay-bench-models")
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    import ray
    import torch

    from lmassay.attest.model_loading import ModelOptions, load_model
    from lmassay.attest.scoring import tokenize_texts
    from lmassay.attest.streaming import score_models
    from lmassay.scale.ray_scoring import LOCAL, ModelSpec, WorkerSpec, ray_pool
    from throughput import build_models, document_texts

    torch.set_num_threads(1)  # the baseline: one process, one thread, as one worker
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    folders = build_models(Path(args.cache))
    model_dir = str(folders["gpt2-small-4x256-model"])
    reference_dir = str(folders["gpt2-small-4x256-reference"])
    model = load_model(model_dir, device="cpu")
    reference = load_model(reference_dir, device="cpu")
    token_lists = tokenize_texts(model.tokenizer, document_texts(args.tokens, seed=0))
    n_tokens = sum(len(t) for t in token_lists)
    settings = {"prefix_token_id": model.prefix_token_id, "max_length": model.max_length}

    t0 = time.perf_counter()
    expected = score_models(token_lists, model, reference, **settings)
    single_s = time.perf_counter() - t0
    print(f"{len(token_lists)} documents, {n_tokens} tokens, paired (model + reference)")

    options = ModelOptions(device="cpu")
    spec = WorkerSpec(
        (("model", ModelSpec(model_dir, options)), ("reference", ModelSpec(reference_dir, options)))
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    cluster_s = time.perf_counter() - t0
    rows = []
    try:
        for n in counts:
            t0 = time.perf_counter()
            with ray_pool(LOCAL, spec, n) as pool:
                load_s = time.perf_counter() - t0
                times = []
                for _ in range(args.repeats):
                    t1 = time.perf_counter()
                    got = pool.score(token_lists, ("model", "reference"), **settings)
                    times.append(time.perf_counter() - t1)
                for a, b in zip(got, expected, strict=True):  # the one-process result, exactly
                    np.testing.assert_array_equal(a.logprob_model, b.logprob_model)
                    np.testing.assert_array_equal(a.kl, b.kl)
            rows.append((n, load_s, statistics.median(times)))
    finally:
        ray.shutdown()

    print(f"load average after: {load_average()}")
    print(f"ray cluster start: {cluster_s:.1f} s")
    print()
    print("| run | workers | load s | score s | tokens/s | speed-up | efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| one process, 1 thread | - | - | {single_s:.2f} | {n_tokens / single_s:.0f} | - | - |")
    base = rows[0][2] * rows[0][0]  # one worker's time for the whole corpus
    for n, load_s, score_s in rows:
        speedup = base / score_s
        print(
            f"| ray | {n} | {load_s:.1f} | {score_s:.2f} | {n_tokens / score_s:.0f} "
            f"| {speedup:.2f}x | {speedup / n:.0%} |"
        )
    per_worker = n_tokens / base
    two = [speedup for n, _, score_s in rows if n == 2 for speedup in [base / score_s / 2]]
    efficiency = two[0] if two else 1.0
    print()
    print(
        f"projection (not measured): {args.project} workers x {per_worker:.0f} tokens/s per "
        f"worker x {efficiency:.0%} (the measured 2-worker efficiency) = "
        f"{args.project * per_worker * efficiency:.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
