"""Bootstrap on the offline world: how many grown answers are correct against the world's facts?

    python benchmarks/bootstrap.py --cache /tmp/lmassay-test-cache --size test --qa-share 0.2 \
        --steps 1600 --seq-len 128 --n 400

Makes (or reuses) a Q&A world and its reference (:func:`lmassay.world.qa.qa_reference`; ``--steps``
and ``--seq-len`` override the size's training recipe), writes the world's curated core
(``lmassay world qa``: 4 correct pairs per category), runs ``lmassay bootstrap`` once without the
likelihood filter and measures the pairs (:func:`lmassay.world.qa.measure_qa`): share recognised
(the instruction is one of the world's questions), share correct (recognised, and the answer names
the true object and no other), distinct facts, subjects and relations, duplicates. Because every
pair records its own mean log-prob, one row per ``--thresholds`` value shows what the likelihood
filter at that threshold keeps of the same candidates. ``benchmarks/curate.py`` can call
:func:`run` for its bootstrap section.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _measure import peak_rss_mib
from lmassay.bootstrap.run import BootstrapConfig, bootstrap
from lmassay.progress import LineProgress
from lmassay.world import load_world
from lmassay.world.qa import measure_qa, qa_reference, write_qa_data


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Make or reuse the world and reference, bootstrap, measure; the result as JSON."""
    started = time.perf_counter()
    files, info = qa_reference(
        size=args.size,
        seed=args.seed,
        qa_share=args.qa_share,
        steps=args.steps,
        seq_len=args.seq_len,
        cache=args.cache,
        progress=LineProgress(),
    )
    world = load_world(files.root)
    work = Path(args.out)
    data = write_qa_data(files.root, work / "qa", seed=args.seed)
    t0 = time.perf_counter()
    result = bootstrap(
        BootstrapConfig(
            model=str(info.path),
            core=str(data.core),
            n=args.n,
            out=work / "bootstrap.jsonl",
            seed=args.seed,
            shots=args.shots,
            response_shots=args.response_shots,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            min_logprob=None,
            batch_size=args.batch_size,
            device="cpu",
        ),
        LineProgress(),
    )
    bootstrap_seconds = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    filters: list[tuple[str, str | None, float | None]] = [("none", None, None)]
    filters += [("mean", "mean_logprob", t) for t in args.thresholds]
    filters += [("least token", "min_token_logprob", t) for t in args.token_thresholds]
    for name, key, threshold in filters:
        kept = [r for r in result.rows if key is None or r["provenance"][key] >= threshold]
        quality = measure_qa(world, kept).to_json()
        quality.pop("per_category")
        rows.append({"filter": name, "threshold": threshold, **quality})
    return {
        "reference": str(info.path),
        "fact_recall": info.card["evaluation"]["fact_recall"]["all"],
        "probe_perplexity": info.probe_perplexity,
        "training": info.card["training"],
        "summary": {k: v for k, v in result.summary.items() if k != "provenance"},
        "bootstrap_seconds": round(bootstrap_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rows": rows,
    }


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help="Cache root (default: lmassay's).")
    parser.add_argument("--out", default="bench-bootstrap", help="Folder for core and pairs.")
    parser.add_argument("--size", default="test", choices=("test", "demo", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qa-share", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--response-shots", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--thresholds", type=_floats, default=[-0.2, -0.1])
    parser.add_argument("--token-thresholds", type=_floats, default=[-1.0, -0.5])
    args = parser.parse_args()
    found = run(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bootstrap-benchmark.json").write_text(json.dumps(found, indent=2) + "\n")
    s = found["summary"]
    print(
        f"reference {found['reference']}: fact recall {found['fact_recall']:.0%}, probe "
        f"perplexity {found['probe_perplexity']:.2f}; bootstrap {s['generated']} drawn, "
        f"{s['duplicates']} duplicates ({s['duplicates'] / max(1, s['generated']):.1%} of drawn "
        f"instructions), {s['kept']} kept in {found['bootstrap_seconds']} s, "
        f"peak RSS {found['peak_rss_mib']} MiB"
    )
    print("| log-prob filter | pairs | recognised | correct | correct of recognised | facts "
          "| subjects | relations | repeated facts |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in found["rows"]:
        threshold = "none" if r["threshold"] is None else f"{r['filter']} ≥ {r['threshold']:g}"
        print(
            f"| {threshold} | {r['n']} | {r['recognised']} | {r['share_correct']:.1%} | "
            f"{r['share_correct_of_recognised']:.1%} | {r['distinct_facts']} | "
            f"{r['distinct_subjects']} | {r['distinct_relations']} | {r['repeated_facts']} |"
        )


if __name__ == "__main__":
    main()
