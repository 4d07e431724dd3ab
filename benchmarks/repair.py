"""Repair benchmark: repair each flagged tamper-zoo variant in each mode and tabulate before/after.

    python benchmarks/repair.py                  # demo-size world, reference and zoo (long, cold)
    python benchmarks/repair.py --size test      # tiny, for a smoke run (a few minutes)

Makes (or reuses, in the demo's cache: ``--cache`` or ``$LMASSAY_CACHE``) the offline world, its
reference and the tamper variants, attests each variant against the reference on the world's probe
split, and repairs every variant whose attestation flags a category, once per mode
(``--modes``), with the world's training split as repair data (it shares no sentence with the
probes). Each repair is judged by ``lmassay repair``'s own re-attestation on the same probes.

One row per (kind, mode): the repaired category's mean KL (nats/token, KL(reference ‖ model)) and
effect (its KL minus the median of the other categories) before and after, the collateral change
(the largest change of another category's mean KL, and any category newly flagged), the verdict
after, whether the repair succeeded (back under the noise floor, nothing else flagged), the steps
run and the wall time. Variants with nothing flagged are listed as "nothing to repair". ``--json``
writes every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from lmassay.attest import AttestConfig, attest
from lmassay.repair import RepairConfig, repair
from lmassay.world import make_world
from lmassay.world.demo import DemoConfig
from lmassay.world.reference import train_reference
from lmassay.world.zoo import make_variant

TAMPER_KINDS = ("suppression", "slant", "fact-finetune", "fact-rome", "backdoor")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("test", "demo"), default="demo")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: demo's)")
    parser.add_argument("--work", type=Path, default=None, help="where attestations and repairs go")
    parser.add_argument("--kinds", default=",".join(TAMPER_KINDS))
    parser.add_argument("--modes", default="distill,narrow,wide")
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--steps", type=int, default=None, help="default: lmassay repair's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    return parser.parse_args(argv)


def _level(att: dict[str, Any], name: str, key: str) -> float | None:
    for category in att["categories"]:
        if category["name"] == name:
            value = category.get(key)
            return float(value) if isinstance(value, int | float) else None
    return None


def _row(kind: str, mode: str, result: Any, seconds: float) -> dict[str, Any]:
    outcome = result.record["outcome"]
    rows = {r["name"]: r for r in outcome["categories"]}
    repaired = outcome["repaired"][0]
    collateral = [r for r in outcome["categories"] if r["role"] == "collateral"]
    worst = max(collateral, key=lambda r: abs(r["mean_kl_change"] or 0.0))
    return {
        "kind": kind,
        "mode": mode,
        "category": repaired,
        "kl_before": rows[repaired]["mean_kl_before"],
        "kl_after": rows[repaired]["mean_kl_after"],
        "effect_before": rows[repaired]["effect_before"],
        "effect_after": rows[repaired]["effect_after"],
        "collateral_max_change": worst["mean_kl_change"],
        "collateral_category": worst["name"],
        "median_kl_after": result.attestation.attestation["summary"].get("baseline_level"),
        "newly_flagged": outcome["newly_flagged"],
        "verdict_after": outcome["verdict_after"],
        "success": outcome["success"],
        "steps_run": result.record["training"]["steps_run"],
        "seconds": round(seconds, 1),
    }


def _fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| kind | mode | category | KL before → after | effect before → after | "
        "collateral ΔKL (worst) | newly flagged | verdict after | repaired | steps | time |\n"
        "|---|---|---|---|---|---|---|---|---|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['kind']} | — | — | {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['kind']} | {r['mode']} | {r['category']} | "
            f"{_fmt(r['kl_before'])} → {_fmt(r['kl_after'])} | "
            f"{_fmt(r['effect_before'], signed=True)} → {_fmt(r['effect_after'], signed=True)} | "
            f"{_fmt(r['collateral_max_change'], signed=True)} ({r['collateral_category']}) | "
            f"{', '.join(r['newly_flagged']) or 'none'} | {r['verdict_after']} | "
            f"{'yes' if r['success'] else 'no'} | {r['steps_run']} | {r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DemoConfig(
        size=args.size, seed=args.seed, cache=str(args.cache) if args.cache else None
    )
    root = config.cache_root()
    work = args.work or root / "bench-repair"
    t0 = time.perf_counter()
    world = make_world(root / "world", seed=args.seed, size=args.size)
    reference = train_reference(world.root, root / "reference", size=args.size, seed=args.seed).path
    print(
        f"world and reference ready in {time.perf_counter() - t0:.0f} s ({root})", file=sys.stderr
    )
    kinds = [k for k in args.kinds.split(",") if k]
    modes = [m for m in args.modes.split(",") if m]
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        t1 = time.perf_counter()
        variant = make_variant(kind, reference, root / "zoo" / kind, seed=args.seed)
        before = attest(
            AttestConfig(
                model=str(variant.path),
                reference=str(reference),
                probes=str(world.probes),
                out=str(work / kind / "before"),
                device="cpu",
                write_report=False,
            )
        )
        flagged = before.attestation["flagged"]
        print(
            f"{kind}: made/reused and attested in {time.perf_counter() - t1:.0f} s; flagged "
            f"{flagged or 'nothing'}",
            file=sys.stderr,
        )
        if not flagged:
            rows.append({"kind": kind, "skipped": "nothing flagged: nothing to repair"})
            continue
        for mode in modes:
            t2 = time.perf_counter()
            extra = {"steps": args.steps} if args.steps else {}
            result = repair(
                RepairConfig(
                    model=str(variant.path),
                    attestation=str(work / kind / "before"),
                    data=str(world.train),
                    out=str(work / kind / f"{mode}-{args.method}"),
                    mode=mode,  # type: ignore[arg-type]
                    method=args.method,
                    device="cpu",
                    seed=args.seed,
                    force=True,
                    restart=True,
                    **extra,
                )
            )
            row = _row(kind, mode, result, time.perf_counter() - t2)
            rows.append(row)
            print(
                f"  {mode}: {result.record['outcome']['message']} ({row['seconds']} s)",
                file=sys.stderr,
            )
    print(f"\nrepair benchmark, size {args.size}, method {args.method}, seed {args.seed}\n")
    print(_table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
