"""Scoring throughput and memory: lmassay against lm-evaluation-harness, on the same documents.

Builds, from configs with fixed seeds (no download), a GPT-2-small-shaped model (124M parameters)
and a smaller GPT-2 (4 blocks, width 256), both with GPT-2's 50,257-token vocabulary and 1,024-token
context, plus a word-level tokenizer of 50,257 entries (a fast ``tokenizers`` tokenizer; one token
per word, so document lengths are exact) and a fixed set of documents of mixed length (100 to 4,000
tokens, log-uniform). In the same run it scores them with

* lm-eval: ``lm_eval.models.huggingface.HFLM`` (``hf`` backend, ``backend="causal"``) and
  ``loglikelihood_rolling`` on ``Instance`` objects holding the same texts;
* lmassay, the model alone (``score_token_lists``: log-prob of every token);
* lmassay paired: model + reference in the same batches (log-probs under both, full-vocabulary
  KL(reference ‖ model), top-1 agreement) — the work of ``lmassay attest``.

Both tools tokenise the texts themselves (timed), use the same context (1,024) and prefix token
(``<|endoftext|>``). Each measurement runs in a fresh subprocess (so peak RSS is its own), after a
warm-up on one short document; runs are interleaved over ``--repeats`` and the median is shown.
The per-document log-likelihoods of lm-eval and lmassay must agree to 1e-4 (relative).

Memory: a 2-block, 128-wide GPT-2 with a 4,096-token vocabulary scores 10k, 100k (and 1M in the full
mode) token-id documents, paired, each in a fresh subprocess; the peak RSS of each is printed
against the first.

    python benchmarks/throughput.py --quick      # 1 repeat, ~2.5k tokens, memory 10k→100k tokens
    python benchmarks/throughput.py              # full: 3 repeats, 12k tokens, 10k→1M memory

Add ``--device cuda`` on a GPU machine (bfloat16 and SDPA attention there; lm-eval also in bfloat16).

``--dtype-check`` measures ``--dtype bfloat16`` against float32 on the CPU instead (issue 13 §5):
the CPU's native bf16 support (torch's CPU capability, the AVX-512 BF16 / AMX flags) and dense
matmul GFLOP/s at both dtypes; tokens/s of lmassay (model alone) and lm-eval at both dtypes,
interleaved, with lmassay's ratio against lm-eval at the same dtype and at float32; and on the demo
world (``--zoo``: a ``lmassay demo`` cache folder) for every zoo variant the per-token KL and
log-prob differences bf16 − float32 (paired scoring of ``--diff-samples`` probes) and the verdict
and flags of ``attest`` at both dtypes (``--per-category`` probes per category).

    python benchmarks/throughput.py --dtype-check --models gpt2-small-4x256 --tokens 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import peak_rss_mib

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

VOCAB = 50257
EOT = "<|endoftext|>"
CONTEXT = 1024
MODELS = {
    "gpt2-124m": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-small-4x256": {"n_layer": 4, "n_embd": 256, "n_head": 4},
}
MEMORY_MODEL = {
    "n_layer": 2,
    "n_embd": 128,
    "n_head": 2,
    "vocab_size": 4096,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
"""The memory probe's model: small enough to score 1M tokens paired in minutes on two cores (the
engine's per-token state does not depend on the model's size)."""


# --------------------------------------------------------------------------------------------
# fixtures: tokenizer, models, documents (deterministic, cached on disk)


def word(i: int) -> str:
    return f"w{i}"


def build_tokenizer(folder: Path) -> Any:
    """A word-level fast tokenizer: ids 0..50255 are words ``w<i>``, 50256 is ``<|endoftext|>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word(i): i for i in range(VOCAB - 1)}
    vocab[EOT] = VOCAB - 1
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOT))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        model_max_length=CONTEXT,
    )
    tok.save_pretrained(folder)
    return tok


