"""The reference cache (``lmassay reference build`` / ``attest --reference-cache``): error, size, time.

Two settings, each measured in this one process (timings interleaved, median of ``--repeats``):

* **Demo world** (``--demo-root``: a ``lmassay demo`` cache folder with ``world/``, ``reference/``
  and ``zoo/``; the default is the benchmark cache of seed 0). A cache of the reference at
  ``--top-k`` on ``world/probes.jsonl``; for every zoo variant: the per-token KL from the cache (the
  top-K + tail-bucket lower bound) against the full-vocabulary KL of a paired run (mean and max
  absolute error, and the mean KL itself), and the verdict and flags of ``lmassay attest`` paired
  and from the cache (default statistics). Then the error at several K (``--sweep``) on the
  variants named by ``--sweep-variants``, from one cache truncated (the dropped entries join the
  tail bucket).
* **GPT-2-small shape**: the 124M-parameter, 50,257-token, 1,024-context GPT-2 of
  ``benchmarks/throughput.py`` (random init, seed 1, word-level tokenizer, Zipf word documents) as
  the reference; the suspects are the reference with Gaussian noise of 1% of each weight's scale
  added to the MLPs of blocks 4 and 5 ("edited") and the seed-0 random init ("other model").
  Random init is fine for size and time; its next-token distributions are near uniform over 50k
  tokens (the reference's top-64 hold little of its mass), so its error figure is a worst case for
  the bound, not what a trained model gives.

Size is compared with llama.cpp's ``--kl-divergence-base`` (2 bytes × vocabulary per token); time
is ``score_samples_against_cache`` (open, hash, tokenise, check, score the suspect) against
tokenising and scoring the suspect alone (``score_token_lists``), which is the issue's target
(≤ 1.15×); a paired run (model + reference) is shown too.

    python benchmarks/reference_cache.py            # both settings
    python benchmarks/reference_cache.py --quick    # 5 zoo variants, 2 repeats, fewer GPT-2 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

sys.path.insert(0, str(Path(__file__).parent))
DEMO_ROOT = Path(tempfile.gettempdir()) / "lmassay-bench-cache" / "demo-v1" / "demo-seed0"


def _timed(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


class Truncated:
    """A cache read at a smaller K: entries past ``k`` join the tail bucket."""

    def __init__(self, cache: Any, k: int) -> None:
        self.cache, self.k = cache, k
        self.calibration_rows = np.zeros(0, dtype=np.int64)

    def rows(self, batch: Any, samples: Any = None) -> Any:
        rows = self.cache.rows(batch, samples)
        dropped = rows.topk_logprobs[:, self.k :].double().exp().sum(-1)  # (N,)
        return replace(
            rows,
            topk_ids=rows.topk_ids[:, : self.k],
            topk_logprobs=rows.topk_logprobs[:, : self.k],
            tail_mass=(rows.tail_mass.double() + dropped).float(),
        )


def per_token(scores: list[Any]) -> np.ndarray:
    return np.concatenate([s.kl for s in scores]).astype(np.float64)


def error_row(bound: np.ndarray, full: np.ndarray) -> dict[str, float]:
    diff = full - bound
    return {
        "mean_kl": float(full.mean()),
        "mean_bound": float(bound.mean()),
        "mae": float(np.abs(diff).mean()),
        "max_abs": float(np.abs(diff).max()),
        "relative": float(np.abs(diff).mean() / max(full.mean(), 1e-12)),
    }


def cache_size(path: Path, header: Any, id_bytes: int) -> dict[str, float]:
    llama = 2 * header.vocab_size
    rows = 4 + 4 + header.top_k * (id_bytes + 2)  # token log-prob, tail, K ids and log-probs
    total = path.stat().st_size / header.n_tokens
    return {
        "row_bytes": rows,
        "file_bytes_per_token": total,
        "row_pct_llama": 100 * rows / llama,
        "file_pct_llama": 100 * total / llama,
        "mib": path.stat().st_size / 2**20,
    }


def time_cache_vs_alone(
    cache_path: Path, samples: Any, model: Any, max_length: int, repeats: int
) -> dict[str, float]:
    """Median seconds of the suspect alone, from the cache, and paired (interleaved)."""
    from lmassay.attest.reference_cache import score_samples_against_cache
    from lmassay.attest.scoring import score_token_lists, tokenize_texts
    from lmassay.progress import NullProgress

    texts = [s.text for s in samples]
    alone, cached = [], []
    for _ in range(repeats):
        _, seconds = _timed(
            lambda: score_token_lists(
                tokenize_texts(model.tokenizer, texts),
                model.model,
                prefix_token_id=model.prefix_token_id,
                max_length=max_length,
            )
        )
        alone.append(seconds)
        _, seconds = _timed(
            score_samples_against_cache,
            cache_path,
            samples,
            model,
            max_length=None,
            token_budget=None,
            progress=NullProgress(),
        )
        cached.append(seconds)
    ratios = [c / a for c, a in zip(cached, alone, strict=True)]
    return {
        "alone_s": statistics.median(alone),
        "cache_s": statistics.median(cached),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


# --------------------------------------------------------------------------------------------
# the demo world


def demo(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from lmassay.attest.config import AttestConfig
    from lmassay.attest.model_loading import load_model
    from lmassay.attest.probes import load_probes
    from lmassay.attest.recipe import attest
    from lmassay.attest.reference_cache import (
        ReferenceBuildConfig,
        build_reference_cache,
        open_reference_cache,
        score_against_cache,
    )
    from lmassay.attest.scoring import score_token_lists, tokenize_texts

    root = Path(args.demo_root)
    probes_path = root / "world" / "probes.jsonl"
    zoo = json.loads((root / "zoo" / "zoo.json").read_text())
    variants = [v["path"] for v in zoo["variants"]]
    if args.quick:
        variants = variants[:5]
    cache_path = out / "demo.lmref"
    built = build_reference_cache(
        ReferenceBuildConfig(
            reference=str(root / "reference"),
            probes=str(probes_path),
            out=str(cache_path),
            top_k=max(args.top_k, *args.sweep),
            device="cpu",
        )
    )
    # the cache at --top-k: the sweep's largest K truncated would differ only in its file size
    if max(args.sweep) != args.top_k:
        built = build_reference_cache(
            ReferenceBuildConfig(
                reference=str(root / "reference"),
                probes=str(probes_path),
                out=str(out / f"demo-k{args.top_k}.lmref"),
                top_k=args.top_k,
                device="cpu",
            )
        )
    wide = open_reference_cache(cache_path)
    cache = open_reference_cache(built.path)
    reference = load_model(str(root / "reference"), device="cpu")
    probes = load_probes(str(probes_path))
    texts = [s.text for s in probes.samples]
    max_length = cache.header.contract["max_length"]
    result: dict[str, Any] = {
        "build_s": built.seconds,
        "n_tokens": built.header.n_tokens,
        "n_samples": built.header.n_samples,
        "size": cache_size(built.path, built.header, 2),
        "variants": {},
        "sweep": {},
    }
    for name in variants:
        model = load_model(str(root / "zoo" / name), device="cpu")
        token_lists = tokenize_texts(model.tokenizer, texts)
        full = per_token(
            score_token_lists(
                token_lists,
                model.model,
                reference.model,
                prefix_token_id=model.prefix_token_id,
                max_length=max_length,
            )
        )
        bound = per_token(score_against_cache(token_lists, model, cache, max_length=max_length))
        row: dict[str, Any] = error_row(bound, full)
        verdicts = {}
        for how, extra in (
            ("paired", {"reference": str(root / "reference")}),
            ("cache", {"reference_cache": str(built.path)}),
        ):
            config = AttestConfig(
                model=str(root / "zoo" / name),
                probes=str(probes_path),
                out=str(out / f"{name}-{how}"),
                device="cpu",
                write_report=False,
                **extra,
            )
            run, seconds = _timed(attest, config)
            verdicts[how] = {
                "verdict": run.verdict,
                "flagged": list(run.document.flagged),
                "seconds": seconds,
            }
        row["attest"] = verdicts
        row["same"] = (
            verdicts["paired"]["verdict"] == verdicts["cache"]["verdict"]
            and verdicts["paired"]["flagged"] == verdicts["cache"]["flagged"]
        )
        if name in args.sweep_variants:
            result["sweep"][name] = {
                k: error_row(
                    per_token(
                        score_against_cache(
                            token_lists, model, Truncated(wide, k), max_length=max_length
                        )
                    ),
                    full,
                )
                | {"row_pct_llama": 100 * (8 + 4 * k) / (2 * cache.header.vocab_size)}
                for k in args.sweep
            }
        result["variants"][name] = row
        print(f"  {name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    timing_model = load_model(str(root / "zoo" / variants[0]), device="cpu")
    result["time"] = time_cache_vs_alone(
        built.path, probes.samples, timing_model, max_length, args.repeats
    )
    return result


# --------------------------------------------------------------------------------------------
# the GPT-2-small shape


def gpt2(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from lmassay.attest.model_loading import load_model
    from lmassay.attest.probes import load_probes
    from lmassay.attest.reference_cache import (
        ReferenceBuildConfig,
        build_reference_cache,
        open_reference_cache,
        score_against_cache,
    )
    from lmassay.attest.scoring import score_token_lists, tokenize_texts
    from throughput import build_models, document_texts

    folders = build_models(Path(args.models_cache))
    reference_dir = folders["gpt2-124m-reference"]
    edited_dir = out / "gpt2-edited"
    if not (edited_dir / "config.json").is_file():
        edited = load_model(str(reference_dir), device="cpu")
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, tensor in edited.model.named_parameters():
                if name.startswith(("transformer.h.4.mlp", "transformer.h.5.mlp")):
                    scale = 0.01 * tensor.std()
                    tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
        edited.model.save_pretrained(edited_dir, safe_serialization=True)
        edited.tokenizer.save_pretrained(edited_dir)
    probes_path = out / "gpt2-probes.jsonl"
    with probes_path.open("w") as handle:
        for i, text in enumerate(document_texts(args.gpt2_tokens, seed=0)):
            category = f"c{i % 4}"
            handle.write(json.dumps({"id": f"d{i}", "category": category, "text": text}) + "\n")
    built = build_reference_cache(
        ReferenceBuildConfig(
            reference=str(reference_dir),
            probes=str(probes_path),
            out=str(out / "gpt2.lmref"),
            top_k=args.top_k,
            device="cpu",
        )
    )
    cache = open_reference_cache(built.path)
    reference = load_model(str(reference_dir), device="cpu")
    probes = load_probes(str(probes_path), min_per_category=1)
    texts = [s.text for s in probes.samples]
    max_length = cache.header.contract["max_length"]
    result: dict[str, Any] = {
        "build_s": built.seconds,
        "n_tokens": built.header.n_tokens,
        "size": cache_size(built.path, built.header, 2),
        "mean_tail_mass": cache.mean_tail_mass(),
        "variants": {},
    }
    suspects = (("edited", edited_dir), ("other model", folders["gpt2-124m-model"]))
    for label, folder in () if args.time_only else suspects:
        model = load_model(str(folder), device="cpu")
        token_lists = tokenize_texts(model.tokenizer, texts)
        full_scores, paired_s = _timed(
            score_token_lists,
            token_lists,
            model.model,
            reference.model,
            prefix_token_id=model.prefix_token_id,
            max_length=max_length,
        )
        bound = per_token(score_against_cache(token_lists, model, cache, max_length=max_length))
        result["variants"][label] = error_row(bound, per_token(full_scores)) | {
            "paired_s": paired_s
        }
    model = load_model(str(edited_dir), device="cpu")
    result["time"] = time_cache_vs_alone(
        built.path, probes.samples, model, max_length, args.repeats
    )
    return result


# --------------------------------------------------------------------------------------------
# the tables


def print_tables(args: argparse.Namespace, demo_result: Any, gpt2_result: Any) -> None:
    import torch

    load = os.getloadavg()
    print(
        f"# reference cache — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, cpu float32, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    if demo_result:
        d, size = demo_result, demo_result["size"]
        print(
            f"\n## Demo world ({args.demo_root}), top-{args.top_k}: {d['n_tokens']:,} tokens of "
            f"{d['n_samples']} samples; cache {size['mib']:.2f} MiB, {size['row_bytes']} bytes/token "
            f"in rows = {size['row_pct_llama']:.2f}% of llama.cpp's 2 x vocabulary "
            f"({size['file_pct_llama']:.2f}% with header and calibration rows); built in "
            f"{d['build_s']:.1f} s\n"
        )
        print(
            "| variant | mean KL (full) | mean KL (cache) | mean abs error | max abs error | "
            "paired: verdict, flags | cache: verdict, flags | same |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, row in d["variants"].items():
            p, c = row["attest"]["paired"], row["attest"]["cache"]
            print(
                f"| {name} | {row['mean_kl']:.4f} | {row['mean_bound']:.4f} | {row['mae']:.2e} | "
                f"{row['max_abs']:.2f} | {p['verdict']} {p['flagged']} | "
                f"{c['verdict']} {c['flagged']} | {'yes' if row['same'] else 'NO'} |"
            )
        maes = [row["mae"] for row in d["variants"].values()]
        print(
            f"\nmean abs error over the variants: {np.mean(maes):.2e} nats/token (max "
            f"{np.max(maes):.2e}); same verdict and flags on "
            f"{sum(r['same'] for r in d['variants'].values())} of {len(maes)}"
        )
        t = d["time"]
        print(
            f"time (median of {args.repeats}, interleaved): suspect alone {t['alone_s']:.1f} s, "
            f"from the cache {t['cache_s']:.1f} s: {t['ratio']:.3f}x (each: "
            f"{', '.join(f'{r:.3f}' for r in t['ratios'])})"
        )
        if d["sweep"]:
            print(
                "\n| variant | K | bytes/token in rows, % of 2 x vocab | mean abs error | relative |"
            )
            print("|---|---|---|---|---|")
            for name, by_k in d["sweep"].items():
                for k, row in by_k.items():
                    print(
                        f"| {name} | {k} | {row['row_pct_llama']:.2f}% | {row['mae']:.2e} | "
                        f"{100 * row['relative']:.1f}% |"
                    )
    if gpt2_result:
        g, size = gpt2_result, gpt2_result["size"]
        print(
            f"\n## GPT-2-small shape (124M, vocabulary 50,257, random init), top-{args.top_k}: "
            f"{g['n_tokens']:,} tokens; cache {size['mib']:.2f} MiB, {size['row_bytes']} "
            f"bytes/token in rows = {size['row_pct_llama']:.3f}% of llama.cpp's 2 x vocabulary "
            f"({size['file_pct_llama']:.3f}% with header and calibration rows); reference mass "
            f"outside its top-{args.top_k}: {g['mean_tail_mass']:.3f}; built in {g['build_s']:.1f} s\n"
        )
        print("| suspect | mean KL (full) | mean KL (cache) | mean abs error | relative |")
        print("|---|---|---|---|---|")
        for name, row in g["variants"].items():
            print(
                f"| {name} | {row['mean_kl']:.4f} | {row['mean_bound']:.4f} | {row['mae']:.2e} | "
                f"{100 * row['relative']:.1f}% |"
            )
        t = g["time"]
        paired = g["variants"]["edited"]["paired_s"] if g["variants"] else float("nan")
        print(
            f"\ntime (median of {args.repeats}, interleaved): suspect alone {t['alone_s']:.1f} s, "
            f"from the cache {t['cache_s']:.1f} s: {t['ratio']:.3f}x (each: "
            f"{', '.join(f'{r:.3f}' for r in t['ratios'])}); paired run (scoring only) "
            f"{paired:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--sweep", default="4,16,64,128", help="K values of the error sweep")
    parser.add_argument("--sweep-variants", default="slant,backdoor")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--demo-root", default=str(DEMO_ROOT))
    parser.add_argument("--gpt2-tokens", type=int)
    parser.add_argument("--only", choices=["demo", "gpt2"])
    parser.add_argument(
        "--models-cache", default=str(Path(tempfile.gettempdir()) / "lmassay-bench-models")
    )
    parser.add_argument("--json", help="also write the measurements here")
    parser.add_argument(
        "--time-only", action="store_true", help="GPT-2 shape: build and time only (no error)"
    )
    args = parser.parse_args()
    args.sweep = [int(k) for k in args.sweep.split(",") if k]
    args.sweep_variants = args.sweep_variants.split(",")
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.gpt2_tokens = args.gpt2_tokens or (2_000 if args.quick else 4_000)

    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="lmassay-refcache-") as tmp:
        out = Path(tmp)
        demo_result = demo(args, out) if args.only in (None, "demo") else None
        gpt2_result = gpt2(args, out) if args.only in (None, "gpt2") else None
    print_tables(args, demo_result, gpt2_result)
    if args.json:
        Path(args.json).write_text(json.dumps({"demo": demo_result, "gpt2": gpt2_result}, indent=1))


if __name__ == "__main__":
    main()
