"""Layer-streamed scoring of a model whose weights exceed an imposed memory cap.

Builds a GPT-2-shaped model from a config with a fixed seed (no download) and saves it as sharded
safetensors (100 MB shards); then, each in a fresh subprocess:

1. the disk read speed: the weight files are dropped from the page cache
   (``posix_fadvise(DONTNEED)``, these files only) and read sequentially in 16 MiB blocks;
2. the in-memory path under the cap (expected to be killed: the weights do not fit);
3. ``stream_score_token_lists`` under the cap, after dropping the files from the page cache again;
4. the in-memory path without a cap: its scoring time (after loading) is the compute time of the
   same tokens, and its log-likelihoods are compared with the streamed ones.

The cap is ``RLIMIT_AS``: the worker's address space after imports and a warm-up plus
``--cap-fraction`` (50%) of the weights.  An address-space cap is the strict one: transformers'
in-memory loading maps every shard, so it cannot start, while the streamer reads one block's
tensors at a time without mapping files.  ``--cgroup`` caps resident memory plus page cache with a
memory cgroup instead (v1, needs root); there file-backed weights can be evicted and re-read, so
the in-memory path may still run, slowly.
It prints the streamed time against the
disk-read bound (bytes of weights read / measured read speed) and against the larger of that bound
and the in-memory compute time.

    python benchmarks/streaming.py --quick      # 12 blocks × 1024 (203M, 0.8 GB), 256 tokens
    python benchmarks/streaming.py              # 24 blocks × 1024 (355M, 1.4 GB), 1,024 tokens
    python benchmarks/streaming.py --paired     # model + reference, both streamed (KL)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import peak_rss_mib

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one glibc malloc arena: each extra one (e.g. for the block-reading thread) reserves 64 MiB of
# address space, which RLIMIT_AS counts
os.environ.setdefault("MALLOC_ARENA_MAX", "1")

VOCAB = 50257
CONTEXT = 1024
SHAPES = {
    "quick": {"n_layer": 12, "n_embd": 1024, "n_head": 16},
    "full": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
}


def build(folder: Path, shape: dict[str, int], seed: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if (folder / "config.json").is_file():
        return folder
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
        **shape,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="100MB")
    return folder


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def drop_cache(files: list[Path]) -> None:
    """Evict these files' pages from the page cache (clean pages; other files are untouched)."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def documents(tokens: int, seed: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out, total = [], 0
    while total < tokens:
        n = int(min(tokens - total, rng.integers(100, 1500)))
        out.append(rng.integers(0, VOCAB - 1, size=max(n, 1)).tolist())
        total += max(n, 1)
    return out


def vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def vm_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmPeak in /proc/self/status")