def build_models(cache: Path) -> dict[str, Path]:
    """Save each model (and a reference of the same shape, another seed) with the tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = {}
    for name, shape in MODELS.items():
        for role, seed in (("model", 0), ("reference", 1)):
            folder = cache / f"{name}-{role}"
            out[f"{name}-{role}"] = folder
            if (folder / "config.json").is_file():
                continue
            config = GPT2Config(
                vocab_size=VOCAB,
                n_positions=CONTEXT,
                bos_token_id=VOCAB - 1,
                eos_token_id=VOCAB - 1,
                **shape,
            )
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(config).eval()
            model.save_pretrained(folder, safe_serialization=True)
            build_tokenizer(folder)
    return out


def document_lengths(total_tokens: int, seed: int) -> list[int]:
    """Lengths between 100 and 4,000 tokens, log-uniform, summing to about ``total_tokens``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    while sum(lengths) < total_tokens:
        lengths.append(int(np.exp(rng.uniform(np.log(100), np.log(4000)))))
    return lengths


def document_ids(total_tokens: int, seed: int) -> list[Any]:
    """Token-id documents (int32 arrays), Zipf-distributed ids, for the engine-only memory probe."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for n in document_lengths(total_tokens, seed):
        out.append((rng.zipf(1.2, size=n) % (VOCAB - 1)).astype(np.int32))
    return out


def document_texts(total_tokens: int, seed: int) -> list[str]:
    return [" ".join(word(int(i)) for i in doc) for doc in document_ids(total_tokens, seed)]


# --------------------------------------------------------------------------------------------
# workers (each runs in a fresh subprocess and prints one JSON line)


def worker_lm_eval(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(job["threads"])
    texts = document_texts(job["tokens"], job["seed"])
    lm = HFLM(
        pretrained=job["model"],
        backend="causal",
        device=job["device"],
        dtype=job["dtype"],
        batch_size=job["lm_eval_batch_size"],
        max_length=CONTEXT,
    )

    def requests(items: list[str]) -> list[Instance]:
        return [
            Instance("loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
            for i, t in enumerate(items)
        ]

    lm.loglikelihood_rolling(requests(texts[:1][:200]), disable_tqdm=True)  # warm-up
    start = time.perf_counter()
    values = lm.loglikelihood_rolling(requests(texts), disable_tqdm=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "logprobs": [float(v) for v in values], "rss": peak_rss_mib()}


def worker_lmassay(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from lmassay.attest.model_loading import load_model
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    torch.set_num_threads(job["threads"])
    texts = document_texts(job["tokens"], job["seed"])
    model = load_model(job["model"], device=job["device"], dtype=job["dtype"])
    ref = (
        load_model(job["reference"], device=job["device"], dtype=job["dtype"])
        if job["paired"]
        else None
    )

    def run(items: list[str]) -> list[Any]:
        ids = tokenize_texts(model.tokenizer, items)
        return score_token_lists(
            ids,
            model.model,
            ref.model if ref is not None else None,
            prefix_token_id=model.prefix_token_id,
            max_length=CONTEXT,
            token_budget=job.get("token_budget"),
        )

    run(texts[:1])  # warm-up
    start = time.perf_counter()
    scores = run(texts)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "logprobs": [float(np.sum(s.logprob_model, dtype=np.float64)) for s in scores],
        "rss": peak_rss_mib(),
        "attn": getattr(model.model.config, "_attn_implementation", None),
    }


def worker_memory(job: dict[str, Any]) -> dict[str, Any]:
    """Paired scoring of ``tokens`` token ids with the memory-probe model, built in process."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmassay.attest.scoring import score_token_lists

    torch.set_num_threads(job["threads"])
    shape = MEMORY_MODEL
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = GPT2Config(n_positions=CONTEXT, **shape)
        models.append(GPT2LMHeadModel(config).eval().to(job["device"]))
    docs = [d % shape["vocab_size"] for d in document_ids(job["tokens"], job["seed"])]
    start = time.perf_counter()
    scores = score_token_lists(docs, models[0], models[1], prefix_token_id=0, max_length=CONTEXT)
    seconds = time.perf_counter() - start
    n = sum(s.n_tokens for s in scores)
    return {"seconds": seconds, "tokens": n, "rss": peak_rss_mib()}


