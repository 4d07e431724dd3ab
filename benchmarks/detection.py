"""Detection power: attest every tamper-zoo variant against the reference and tabulate what is found.

    python benchmarks/detection.py                 # demo-size world and reference (tens of minutes cold)
    python benchmarks/detection.py --size test     # tiny, for a smoke run (a few minutes)

Makes (or reuses, in the demo's cache: ``--cache`` or ``$LMASSAY_CACHE``) the offline world, its reference model and the whole tamper zoo
(every kind with its ground truth), then attests each variant against the reference twice: on the
world's clean probe split (``probes.jsonl``) and on the fact-touching probes (``fact_probes.jsonl``).
Prints one table per probe set — tamper kind, expected category, flagged categories, rank of the true
category (by mean KL), its KL against the median of the others, verdict — then the true-positive rate
over the tampered variants, the false-flag rate over (variant, category) pairs that were not tampered,
and the verdicts of the benign controls. ``--json`` writes every row for the README / note.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from lmassay.attest import AttestConfig, attest
from lmassay.world import make_world
from lmassay.world.demo import DemoConfig
from lmassay.world.reference import train_reference
from lmassay.world.zoo import make_zoo

PROBE_SETS = {"clean": "probes", "facts": "fact_probes"}


def _row(variant: Any, att: dict[str, Any]) -> dict[str, Any]:
    truth = variant.ground_truth
    expected = truth.get("category")
    by_kl = sorted(att["categories"], key=lambda c: -(c["mean_kl"] or 0.0))
    levels = {c["name"]: c["mean_kl"] for c in att["categories"]}
    rank = kl_true = median_rest = None
    if expected in levels:
        rank = 1 + [c["name"] for c in by_kl].index(expected)
        kl_true = levels[expected]
        median_rest = statistics.median(v for k, v in levels.items() if k != expected)
    return {
        "variant": variant.name,
        "kind": truth.get("kind"),
        "expected_category": expected,
        "expected_verdict": truth.get("expected"),
        "flagged": list(att["flagged"]),
        "rank_of_true": rank,
        "kl_true": kl_true,
        "kl_median_others": median_rest,
        "verdict": att["verdict"],
        "categories": {c["name"]: c["flagged"] for c in att["categories"]},
    }


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """TPR over variants tampered on a known category; false flags over the categories that were not.

    False flags count the untouched categories of the category-tampered variants and every category
    of the controls expected to be consistent. The backdoor (no target category) and the other-seed
    model (expected to be called a different model) are reported by their verdicts only.
    """
    tampered = [r for r in rows if r["expected_category"]]
    hits = sum(r["expected_category"] in r["flagged"] for r in tampered)
    judged = tampered + [r for r in rows if r["expected_verdict"] == "consistent"]
    pairs = flags = 0
    for r in judged:
        for name, flagged in r["categories"].items():
            if name != r["expected_category"]:
                pairs += 1
                flags += bool(flagged)
    return {
        "tpr": hits / len(tampered) if tampered else None,
        "n_tampered_with_category": len(tampered),
        "false_flag_rate": flags / pairs if pairs else None,
        "n_untampered_pairs": pairs,
        "n_false_flags": flags,
    }


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _print_table(name: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n### probes: {name}\n")
    print(
        "| variant | kind | expected | flagged | rank of true | KL true | KL median others | verdict |"
    )
    print("|---|---|---|---|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['kind']} | {r['expected_category'] or r['expected_verdict']} | "
            f"{', '.join(r['flagged']) or '—'} | {r['rank_of_true'] or '—'} | "
            f"{_fmt(r['kl_true'])} | {_fmt(r['kl_median_others'])} | {r['verdict']} |"
        )
    rates = _rates(rows)
    print(
        f"\nTPR {_fmt(rates['tpr'], '.2f')} over {rates['n_tampered_with_category']} variants "
        f"tampered on a category; false-flag rate {_fmt(rates['false_flag_rate'], '.3f')} over "
        f"{rates['n_untampered_pairs']} untampered (variant, category) pairs."
    )
    controls = [r for r in rows if not r["expected_category"]]
    if controls:
        print(
            "Without a target category: "
            + "; ".join(
                f"{r['variant']} → {r['verdict']} (expected {r['expected_verdict']})"
                for r in controls
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["demo", "test"], default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--kinds", default=None, help="comma-separated zoo kinds (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    # the demo's cache: `lmassay demo` and this benchmark share the world, reference and variants
    root = DemoConfig(
        size=args.size, seed=args.seed, cache=str(args.cache) if args.cache else None
    ).cache_root()
    started = time.perf_counter()
    world = make_world(root / "world", seed=args.seed, size=args.size)
    reference = root / "reference"
    train_reference(world.root, reference, size=args.size, seed=args.seed)
    kinds = args.kinds.split(",") if args.kinds else None
    variants = make_zoo(reference, root / "zoo", world=world.root, kinds=kinds, seed=args.seed)
    made = time.perf_counter() - started
    print(f"world, reference and {len(variants)} variants ready in {made:.0f} s ({root})")

    results: dict[str, list[dict[str, Any]]] = {}
    for set_name, attr in PROBE_SETS.items():
        rows = []
        for variant in variants:
            t0 = time.perf_counter()
            result = attest(
                AttestConfig(
                    model=str(variant.path),
                    reference=str(reference),
                    probes=str(getattr(world, attr)),
                    out=str(root / "runs" / set_name / variant.name),
                    seed=args.seed,
                    write_report=False,
                )
            )
            row = _row(variant, result.attestation)
            row["attest_seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(
                f"  [{set_name}] {variant.name}: {row['verdict']}, flagged "
                f"{row['flagged'] or 'nothing'} ({row['attest_seconds']} s)",
                file=sys.stderr,
            )
        results[set_name] = rows
    for set_name, rows in results.items():
        _print_table(set_name, rows)
    if args.json:
        payload = {
            "size": args.size,
            "seed": args.seed,
            "results": results,
            "rates": {k: _rates(v) for k, v in results.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