# --------------------------------------------------------------------------------------------
# workers


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from lmassay.attest.scoring import score_token_lists
    from lmassay.attest.streaming import StreamStats, stream_score_token_lists

    torch.set_num_threads(job["threads"])
    files = [Path(f) for f in job["files"]]
    if job["kind"] == "read":
        drop_cache(files)
        start, total = time.perf_counter(), 0
        for file in files:
            with open(file, "rb", buffering=0) as handle:
                while block := handle.read(16 << 20):
                    total += len(block)
        return {"seconds": time.perf_counter() - start, "bytes": total}

    docs = documents(job["tokens"], seed=0)
    torch.mm(torch.randn(64, 64), torch.randn(64, 64))  # start the thread pool before measuring
    from lmassay.attest.streamed_model import build_skeleton, read_config

    build_skeleton(read_config(Path(job["model"]), False))  # import the modelling code now
    if job["kind"] == "baseline":
        return {"rss": peak_rss_mib(), "vm": vm_size_bytes()}
    if job.get("rlimit_bytes"):
        limit = vm_size_bytes() + job["rlimit_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    vm_before = vm_size_bytes()
    common = {"prefix_token_id": VOCAB - 1, "max_length": CONTEXT}
    if job["kind"] == "stream":
        drop_cache(files)
        stats = StreamStats()
        start = time.perf_counter()
        scores = stream_score_token_lists(
            docs, job["model"], job.get("reference"), stats=stats, **common
        )
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "bytes_read": stats.bytes_read,
            "seconds_loading": stats.seconds_loading,
            "activation_mib": stats.activation_bytes / 2**20,
            "loads": sorted(set(stats.loads.values())),
            "logprob": [float(s.logprob_model.sum()) for s in scores],
            "rss": peak_rss_mib(),
            "vm_growth_mib": (vm_peak_bytes() - vm_before) / 2**20,
        }
    # in memory
    from transformers import AutoModelForCausalLM

    try:
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(job["model"]).eval()
        reference = None
        if job.get("reference"):
            reference = AutoModelForCausalLM.from_pretrained(job["reference"]).eval()
        loaded = time.perf_counter()
        scores = score_token_lists(docs, model, reference, **common)
    except (MemoryError, RuntimeError, OSError) as exc:
        return {
            "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
            "rss": peak_rss_mib(),
        }
    return {
        "seconds": time.perf_counter() - loaded,
        "load_seconds": loaded - start,
        "logprob": [float(s.logprob_model.sum()) for s in scores],
        "rss": peak_rss_mib(),
    }


CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def cgroup_available() -> bool:
    return (CGROUP_ROOT / "cgroup.procs").is_file() and os.access(CGROUP_ROOT, os.W_OK)