def worker_profile(job: dict[str, Any]) -> dict[str, Any]:
    """Where the time of one full 1,024-token window goes, lm-eval's way and lmassay's way (ms)."""
    import contextlib

    import torch

    from lmassay.attest.model_loading import load_model
    from lmassay.attest.scoring import fused_activations, head_rows, reduce_rows

    torch.set_num_threads(job["threads"])
    model = load_model(job["model"], device=job["device"], dtype=job["dtype"]).model
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB - 1, (1, CONTEXT), device=job["device"])  # (1, T)
    targets = torch.randint(0, VOCAB - 1, (CONTEXT,), device=job["device"])  # (T,)
    head = model.get_output_embeddings()
    steps: dict[str, Any] = {}

    def body(fused: bool) -> Any:
        with fused_activations([model]) if fused else contextlib.nullcontext():
            return model.base_model(input_ids=ids).last_hidden_state  # (1, T, H)

    hidden = body(True)[0]  # (T, H)
    steps["body: transformer blocks, transformers' 8-kernel tanh-GELU (lm-eval)"] = lambda: body(
        False
    )
    steps["body: transformer blocks, one-kernel GELU (lmassay)"] = lambda: body(True)
    steps["head: (T, V) logits + full log_softmax + gather (lm-eval)"] = lambda: torch.log_softmax(
        head(hidden[None]), dim=-1
    )[0].gather(-1, targets[:, None])
    steps["head: chunked logits + log_softmax into reused buffers (lmassay)"] = lambda: reduce_rows(
        [head_rows(hidden, head)], targets, [VOCAB], 0, job["device"]
    )
    steps["paired head + KL, two models (lmassay)"] = lambda: reduce_rows(
        [head_rows(hidden, head), head_rows(hidden * 1.01, head)],
        targets,
        [VOCAB, VOCAB],
        0,
        job["device"],
    )
    out: dict[str, list[float]] = {k: [] for k in steps}
    with torch.inference_mode():
        for fn in steps.values():
            fn()
        for _ in range(job["repeats"]):
            for key, fn in steps.items():
                start = time.perf_counter()
                fn()
                out[key].append(1000 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in out.items()}


WORKERS = {
    "lm-eval": worker_lm_eval,
    "lmassay": worker_lmassay,
    "memory": worker_memory,
    "profile": worker_profile,
}


