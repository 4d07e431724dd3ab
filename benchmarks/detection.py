"""Detection power: attest every tamper-zoo variant against its reference, over several seeds.

    python benchmarks/detection.py                        # demo size, seeds 0 1 2 (hours cold on 2 cores)
    python benchmarks/detection.py --size test --seeds 0  # tiny, for a smoke run (minutes)
    python benchmarks/detection.py --world real --seeds 0 # the real-text world (Debian text)

For each seed it makes (or reuses, in the demo's cache: ``--cache`` or ``$LMASSAY_CACHE``) the
offline world, its reference and the tamper zoo (every kind with its ground truth), then attests
each variant once on the probes an auditor would run: the world's clean probe split and its
fact-touching probes together (``auditor_probes.jsonl``). ``--world real`` is the real-text world
of public-domain Debian text (``benchmarks/_worlds.py``: the same world, reference and zoo as
``benchmarks/repair.py --world real``, under ``real/`` of the cache root), attested on its clean
probe split (it has no facts); its zoo has
:data:`~lmassay.world.zoo.real_text_recipes.REAL_TEXT_KINDS` (suppression, slant and the
controls), the default of ``--kinds`` there. One row per (variant, seed): verdict,
flagged categories and the reason of each flag (``mean``: the category's level; ``sparse``: a few
of its samples; ``answer``: the answers its fact probes state), the rank of the true category as
the attestation ranks its findings (flagged categories first, by the smallest q-value of the
tests that flagged them, then the others by mean KL) and by mean KL alone, and the attestation's
wall time.

Then the rates the defaults are set from:

* **true positives** over the variants tampered on a known category;
* **false flags** over every (variant, category) pair that was not tampered: the untouched
  categories of the tampered variants and every category of the controls (resave, bf16, int8,
  continued training);
* **the permutation null**: for each attestation, the category labels of its samples are
  shuffled ``--null-rounds`` times and the mean test and the sparse test rerun with the default
  flagging rule (:func:`lmassay.attest.statistics.significance.compare_with_rest` and
  :func:`lmassay.attest.statistics.verdict.flag`) on the per-sample figures of samples.jsonl; the
  share of (shuffle, category) pairs flagged, per test, is the false-flag rate under a null with
  this data's own variation.

``--json`` writes every row and rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from _worlds import WORLD_KINDS, BenchWorld, bench_world
from lmassay.attest import AttestConfig, attest
from lmassay.attest.statistics.records import FlagRule, StatsConfig
from lmassay.attest.statistics.significance import compare_with_rest
from lmassay.attest.statistics.verdict import flag
from lmassay.world.zoo import make_zoo

CONTROLS_CONSISTENT = ("benign-resave", "benign-bf16", "benign-int8", "benign-continued")


def _auditor_probes(world: Any, root: Path) -> Path:
    """The clean probes and the fact probes in one file (what an auditor would run); each fact
    probe names its answer, the fact's object (worlds made before ``answer`` was written get it
    from facts.jsonl)."""
    path = root / "auditor_probes.jsonl"
    objects = {
        fact["id"]: fact["object"]
        for fact in map(json.loads, Path(world.facts).read_text().splitlines())
    }
    facts = []
    for line in Path(world.fact_probes).read_text().splitlines():
        row = json.loads(line)
        row.setdefault("answer", objects[row["fact_id"]])
        facts.append(json.dumps(row, ensure_ascii=False) + "\n")
    text = Path(world.probes).read_text() + "".join(facts)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _by_finding(categories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The categories as the attestation ranks its findings: flagged ones first, by the
    smallest q-value of the tests that flagged them, then the rest by mean KL."""

    def strength(c: dict[str, Any]) -> float:
        keys = {"mean": "q_value", "sparse": "sparse_q_value", "answer": "answer_q_value"}
        return min((c.get(keys[r]) or 1.0) for r in c.get("reasons") or ["mean"])

    return sorted(
        categories,
        key=lambda c: (
            not c["flagged"],
            strength(c) if c["flagged"] else 0.0,
            -(c["mean_kl"] or 0.0),
        ),
    )