def run_worker(job: dict[str, Any], cgroup_bytes: int | None = None) -> dict[str, Any]:
    """Run a worker in a fresh process, inside a memory cgroup of ``cgroup_bytes`` if given."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(job)]
    group = None
    if cgroup_bytes is not None:
        group = CGROUP_ROOT / f"lmassay-bench-{os.getpid()}"
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(cgroup_bytes))
    procs = str(group / "cgroup.procs") if group else None

    def enter() -> None:  # in the child, before exec: join the cgroup
        if procs is not None:
            Path(procs).write_text(str(os.getpid()))

    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, preexec_fn=enter)
        peak = int((group / "memory.max_usage_in_bytes").read_text()) if group else None
    finally:
        if group is not None:
            group.rmdir()
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (
            "killed (out of memory under the cap)"
            if done.returncode == -9
            else done.stderr.strip().splitlines()[-1:]
        )
        return {"failed": f"exit {done.returncode}: {why}", "cgroup_peak_mib": (peak or 0) / 2**20}
    out = json.loads(lines[-1])
    if peak is not None:
        out["cgroup_peak_mib"] = peak / 2**20
    return out


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="GPT-2 small shape, 512 tokens")
    parser.add_argument("--tokens", type=int, help="probe tokens (default 512 quick, 1024 full)")
    parser.add_argument(
        "--cap-fraction",
        type=float,
        default=0.5,
        help="memory cap above the process after imports, as a fraction of the weights",
    )
    parser.add_argument("--paired", action="store_true", help="stream a reference too (KL)")
    parser.add_argument(
        "--cgroup",
        action="store_true",
        help="cap with a memory cgroup (resident + page cache) instead of RLIMIT_AS (needs root)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "lmassay-bench-models")
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    mode = "quick" if args.quick else "full"
    shape = SHAPES[mode]
    tokens = args.tokens or (256 if args.quick else 1024)
    name = f"stream-{shape['n_layer']}x{shape['n_embd']}"
    model = build(Path(args.cache) / f"{name}-model", shape, seed=0)
    reference = (
        build(Path(args.cache) / f"{name}-reference", shape, seed=1) if args.paired else None
    )
    files = weight_files(model) + (weight_files(reference) if reference else [])
    weights = sum(f.stat().st_size for f in files)
    base = {"threads": args.threads, "files": [str(f) for f in files], "tokens": tokens,
            "model": str(model), "reference": str(reference) if reference else None}  # fmt: skip

    use_cgroup = args.cgroup and cgroup_available()
    baseline = run_worker({**base, "kind": "baseline"})
    cap = int(args.cap_fraction * weights)
    if use_cgroup:  # resident memory + page cache, above what the process holds after imports
        how = f"memory cgroup limit = {baseline['rss']:,.0f} MiB after imports + {cap / 2**20:,.0f} MiB"
        limits: dict[str, Any] = {"cgroup_bytes": int(baseline["rss"] * 2**20) + cap}
        job_cap: dict[str, Any] = {}
    else:  # address space, above the process's size after imports
        how = f"RLIMIT_AS = the process's address space after imports + {cap / 2**20:,.0f} MiB"
        limits, job_cap = {}, {"rlimit_bytes": cap}

    read = run_worker({**base, "kind": "read"})
    capped_memory = run_worker({**base, "kind": "memory", **job_cap}, **limits)
    streamed = run_worker({**base, "kind": "stream", **job_cap}, **limits)
    in_memory = run_worker({**base, "kind": "memory"})

    speed = read["bytes"] / read["seconds"]
    print(
        f"# layer streaming — {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"GPT-2 shape {shape['n_layer']} blocks × {shape['n_embd']}, "
        f"{'model + reference (KL)' if reference else 'model alone'}: {weights / 2**20:,.0f} MiB of "
        f"float32 weights in {len(files)} safetensors shards; {tokens} probe tokens; cap: {how} "
        f"({args.cap_fraction:.0%} of the weights)\n"
    )
    print("| run | seconds | peak MiB (RSS / cgroup) | note |")
    print("|---|---:|---:|---|")

    def peak(r: dict[str, Any]) -> str:
        return f"{r.get('rss', float('nan')):,.0f} / {r.get('cgroup_peak_mib', float('nan')):,.0f}"

    print(
        f"| sequential read of the weight files, page cache dropped | {read['seconds']:.2f} | | "
        f"{speed / 2**20:,.0f} MiB/s |"
    )
    note = capped_memory.get("failed", "ran: the cap did not bind")
    print(
        f"| in memory, under the cap | {capped_memory.get('seconds', float('nan')):.2f} | "
        f"{peak(capped_memory)} | {note} |"
    )
    if "failed" in streamed:
        print(f"| streamed, under the cap | | {peak(streamed)} | FAILED: {streamed['failed']} |")
        return
    print(
        f"| streamed, under the cap, page cache dropped | {streamed['seconds']:.2f} | {peak(streamed)} | "
        f"{streamed['bytes_read'] / 2**20:,.0f} MiB read in {streamed['seconds_loading']:.2f} s; "
        f"activations {streamed['activation_mib']:,.1f} MiB; address space grew by at most "
        f"{streamed['vm_growth_mib']:,.0f} MiB while scoring; each module loaded "
        f"{streamed['loads']} time(s) |"
    )
    compute = in_memory.get("seconds", float("nan"))
    print(
        f"| in memory, no cap (scoring only, after loading) | {compute:.2f} | {peak(in_memory)} | "
        f"{in_memory.get('failed', '')} |"
    )
    bound = streamed["bytes_read"] / speed
    both = max(bound, compute)
    print(
        f"\ndisk-read bound {bound:.2f} s (bytes read / read speed): the streamed run reaches "
        f"{bound / streamed['seconds']:.0%} of it (target ≥ 50%); against max(read bound, in-memory "
        f"scoring time) = {both:.2f} s: {both / streamed['seconds']:.0%}"
    )
    if "logprob" in in_memory:
        rel = max(
            abs(a - b) / abs(b)
            for a, b in zip(streamed["logprob"], in_memory["logprob"], strict=True)
        )
        print(
            f"streamed vs in-memory per-document log-likelihood: max relative difference {rel:.1e}"
        )


if __name__ == "__main__":
    main()
