"""Repair benchmark: repair each flagged tamper-zoo variant in each mode and tabulate before/after.

    python benchmarks/repair.py                      # demo-size world, reference and zoo (long, cold)
    python benchmarks/repair.py --size test          # tiny, for a smoke run (a few minutes)
    python benchmarks/repair.py --world real --size test   # the real-text world (Debian text)

Makes (or reuses, in the demo's cache: ``--cache`` or ``$LMASSAY_CACHE``) the world, its reference
and the tamper variants, attests each variant against the reference on the world's probe split,
and repairs every variant whose attestation flags a category, once per mode (``--modes``) and
repair-data scope (``--scopes``), each with ``lmassay repair``'s defaults:

* ``all``: the world's whole training split;
* ``flagged``: only the flagged categories' training text (what a user most likely has at hand:
  more of the topic that went wrong). Wide fine-tuning is not run on it (it would be narrow
  fine-tuning without an anchor).

Either is written without the texts that share a word 13-gram with a probe (the generated world's
training split has none; the real-text world's has a few dictionary entries).

``--world generated`` (default) is the generated multi-topic world (:mod:`lmassay.world`);
``--world real`` the real-text world of public-domain Debian text
(:func:`lmassay.world.make_real_world`, the packages cached under ``debs/`` of the cache root,
or ``--debs``), whose zoo has the suppression and slant recipes
(:mod:`lmassay.world.zoo.real_text_recipes`). The real-text world, its reference and zoo live under
``real/`` of the same cache root as the generated world's, so the detection benchmark and this one
share them. Each repair is judged by ``lmassay repair``'s own re-attestation on the same probes.

One row per (kind, mode, scope): the repaired category's mean KL (nats/token, KL(reference ‖
model)) before → after and its drop, its effect (KL minus the median of the other categories)
before → after, the collateral change (the largest change of another category's mean KL, and any
category flagged after), the verdict after, whether the repair succeeded (back under the noise
floor, nothing else flagged), the steps run, the step whose weights were kept, and the wall time.
Variants with nothing flagged are listed as "nothing to repair". ``--json`` writes every row.
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

from _worlds import bench_world
from lmassay.attest import AttestConfig, attest
from lmassay.attest.probes import load_probes
from lmassay.repair import RepairConfig, repair
from lmassay.repair.data import sharing_a_probe_shingle
from lmassay.world.zoo import make_variant

TAMPER_KINDS = ("suppression", "slant", "fact-finetune", "fact-rome", "backdoor")
REAL_TAMPER_KINDS = ("suppression", "slant")  # the zoo's recipes that apply to real text
SCOPES = ("flagged", "all")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=("generated", "real"), default="generated")
    parser.add_argument("--size", choices=("test", "demo"), default="demo")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: demo's)")
    parser.add_argument("--debs", type=Path, default=None, help="real world: .deb cache folder")
    parser.add_argument(
        "--real-reference",
        type=Path,
        default=None,
        help="real world: an existing real-text reference (its world from its card) instead of "
        "training one (about 35 minutes at demo size on a busy core)",
    )
    parser.add_argument("--work", type=Path, default=None, help="where attestations and repairs go")
    parser.add_argument("--kinds", default=None, help="default: the world's tamper kinds")
    parser.add_argument("--modes", default="distill,narrow,wide")
    parser.add_argument("--scopes", default=",".join(SCOPES), help="repair data: flagged,all")
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--steps", type=int, default=None, help="default: lmassay repair's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    return parser.parse_args(argv)


def _row(kind: str, mode: str, scope: str, result: Any, seconds: float) -> dict[str, Any]:
    outcome = result.record["outcome"]
    rows = {r["name"]: r for r in outcome["categories"]}
    repaired = outcome["repaired"]
    collateral = [r for r in outcome["categories"] if r["role"] == "collateral"]
    worst = max(collateral, key=lambda r: abs(r["mean_kl_change"] or 0.0))
    training = result.record["training"]
    return {
        "kind": kind,
        "mode": mode,
        "scope": scope,
        "categories": [
            {
                "name": name,
                "kl_before": rows[name]["mean_kl_before"],
                "kl_after": rows[name]["mean_kl_after"],
                "kl_drop": _drop(rows[name]["mean_kl_before"], rows[name]["mean_kl_after"]),
                "effect_before": rows[name]["effect_before"],
                "effect_after": rows[name]["effect_after"],
            }
            for name in repaired
        ],
        "collateral_max_change": worst["mean_kl_change"],
        "collateral_category": worst["name"],
        "flagged_after": outcome["flagged_after"],
        "newly_flagged": outcome["newly_flagged"],
        "verdict_after": outcome["verdict_after"],
        "success": outcome["success"],
        "message": outcome["message"],
        "steps_run": training["steps_run"],
        "kept_step": training["best_step"] if training["restored_best"] else training["steps_run"],
        "n_sampled": result.record["data"]["n_sampled_from_reference"],
        "seconds": round(seconds, 1),
    }


def _drop(before: float | None, after: float | None) -> float | None:
    return (before - after) / before if before and after is not None else None


def _fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| kind | mode | data | category: KL before → after (drop) | effect before → after | "
        "collateral ΔKL (worst) | flagged after | verdict after | repaired | steps (kept) | time |\n"
        "|---|---|---|---|---|---|---|---|---|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['kind']} | — | — | {r['skipped']} | | | | | | | |")
            continue
        kl = "; ".join(
            f"{c['name']}: {_fmt(c['kl_before'])} → {_fmt(c['kl_after'])} "
            f"({'—' if c['kl_drop'] is None else format(c['kl_drop'], '.0%')})"
            for c in r["categories"]
        )
        effect = "; ".join(
            f"{_fmt(c['effect_before'], signed=True)} → {_fmt(c['effect_after'], signed=True)}"
            for c in r["categories"]
        )
        lines.append(
            f"| {r['kind']} | {r['mode']} | {r['scope']} | {kl} | {effect} | "
            f"{_fmt(r['collateral_max_change'], signed=True)} ({r['collateral_category']}) | "
            f"{', '.join(r['flagged_after']) or 'none'} | {r['verdict_after']} | "
            f"{'yes' if r['success'] else 'no'} | {r['steps_run']} ({r['kept_step']}) | "
            f"{r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def _repair_data(world: Any, categories: list[str] | None, out: Path) -> Path:
    """The training split (of ``categories`` alone, or all) without the texts that share a word
    13-gram with a probe: ``lmassay repair`` refuses data that contains a judging probe, and on
    real text a few training paragraphs do (dictionary entries with the same wording)."""
    rows = [
        json.loads(line)
        for line in world.train.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    if categories is not None:
        rows = [row for row in rows if row["category"] in categories]
    probes = load_probes(str(world.probes), min_per_category=0).samples
    drop = sharing_a_probe_shingle(probes, [row["text"] for row in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = [json.dumps(row) for i, row in enumerate(rows) if i not in drop]
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    print(f"  repair data {out.name}: {len(kept)} texts ({len(drop)} dropped)", file=sys.stderr)
    return out


def _repairs(
    args: argparse.Namespace,
    kind: str,
    variant: Any,
    reference: Path,
    world: Any,
    work: Path,
    rows: list[dict[str, Any]],
) -> None:
    """Attest ``variant``; repair it per mode and scope when the attestation flags a category."""
    t1 = time.perf_counter()
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
        return
    data = {
        "all": _repair_data(world, None, work / kind / "data-all.jsonl"),
        "flagged": _repair_data(world, flagged, work / kind / "data-flagged.jsonl"),
    }
    for mode in [m for m in args.modes.split(",") if m]:
        for scope in [s for s in args.scopes.split(",") if s]:
            if mode == "wide" and scope == "flagged":
                continue
            t2 = time.perf_counter()
            extra = {"steps": args.steps} if args.steps else {}
            result = repair(
                RepairConfig(
                    model=str(variant.path),
                    attestation=str(work / kind / "before"),
                    data=str(data[scope]),
                    out=str(work / kind / f"{mode}-{scope}-{args.method}"),
                    mode=mode,  # type: ignore[arg-type]
                    method=args.method,
                    device="cpu",
                    seed=args.seed,
                    force=True,
                    restart=True,
                    **extra,
                )
            )
            row = _row(kind, mode, scope, result, time.perf_counter() - t2)
            rows.append(row)
            print(f"  {mode}/{scope}: {row['message']} ({row['seconds']} s)", file=sys.stderr)
            print(_table([row]).splitlines()[-1], file=sys.stderr)
            if args.json:  # after every repair, so a long run that is stopped keeps its rows
                args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    made = bench_world(
        args.world,
        size=args.size,
        seed=args.seed,
        cache=args.cache,
        debs=args.debs,
        real_reference=args.real_reference,
    )
    world, reference, zoo = made.files, made.reference, made.zoo
    work = args.work or made.base / "bench-repair"
    print(
        f"world and reference ready in {time.perf_counter() - t0:.0f} s ({zoo.parent})",
        file=sys.stderr,
    )
    default_kinds = REAL_TAMPER_KINDS if args.world == "real" else TAMPER_KINDS
    kinds = [k for k in (args.kinds or ",".join(default_kinds)).split(",") if k]
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        variant = make_variant(kind, reference, zoo / kind, seed=args.seed)
        _repairs(args, kind, variant, reference, world, work, rows)
    print(
        f"\nrepair benchmark, {args.world} world, size {args.size}, method {args.method}, "
        f"seed {args.seed}\n"
    )
    print(_table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