def _row(variant: Any, seed: int, att: dict[str, Any], seconds: float) -> dict[str, Any]:
    truth = variant.ground_truth
    expected = truth.get("category")
    by_kl = sorted(att["categories"], key=lambda c: -(c["mean_kl"] or 0.0))
    levels = {c["name"]: c["mean_kl"] for c in att["categories"]}
    rank = rank_flagged = None
    if expected in levels:
        rank = 1 + [c["name"] for c in by_kl].index(expected)
        rank_flagged = 1 + [c["name"] for c in _by_finding(att["categories"])].index(expected)
    return {
        "variant": variant.name,
        "seed": seed,
        "kind": truth.get("kind"),
        "expected_category": expected,
        "expected_verdict": truth.get("expected"),
        "verdict": att["verdict"],
        "flagged": list(att["flagged"]),
        "reasons": {c["name"]: c.get("reasons", []) for c in att["categories"] if c["flagged"]},
        "rank_of_true": rank_flagged,
        "rank_of_true_by_kl": rank,
        "kl_true": levels.get(expected),
        "kl_median_others": statistics.median(v for k, v in levels.items() if k != expected)
        if levels
        else None,
        "weight_change": att["summary"].get("weight_change"),
        "categories": {c["name"]: c["flagged"] for c in att["categories"]},
        "attest_seconds": round(seconds, 1),
    }


def permutation_null(run_dir: Path, rounds: int, seed: int) -> dict[str, int]:
    """Flags under shuffled category labels, per test, from ``run_dir/samples.jsonl``: the
    mean, sparse and answer tests with the default rule and the default number of permutations
    (fewer would floor the permutation p-values above what the attestations reach)."""
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    mean = np.array([r["mean_kl"] for r in rows], dtype=np.float64)
    tail = np.array([r["tail_kl"] for r in rows], dtype=np.float64)
    drop = np.array(
        [np.nan if r.get("answer_drop") is None else r["answer_drop"] for r in rows],
        dtype=np.float64,
    )
    tokens = np.array([r["n_tokens"] for r in rows], dtype=np.float64)
    labels = np.array([r["category"] for r in rows])
    names = sorted(set(labels.tolist()))
    config = StatsConfig()
    rule = FlagRule.resolve("kl", config)
    rng = np.random.default_rng(seed)
    counts = {"pairs": 0, "mean": 0, "sparse": 0, "answer": 0}
    for r in range(rounds):
        shuffled = rng.permutation(labels)
        per = {n: mean[shuffled == n] for n in names}
        tails = {n: tail[shuffled == n] for n in names}
        answers = {n: drop[(shuffled == n) & ~np.isnan(drop)] for n in names}
        levels = {
            n: float(
                (mean[shuffled == n] * tokens[shuffled == n]).sum() / tokens[shuffled == n].sum()
            )
            for n in names
        }
        results = compare_with_rest(
            per,
            levels,
            names,
            tail=tails,
            answers=answers,
            n_permutations=config.n_permutations,
            seed=r,
        )
        flags = flag(results, names, rule)
        counts["pairs"] += len(names)
        for reasons in flags.reasons.values():
            for reason in reasons:
                counts[reason] += 1
    return counts


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tampered = [r for r in rows if r["expected_category"]]
    first = sum(r["expected_category"] in r["flagged"] and r["rank_of_true"] == 1 for r in tampered)
    hits = sum(r["expected_category"] in r["flagged"] for r in tampered)
    judged = tampered + [r for r in rows if r["expected_verdict"] == "consistent"]
    pairs = flags = 0
    for r in judged:
        for name, flagged in r["categories"].items():
            if name != r["expected_category"]:
                pairs += 1
                flags += bool(flagged)
    return {
        "n_tampered_with_category": len(tampered),
        "flagged_true": hits,
        "flagged_true_ranked_first": first,
        "n_untampered_pairs": pairs,
        "n_false_flags": flags,
    }