def run_worker(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh Python process and return its JSON result."""
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(job)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"worker {kind} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# machine


def matmul_flops(device: str, dtype: str, seconds: float = 3.0) -> float:
    """Dense matmul FLOP/s on this machine: (1024 × 768) @ (768 × 3072), GPT-2's MLP shape."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(1024, 768, device=device, dtype=dt)
    b = torch.randn(768, 3072, device=device, dtype=dt)
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 5:
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(10 * 2 * 1024 * 768 * 3072 / (time.perf_counter() - start))
    return statistics.median(rates)


def n_parameters(folder: Path) -> int:
    """Parameters stored in the folder's safetensors files (GPT-2 ties the head: counted once)."""
    from math import prod

    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            total += sum(prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
    return total


# --------------------------------------------------------------------------------------------
# --dtype-check: bfloat16 against float32 on the CPU


def cpu_bf16_support() -> str:
    """torch's CPU capability and the bf16 flags of /proc/cpuinfo (empty where none)."""
    import torch

    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(f for f in line.split() if "bf16" in f or f.startswith("amx"))
    found = ", ".join(sorted(flags)) or "no avx512_bf16 / amx flags"
    return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; {found}"


def dtype_speed(args: argparse.Namespace, folders: dict[str, Path], repeats: int) -> None:
    """tokens/s of lmassay (model alone) and lm-eval at float32 and bfloat16, interleaved."""
    tokens = args.tokens or 1_000
    n_tok = sum(document_lengths(tokens, seed=0))
    print(
        "| model | dtype | lmassay tokens/s | lm-eval tokens/s | lmassay ÷ lm-eval, same dtype "
        "| lmassay ÷ lm-eval float32 | lmassay bf16 ÷ float32 | log-likelihood vs lm-eval "
        "(max relative) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        base = {
            "tokens": tokens,
            "seed": 0,
            "threads": args.threads,
            "device": "cpu",
            "model": str(folders[f"{name}-model"]),
            "reference": str(folders[f"{name}-reference"]),
            "lm_eval_batch_size": args.lm_eval_batch_size,
            "paired": False,
        }
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(repeats):
            for dtype in ("float32", "bfloat16"):
                for tool, kind in (("lmassay", "lmassay"), ("lm-eval", "lm-eval")):
                    job = {**base, "dtype": dtype}
                    runs.setdefault((tool, dtype), []).append(run_worker(kind, job))
        rate = {k: n_tok / statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        for dtype in ("float32", "bfloat16"):
            ours, theirs = runs[("lmassay", dtype)][0], runs[("lm-eval", dtype)][0]
            rel = max(
                abs(a - b) / abs(b)
                for a, b in zip(ours["logprobs"], theirs["logprobs"], strict=True)
            )
            print(
                f"| {name} | {dtype} | {rate[('lmassay', dtype)]:,.0f} | "
                f"{rate[('lm-eval', dtype)]:,.0f} | "
                f"{rate[('lmassay', dtype)] / rate[('lm-eval', dtype)]:.2f} | "
                f"{rate[('lmassay', dtype)] / rate[('lm-eval', 'float32')]:.2f} | "
                f"{rate[('lmassay', dtype)] / rate[('lmassay', 'float32')]:.3f} | {rel:.1e} |"
            )
    print(f"\n{n_tok:,} tokens per run, median of {repeats} interleaved repeats", flush=True)


def dtype_zoo(args: argparse.Namespace) -> None:
    """Per variant: per-token differences bf16 − float32, and attest's verdict at both dtypes."""
    import numpy as np

    from lmassay.attest.config import AttestConfig
    from lmassay.attest.model_loading import load_model
    from lmassay.attest.probes import load_probes
    from lmassay.attest.recipe import attest
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    root = Path(args.zoo)
    probes_path = root / "world" / "probes.jsonl"
    zoo = json.loads((root / "zoo" / "zoo.json").read_text())
    samples = load_probes(str(probes_path)).samples
    step = max(1, len(samples) // args.diff_samples)
    texts = [s.text for s in samples[::step][: args.diff_samples]]
    references = {d: load_model(str(root / "reference"), device="cpu", dtype=d) for d in DTYPES}
    print(
        f"\n## Demo world ({root}): bfloat16 − float32 per variant\n\nPer-token differences over "
        f"{len(texts)} probes (paired scoring); verdicts from `attest` on {args.per_category} "
        "probes per category, default statistics.\n"
    )
    print(
        "| variant | mean KL f32 | mean abs Δ KL | max abs Δ KL | mean abs Δ log p | max abs Δ log p "
        "| verdict, flags f32 | verdict, flags bf16 | same | seconds f32 / bf16 |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|---|---|")
    same = 0
    with tempfile.TemporaryDirectory(prefix="lmassay-dtype-") as tmp:
        for variant in zoo["variants"]:
            name = variant["path"]
            kl, lp, verdicts, seconds = {}, {}, {}, {}
            for dtype in DTYPES:
                model = load_model(str(root / "zoo" / name), device="cpu", dtype=dtype)
                scores = score_token_lists(
                    tokenize_texts(model.tokenizer, texts),
                    model.model,
                    references[dtype].model,
                    prefix_token_id=model.prefix_token_id,
                    max_length=model.max_length,
                )
                kl[dtype] = np.concatenate([s.kl for s in scores]).astype(np.float64)
                lp[dtype] = np.concatenate([s.logprob_model for s in scores]).astype(np.float64)
                config = AttestConfig(
                    model=str(root / "zoo" / name),
                    reference=str(root / "reference"),
                    probes=str(probes_path),
                    per_category=args.per_category,
                    out=str(Path(tmp) / f"{name}-{dtype}"),
                    device="cpu",
                    dtype=dtype,
                    write_report=False,
                )
                start = time.perf_counter()
                run = attest(config)
                seconds[dtype] = time.perf_counter() - start
                verdicts[dtype] = (run.verdict, list(run.document.flagged))
            dkl = np.abs(kl["bfloat16"] - kl["float32"])
            dlp = np.abs(lp["bfloat16"] - lp["float32"])
            match = verdicts["float32"] == verdicts["bfloat16"]
            same += match
            print(
                f"| {name} | {kl['float32'].mean():.4f} | {dkl.mean():.2e} | {dkl.max():.3f} | "
                f"{dlp.mean():.2e} | {dlp.max():.3f} | {verdicts['float32'][0]} "
                f"{verdicts['float32'][1]} | {verdicts['bfloat16'][0]} {verdicts['bfloat16'][1]} "
                f"| {'yes' if match else 'NO'} | {seconds['float32']:.0f} / "
                f"{seconds['bfloat16']:.0f} |",
                flush=True,
            )
    print(f"\nsame verdict and flags on {same} of {len(zoo['variants'])} variants")


DTYPES = ("float32", "bfloat16")


def one_matmul_flops(dtype: str, seconds: float = 2.0) -> float:
    """GFLOP/s of GPT-2's MLP matmul on the CPU, timed for ``seconds`` but at least once (a CPU
    without native bf16 takes ~25 s for one, so :func:`matmul_flops`' 50 would take minutes)."""
    import torch

    a = torch.randn(1024, 768, dtype=getattr(torch, dtype))
    b = torch.randn(768, 3072, dtype=getattr(torch, dtype))
    start, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return n * 2 * 1024 * 768 * 3072 / (time.perf_counter() - start)


def dtype_check(args: argparse.Namespace, repeats: int) -> None:
    import torch

    load = os.getloadavg()
    print(
        f"# bfloat16 against float32 on the CPU — {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}\n\n{cpu_bf16_support()}; dense matmul "
        + ", ".join(f"{d} {one_matmul_flops(d) / 1e9:,.2f} GFLOP/s" for d in DTYPES)
        + "\n",
        flush=True,
    )
    if args.models:
        dtype_speed(args, build_models(Path(args.cache)), repeats)
    if args.zoo:
        dtype_zoo(args)


# --------------------------------------------------------------------------------------------
# main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer tokens")
    parser.add_argument("--tokens", type=int, help="probe tokens for the speed table")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (median shown)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--lm-eval-batch-size", type=int, default=1)
    parser.add_argument(
        "--models",
        default="gpt2-124m,gpt2-small-4x256",
        help="comma-separated, of " + ", ".join(MODELS),
    )
    parser.add_argument(
        "--memory-tokens", help="comma-separated probe sizes for the memory check (smaller model)"
    )
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "lmassay-bench-models")
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--dtype-check", action="store_true", help="bfloat16 against float32 on the CPU only"
    )
    parser.add_argument("--zoo", help="--dtype-check: a demo cache folder (world, reference, zoo)")
    parser.add_argument("--per-category", type=int, default=12, help="--dtype-check: attest size")
    parser.add_argument("--diff-samples", type=int, default=24, help="--dtype-check: probes")
    args = parser.parse_args()
    if args.worker:
        kind, job = args.worker
        print(json.dumps(WORKERS[kind](json.loads(job))))
        return
    if args.dtype_check:
        dtype_check(args, args.repeats or (1 if args.quick else 2))
        return

    import torch

    tokens = args.tokens or (2_500 if args.quick else 12_000)
    repeats = args.repeats or (1 if args.quick else 3)
    memory_tokens = [
        int(x)
        for x in (
            args.memory_tokens or ("10000,100000" if args.quick else "10000,100000,1000000")
        ).split(",")
        if x
    ]
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    folders = build_models(Path(args.cache))
    flops = matmul_flops(args.device, dtype)
    lengths = document_lengths(tokens, seed=0)

    print(
        f"# lmassay vs lm-evaluation-harness — {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}, {args.device} {dtype}"
    )
    print(
        f"{len(lengths)} documents, {sum(lengths):,} tokens ({min(lengths)}–{max(lengths)} per document), "
        f"context {CONTEXT}; lm-eval batch size {args.lm_eval_batch_size}; median of {repeats} "
        f"interleaved repeat(s); dense matmul {flops / 1e9:,.1f} GFLOP/s\n"
    )
    print(
        "| model | run | seconds | tokens/s | × lm-eval tokens/s | × single time | peak RSS MiB "
        "| achieved GFLOP/s | % of matmul |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model_dir, ref_dir = folders[f"{name}-model"], folders[f"{name}-reference"]
        params = n_parameters(model_dir)
        base = {
            "tokens": tokens,
            "seed": 0,
            "threads": args.threads,
            "device": args.device,
            "dtype": dtype,
            "model": str(model_dir),
            "reference": str(ref_dir),
            "lm_eval_batch_size": args.lm_eval_batch_size,
        }
        runs: dict[str, list[dict[str, Any]]] = {"lm-eval": [], "single": [], "paired": []}
        for _ in range(repeats):
            runs["lm-eval"].append(run_worker("lm-eval", base))
            runs["single"].append(run_worker("lmassay", {**base, "paired": False}))
            runs["paired"].append(run_worker("lmassay", {**base, "paired": True}))
        seconds = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        ours, theirs = runs["single"][0]["logprobs"], runs["lm-eval"][0]["logprobs"]
        max_rel = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True))
        paired_rel = max(
            abs(a - b) / abs(b) for a, b in zip(runs["paired"][0]["logprobs"], theirs, strict=True)
        )
        n_tok = sum(lengths)
        labels = {
            "lm-eval": "lm-eval hf loglikelihood_rolling",
            "single": "lmassay, model alone",
            "paired": "lmassay paired (model + reference + KL)",
        }
        for key, label in labels.items():
            rate = n_tok / seconds[key]
            achieved = 2 * params * rate * (2 if key == "paired" else 1)
            print(
                f"| {name} ({params / 1e6:.0f}M) | {label} | {seconds[key]:.2f} | {rate:,.0f} | "
                f"{seconds['lm-eval'] / seconds[key]:.2f} | {seconds[key] / seconds['single']:.2f} | "
                f"{max(r['rss'] for r in runs[key]):,.0f} | {achieved / 1e9:,.1f} | "
                f"{100 * achieved / flops:.0f}% |"
            )
        status = "OK" if max(max_rel, paired_rel) <= 1e-4 else "MISMATCH"
        print(
            f"| {name} | per-document log-likelihood vs lm-eval: max relative difference "
            f"{max_rel:.1e} (single), {paired_rel:.1e} (paired) — {status} | | | | | | | |"
        )
    print(f"\nattention implementation (lmassay): {runs['single'][0].get('attn')}")

    profile_model = args.models.split(",")[0]
    profile = run_worker(
        "profile",
        {
            "threads": args.threads,
            "device": args.device,
            "dtype": dtype,
            "model": str(folders[f"{profile_model}-model"]),
            "repeats": repeats + 2,
        },
    )
    print(f"\n## Where the time of one 1,024-token window goes ({profile_model}, median ms)\n")
    print("| step | ms |")
    print("|---|---:|")
    for key, ms in profile.items():
        print(f"| {key} | {ms:,.0f} |")

    print(
        "\n## Peak memory against probe size (GPT-2 2 blocks × 128, vocabulary 4,096, paired, "
        "a fresh process each)\n"
    )
    print("| probe tokens | seconds | tokens/s | peak RSS MiB | × first |")
    print("|---:|---:|---:|---:|---:|")
    first = None
    for n in memory_tokens:
        job = {
            "tokens": n,
            "seed": 1,
            "threads": args.threads,
            "device": args.device,
            "dtype": dtype,
        }
        r = run_worker("memory", job)
        first = first or r["rss"]
        print(
            f"| {r['tokens']:,} | {r['seconds']:.1f} | {r['tokens'] / r['seconds']:,.0f} | "
            f"{r['rss']:,.0f} | {r['rss'] / first:.2f} |"
        )


if __name__ == "__main__":
    main()