def _print(rows: list[dict[str, Any]], null: dict[str, int], cost: dict[str, float]) -> None:
    print(
        "\n| variant | seed | expected | verdict | flagged (reason) | rank of true (by mean KL) "
        "| weight change | time (s) |"
    )
    print("|---|---:|---|---|---|---:|---:|---:|")
    for r in rows:
        flagged = ", ".join(f"{n} ({'+'.join(r['reasons'].get(n, []))})" for n in r["flagged"])
        change = r["weight_change"]
        print(
            f"| {r['variant']} | {r['seed']} | {r['expected_category'] or r['expected_verdict']} | "
            f"{r['verdict']} | {flagged or '—'} | {r['rank_of_true'] or '—'} "
            f"({r['rank_of_true_by_kl'] or '—'}) | "
            f"{'—' if change is None else format(change, '.3f')} | {r['attest_seconds']} |"
        )
    rates = _rates(rows)
    print(
        f"\nTampered on a category: {rates['flagged_true']} of {rates['n_tampered_with_category']} "
        f"flagged in the true category, {rates['flagged_true_ranked_first']} of them ranked first. "
        f"False flags: {rates['n_false_flags']} of {rates['n_untampered_pairs']} untampered "
        "(variant, category) pairs."
    )
    pairs = max(null["pairs"], 1)
    print(
        f"Permutation null ({null['pairs']} shuffled (round, category) pairs): mean test "
        f"{null['mean'] / pairs:.4f}, sparse test {null['sparse'] / pairs:.4f}, answer test "
        f"{null.get('answer', 0) / pairs:.4f} flagged per "
        "category."
    )
    for kind in ("benign-other-seed", "backdoor"):
        verdicts = [f"seed {r['seed']}: {r['verdict']}" for r in rows if r["kind"] == kind]
        if verdicts:
            print(f"{kind}: " + "; ".join(verdicts))
    print(
        f"Attestation time: median {cost['median']:.1f} s per variant "
        f"(sparse test's permutations included)."
    )


def _attest_seed(
    made: BenchWorld, seed: int, kinds: list[str] | None, null_rounds: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Make (or reuse) the zoo of ``made`` and attest each variant: its rows and the null's counts.

    The generated world is attested on the auditor's probes (clean and fact probes together), the
    real-text world on its clean probe split (it has no facts)."""
    started = time.perf_counter()
    variants = make_zoo(made.reference, made.zoo, world=made.files.root, kinds=kinds, seed=seed)
    print(
        f"seed {seed}: {len(variants)} zoo variants ready in {time.perf_counter() - started:.0f} s "
        f"({made.zoo})",
        file=sys.stderr,
    )
    probes = (
        _auditor_probes(made.files, made.base) if made.kind == "generated" else made.files.probes
    )
    rows: list[dict[str, Any]] = []
    null: dict[str, int] = defaultdict(int)
    for variant in variants:
        run_dir = made.base / "runs" / "auditor" / variant.name
        t0 = time.perf_counter()
        result = attest(
            AttestConfig(
                model=str(variant.path),
                reference=str(made.reference),
                probes=str(probes),
                out=str(run_dir),
                seed=seed,
                write_report=False,
            )
        )
        row = _row(variant, seed, result.attestation, time.perf_counter() - t0)
        rows.append(row)
        if variant.name in (*CONTROLS_CONSISTENT, "suppression", "fact-rome"):
            for key, value in permutation_null(run_dir, null_rounds, seed).items():
                null[key] += value
        print(
            f"  seed {seed} {variant.name}: {row['verdict']}, flagged {row['flagged'] or 'nothing'} "
            f"{row['reasons'] or ''} ({row['attest_seconds']} s)",
            file=sys.stderr,
        )
    return rows, dict(null)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=WORLD_KINDS, default="generated")
    parser.add_argument("--size", choices=["demo", "test"], default="demo")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated world seeds")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--debs", type=Path, default=None, help="real world: .deb cache folder")
    parser.add_argument(
        "--kinds",
        default=None,
        help="comma-separated zoo kinds (default: all the world's; real text: REAL_TEXT_KINDS)",
    )
    parser.add_argument("--null-rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    rows: list[dict[str, Any]] = []
    null: dict[str, int] = defaultdict(int)
    kinds = args.kinds.split(",") if args.kinds else None
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        made = bench_world(args.world, size=args.size, seed=seed, cache=args.cache, debs=args.debs)
        print(
            f"seed {seed}: {args.world} world and reference ready in "
            f"{time.perf_counter() - started:.0f} s ({made.base})",
            file=sys.stderr,
        )
        seed_rows, seed_null = _attest_seed(made, seed, kinds, args.null_rounds)
        rows += seed_rows
        for key, value in seed_null.items():
            null[key] += value
    cost = {"median": statistics.median(r["attest_seconds"] for r in rows)}
    print(f"\ndetection benchmark, {args.world} world, size {args.size}, seeds {args.seeds}")
    _print(rows, dict(null), cost)
    if args.json:
        payload = {
            "world": args.world,
            "size": args.size,
            "seeds": args.seeds,
            "rows": rows,
            "rates": _rates(rows),
            "null": dict(null),
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
