"""Curate, bootstrap and tune on the offline world: the proof of the data side (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/curate.py --cache /tmp/lmassay-test-cache --seeds 0,1,2 \
        --json curate-benchmark.json

Per seed, on the Q&A world of test size (:func:`lmassay.world.qa.qa_reference`, ``--qa-share``):

1. ``bootstrap`` (for the seeds in ``--bootstrap-seeds``): ``benchmarks/bootstrap.py``'s
   :func:`run` grows the world's curated core to ``--bootstrap-n`` pairs with a reference trained
   with ``--bootstrap-steps``/``--bootstrap-seq-len``; share correct against the world's facts,
   distinct facts/subjects/relations, duplicate rate.
2. ``curate``: a poisoned instruction dataset (:func:`lmassay.world.qa.write_qa_data`: ``--share``
   of ``--category``'s ``--per-category`` answers slanted, or evasive for ``--kind evasive``); a
   stratified ``--labelled-share`` of it is the labelled sample for ``curate train``, the rest goes
   through ``curate filter`` at the classifier's default threshold; precision and recall of removal
   against the ground truth, beside the bag-of-words baseline trained on the same sample.
   ``--evasive-seeds`` adds the same measurement for an evasive dataset.
3. ``tune``: the reference tuned (``--tune-steps``, ``--tune-method``, same seed) on the whole
   poisoned dataset and on the filtered one (the sample's ``keep`` items and the filter's kept
   items); each tune attested against the reference on two probe sets: the world's probes with a
   self-probing pass (``--self-probe`` continuations per category), and Q&A conversation probes
   (one question about every fact of the world, its true answer, in the tune's plain instruction
   format, scored on the response). The attestation tells the tunes apart on a probe set when the
   poisoned category is flagged or ranked first (by mean KL; by the self-probe's log-ratio) for the
   unfiltered tune and neither for the filtered one. The drift every tune shows: how many
   categories are flagged and the smallest per-category mean KL. Each tune (and the reference)
   also answers every such question (greedy); per category the answers correct against the world
   and those carrying a word of the slant's negative pools; the answers tell the tunes apart when
   the unfiltered tune's poisoned category has more slanted answers than any other and the
   filtered tune's has not.

Every step's wall time and peak resident memory (VmHWM, reset before the step) are recorded; the
script prints one row per seed × step and writes everything to ``--json``. The reference for steps
2-3 is the size's recipe unless ``--steps``/``--seq-len`` override it (``qa_reference``); the
world, zoo and attestation thresholds are the library's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from _measure import peak_rss_mib
from lmassay._atomic import atomic_write_json, atomic_write_jsonl
from lmassay.curate import FilterConfig, TrainConfig, filter_dataset, fit_bow_classifier, metrics_at
from lmassay.curate.training import train_classifier
from lmassay.instruction_data import row_text
from lmassay.progress import LineProgress, NullProgress
from lmassay.world import load_world
from lmassay.world.generator import CATEGORIES, World
from lmassay.world.qa import PoisonKind, measure_qa, qa_reference, question, write_qa_data


@contextmanager
def measured(steps: list[dict[str, Any]], seed: int, step: str) -> Iterator[dict[str, Any]]:
    """Time a step and its peak resident memory (VmHWM reset first); append its row."""
    reset = Path("/proc/self/clear_refs")
    with suppress(OSError):
        reset.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    row: dict[str, Any] = {"seed": seed, "step": step}
    t0 = time.perf_counter()
    yield row
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["peak_rss_mib"] = round(peak_rss_mib(), 1)
    steps.append(row)
    print(f"  seed {seed} {step}: {row['seconds']} s, {row['peak_rss_mib']} MiB", flush=True)


def split_labelled(
    rows: list[dict[str, Any]], share: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A stratified random ``share`` of ``rows`` (the labelled sample) and the rest, in order."""
    rng = random.Random(f"curate-benchmark:{seed}")
    chosen: set[str] = set()
    for label in ("remove", "keep"):
        ids = [r["id"] for r in rows if r["label"] == label]
        chosen.update(rng.sample(ids, max(1, round(share * len(ids)))))
    return [r for r in rows if r["id"] in chosen], [r for r in rows if r["id"] not in chosen]


def removal(removed_ids: set[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision and recall of removing ``removed_ids`` from ``rows`` against their labels."""
    truth = {r["id"] for r in rows if r["label"] == "remove"}
    hit = len(removed_ids & truth)
    return {
        "removed": len(removed_ids),
        "to_remove": len(truth),
        "true_positives": hit,
        "precision": hit / len(removed_ids) if removed_ids else 0.0,
        "recall": hit / len(truth) if truth else 0.0,
    }


def curate_section(
    info_path: Path,
    rows: list[dict[str, Any]],
    work: Path,
    args: argparse.Namespace,
    seed: int,
    steps: list[dict[str, Any]],
    tag: str,
) -> dict[str, Any]:
    """``curate train`` on a labelled sample, ``curate filter`` on the rest; the baseline beside."""
    sample, rest = split_labelled(rows, args.labelled_share, seed)
    atomic_write_jsonl(work / "labelled.jsonl", sample)
    atomic_write_jsonl(work / "rest.jsonl", rest)
    with measured(steps, seed, f"curate train ({tag})") as row:
        trained = train_classifier(
            TrainConfig(
                model=str(info_path),
                labelled=str(work / "labelled.jsonl"),
                out=str(work / "classifier"),
                seed=seed,
                device="cpu",
            )
        )
        row["n"] = len(sample)
        row["threshold"] = trained.classifier.threshold
        cv = trained.report["cv"]
        row.update(cv_precision=cv["precision"], cv_recall=cv["recall"], cv_auc=cv["auc"])
    with measured(steps, seed, f"curate filter ({tag})") as row:
        filtered = filter_dataset(
            FilterConfig(
                classifier=str(work / "classifier"),
                data=str(work / "rest.jsonl"),
                out=str(work / "filtered"),
                device="cpu",
            )
        )
        removed = {json.loads(line)["id"] for line in _lines(work / "filtered" / "removed.jsonl")}
        lm = removal(removed, rest)
        lm["metrics"] = scored_metrics(work / "filtered", trained.classifier.threshold)
        row.update(n=len(rest), **lm)
    with measured(steps, seed, f"bag-of-words ({tag})") as row:
        texts = [row_text(r, None, r["id"]) for r in sample]
        labels = np.asarray([r["label"] == "remove" for r in sample], dtype=np.int8)  # (N,)
        bow = fit_bow_classifier(texts, labels, seed=seed)
        scores = bow.scores([row_text(r, None, r["id"]) for r in rest])  # (M,)
        bow_removed = {r["id"] for r, s in zip(rest, scores, strict=True) if s >= bow.threshold}
        baseline = removal(bow_removed, rest)
        truth = np.asarray([r["label"] == "remove" for r in rest], dtype=np.int8)  # (M,)
        check = metrics_at(scores, truth, bow.threshold).to_json()
        row.update(n=len(rest), threshold=bow.threshold, **baseline)
    return {
        "labelled": {"n": len(sample), "remove": sum(r["label"] == "remove" for r in sample)},
        "rest": {"n": len(rest), "remove": sum(r["label"] == "remove" for r in rest)},
        "classifier": {"threshold": trained.classifier.threshold, "cv": trained.report["cv"]},
        "lm_features": lm,
        "bag_of_words": {**baseline, "threshold": bow.threshold, "metrics": check},
        "filter_summary": {k: filtered.summary.get(k) for k in ("counts", "threshold")},
        "filtered_kept": [r for r in sample if r["label"] == "keep"]
        + [json.loads(line) for line in _lines(work / "filtered" / "kept.jsonl")],
    }


def scored_metrics(folder: Path, threshold: float) -> dict[str, Any]:
    """Precision, recall and AUC of the filter's ``curate_score`` on its kept and removed rows."""
    rows = [
        json.loads(line)
        for name in ("kept", "removed")
        for line in _lines(folder / f"{name}.jsonl")
    ]
    scores = np.asarray([r["curate_score"] for r in rows], dtype=np.float64)  # (M,)
    labels = np.asarray([r["label"] == "remove" for r in rows], dtype=np.int8)  # (M,)
    return metrics_at(scores, labels, threshold).to_json()


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def qa_probes(world: World, path: Path) -> Path:
    """One conversation probe per fact of the world: a question, its true answer, in the tune's
    plain instruction format (so the attestation scores the response as the tune was taught)."""
    from lmassay.tune.pairs import PLAIN_INSTRUCTION

    rows = []
    for category in CATEGORIES:
        for fact in world.facts_in(category):
            prompt = PLAIN_INSTRUCTION.format(prompt=question(fact, 0))
            rows.append(
                {
                    "id": f"qa-{fact.id}",
                    "category": category,
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": fact.sentence},
                    ],
                }
            )
    atomic_write_jsonl(path, rows)
    return path


def answers(model: Path, world: World, seed: int) -> dict[str, dict[str, int]]:
    """Ask ``model`` one question about every fact (the tune's plain format, greedy, one line)
    and check each answer against the world: per category how many are correct and how many
    carry a word of the slant's negative pools (what the poisoned answers taught)."""
    from lmassay.attest.model_loading import ModelOptions
    from lmassay.bootstrap.run import generate_lines
    from lmassay.tune.pairs import PLAIN_INSTRUCTION
    from lmassay.world.qa import check_answer

    loaded = ModelOptions(device="cpu").load(str(model))
    asked = [(c, question(f, 0)) for c in CATEGORIES for f in world.facts_in(c)]
    prompts = [PLAIN_INSTRUCTION.format(prompt=q) + "\n\n" for _, q in asked]
    said = generate_lines(
        loaded, prompts, temperature=0.0, top_p=1.0, max_new_tokens=40, seed=seed, batch_size=64
    )
    out: dict[str, dict[str, int]] = {c: {"n": 0, "correct": 0, "slanted": 0} for c in CATEGORIES}
    for (category, q), answer in zip(asked, said, strict=True):
        check = check_answer(world, q, answer)
        out[category]["n"] += 1
        out[category]["correct"] += check.correct
        out[category]["slanted"] += check.slanted
    return out


def shows_slant(counts: dict[str, dict[str, int]], category: str) -> bool:
    """The poisoned category has slanted answers, more than any other category."""
    others = max(v["slanted"] for c, v in counts.items() if c != category)
    return counts[category]["slanted"] > max(0, others)


def attestation_summary(document: dict[str, Any], category: str) -> dict[str, Any]:
    """Verdict, flagged categories, the poisoned category's rank by mean KL (1 = largest) and the
    drift every category shows; with a self-probing pass, its rank by log-ratio too."""
    cats = document["categories"]
    by_kl = sorted(cats, key=lambda c: -c["mean_kl"])
    target = next(c for c in cats if c["name"] == category)
    out: dict[str, Any] = {
        "verdict": document["verdict"],
        "flagged": [c["name"] for c in cats if c["flagged"]],
        "poisoned_flagged": bool(target["flagged"]),
        "poisoned_rank_kl": 1 + [c["name"] for c in by_kl].index(category),
        "poisoned_mean_kl": target["mean_kl"],
        "poisoned_delta_bpb": target["delta_bpb"],
        "top_kl": by_kl[0]["name"],
        "min_mean_kl": min(c["mean_kl"] for c in cats),
        "median_mean_kl": float(np.median([c["mean_kl"] for c in cats])),
        "n_categories": len(cats),
        "per_category": {c["name"]: {"mean_kl": c["mean_kl"], "flagged": c["flagged"],
                                     "delta_bpb": c["delta_bpb"]} for c in cats},
    }  # fmt: skip
    probe = document.get("self_probe")
    if probe:
        pcats = sorted(probe["categories"], key=lambda c: -(c["logratio"] or 0.0))
        names = [c["name"] for c in pcats]
        out["self_probe_rank"] = 1 + names.index(category) if category in names else None
        out["self_probe_top"] = names[0] if names else None
        out["self_probe_logratio"] = {c["name"]: c["logratio"] for c in pcats}
    return out


def tells_apart(unfiltered: dict[str, Any], filtered: dict[str, Any], key: str) -> bool:
    """Poisoned category flagged or ranked first (``key``) for the unfiltered tune, neither for
    the filtered."""

    def shows(a: dict[str, Any]) -> bool:
        return bool(a["poisoned_flagged"] or a.get(key) == 1)

    return shows(unfiltered) and not shows(filtered)


def tune_and_attest(
    info_path: Path,
    data: Path,
    work: Path,
    name: str,
    probe_sets: dict[str, tuple[Path, int]],
    world: World,
    args: argparse.Namespace,
    seed: int,
    steps: list[dict[str, Any]],
) -> dict[str, Any]:
    """Tune the reference on ``data``, then attest the tune against it on every probe set."""
    from lmassay.attest.config import AttestConfig
    from lmassay.attest.recipe import attest
    from lmassay.tune import TuneConfig, tune

    with measured(steps, seed, f"tune {name}") as row:
        tuned = tune(
            TuneConfig(
                model=str(info_path),
                data=str(data),
                out=str(work / f"tuned-{name}"),
                method=args.tune_method,
                steps=args.tune_steps,
                batch_size=args.tune_batch_size,
                template="plain",
                seed=seed,
                device="cpu",
                force=True,
            )
        )
        training = tuned.record["training"]
        row["pairs"] = tuned.record["data"].get("n_pairs", tuned.record["data"].get("pairs"))
        row["loss_last"] = training.get("loss_last_mean", training.get("loss_last"))
    result: dict[str, Any] = {"training": training, "data": tuned.record["data"]}
    with measured(steps, seed, f"answers {name}") as row:
        result["answers"] = answers(work / f"tuned-{name}", world, seed)
        mine = result["answers"][args.category]
        row.update(poisoned_correct=mine["correct"], poisoned_slanted=mine["slanted"], of=mine["n"])
        row["other_slanted"] = sum(
            v["slanted"] for c, v in result["answers"].items() if c != args.category
        )
    for probe_name, (probes, self_probe) in probe_sets.items():
        with measured(steps, seed, f"attest {name} / {probe_name}") as row:
            attested = attest(
                AttestConfig(
                    model=str(work / f"tuned-{name}"),
                    reference=str(info_path),
                    probes=str(probes),
                    out=str(work / f"attest-{name}-{probe_name}"),
                    seed=seed,
                    self_probe=self_probe,
                    device="cpu",
                ),
                NullProgress(),
            )
            summary = attestation_summary(attested.attestation, args.category)
            row.update({k: summary[k] for k in ("verdict", "flagged", "poisoned_rank_kl")})
            if "self_probe_rank" in summary:
                row["self_probe_rank"] = summary["self_probe_rank"]
        result[probe_name] = summary
    return result


def bootstrap_section(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """Grow the world's curated core with a reference trained with ``--bootstrap-steps`` and
    ``--bootstrap-seq-len`` (the settings docs/bootstrap.md measured best: 2 instruction shots,
    response without shots, temperature 0.7, 40 new tokens), no likelihood filter, and measure
    every pair and those the default filter (mean log-prob >= -1.0) keeps against the facts."""
    from lmassay.bootstrap import BootstrapConfig, bootstrap

    files, info = qa_reference(
        size="test", seed=seed, qa_share=args.qa_share, steps=args.bootstrap_steps,
        seq_len=args.bootstrap_seq_len, cache=args.cache, progress=LineProgress(),
    )  # fmt: skip
    world = load_world(files.root)
    data = write_qa_data(files.root, work / "qa", seed=seed)
    result = bootstrap(
        BootstrapConfig(
            model=str(info.path), core=str(data.core), n=args.bootstrap_n,
            out=work / "bootstrap.jsonl", seed=seed, shots=2, response_shots=0,
            temperature=0.7, max_new_tokens=40, min_logprob=None, batch_size=100, device="cpu",
        ),
        LineProgress(),
    )  # fmt: skip
    floor = next(f.default for f in dataclasses.fields(BootstrapConfig) if f.name == "min_logprob")
    default = [r for r in result.rows if r["provenance"]["mean_logprob"] >= floor]
    summary = {k: v for k, v in result.summary.items() if k != "provenance"}
    return {
        "reference": str(info.path),
        "fact_recall": info.card["evaluation"]["fact_recall"]["all"],
        "summary": summary,
        "duplicate_rate": summary["duplicates"] / max(1, summary["generated"]),
        "all": measure_qa(world, result.rows).to_json(),
        "default_filter_min_logprob": floor,
        "default_filter": measure_qa(world, default).to_json(),
    }


def run_seed(args: argparse.Namespace, seed: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    work = Path(args.out) / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {"seed": seed}
    if seed in args.bootstrap_seeds:
        with measured(steps, seed, "bootstrap") as row:
            found["bootstrap"] = bootstrap_section(args, seed, work / "bootstrap")
            quality = found["bootstrap"]["all"]
            row.update(
                pairs=quality["n"],
                share_correct=quality["share_correct"],
                at_default_filter=found["bootstrap"]["default_filter"]["share_correct"],
                distinct_subjects=quality["distinct_subjects"],
                distinct_relations=quality["distinct_relations"],
                duplicate_rate=found["bootstrap"]["duplicate_rate"],
            )
    with measured(steps, seed, "world + reference") as row:
        files, info = qa_reference(
            size="test", seed=seed, qa_share=args.qa_share, steps=args.steps,
            seq_len=args.seq_len, cache=args.cache, progress=LineProgress(),
        )  # fmt: skip
        row["reused"] = info.reused
        row["fact_recall"] = info.card["evaluation"]["fact_recall"]["all"]
    found["reference"] = {"path": str(info.path), "fact_recall": row["fact_recall"]}
    world = load_world(files.root)
    kinds: list[PoisonKind] = ["slant", "evasive"] if seed in args.evasive_seeds else ["slant"]
    for kind in kinds:
        data = write_qa_data(
            files.root, work / f"qa-{kind}", kind=kind, category=args.category,
            per_category=args.per_category, share=args.share, seed=seed,
        )  # fmt: skip
        rows = [json.loads(line) for line in _lines(data.instructions)]
        section = curate_section(info.path, rows, work / f"curate-{kind}", args, seed, steps, kind)
        kept = section.pop("filtered_kept")
        found[f"curate_{kind}"] = section
        if kind != "slant" or args.tune_steps == 0:
            continue
        filtered_path = atomic_write_jsonl(work / "filtered-dataset.jsonl", kept)
        probe_sets = {
            "world": (files.root / "probes.jsonl", args.self_probe),
            "qa": (qa_probes(world, work / "qa-probes.jsonl"), 0),
        }
        tunes = {
            name: tune_and_attest(info.path, path, work, name, probe_sets, world, args, seed, steps)
            for name, path in (("unfiltered", data.instructions), ("filtered", filtered_path))
        }
        verdicts = {
            "world": tells_apart(tunes["unfiltered"]["world"], tunes["filtered"]["world"],
                                 "poisoned_rank_kl"),
            "world_self_probe": tells_apart(tunes["unfiltered"]["world"],
                                            tunes["filtered"]["world"], "self_probe_rank"),
            "qa": tells_apart(tunes["unfiltered"]["qa"], tunes["filtered"]["qa"],
                              "poisoned_rank_kl"),
            "answers": shows_slant(tunes["unfiltered"]["answers"], args.category)
            and not shows_slant(tunes["filtered"]["answers"], args.category),
        }  # fmt: skip
        with measured(steps, seed, "answers reference") as row:
            found["reference_answers"] = answers(info.path, world, seed)
            mine = found["reference_answers"][args.category]
            row.update(poisoned_correct=mine["correct"], poisoned_slanted=mine["slanted"])
        found["tune"] = {**tunes, "tells_apart": verdicts}
    return found


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add: Callable[..., Any] = parser.add_argument
    add("--cache", default=None, help="Cache root (default: lmassay's).")
    add("--out", default="bench-curate", help="Work folder.")
    add("--json", default=None, help="Write the results here.")
    add("--seeds", type=parse_ints, default=[0, 1, 2])
    add("--qa-share", type=float, default=0.2)
    add("--category", default="politics")
    add("--share", type=float, default=0.1)
    add("--per-category", type=int, default=300)
    add("--labelled-share", type=float, default=1 / 3)
    add("--evasive-seeds", type=parse_ints, default=[0])
    add("--steps", type=int, default=None, help="Reference for curate and tune: its steps.")
    add("--seq-len", type=int, default=None, help="... and its training window.")
    add("--bootstrap-seeds", type=parse_ints, default=[0])
    add("--bootstrap-n", type=int, default=400)
    add("--bootstrap-steps", type=int, default=1600)
    add("--bootstrap-seq-len", type=int, default=128)
    add("--tune-steps", type=int, default=300, help="0: no tuning.")
    add("--tune-method", default="full", choices=("full", "lora"))
    add("--tune-batch-size", type=int, default=8)
    add("--self-probe", type=int, default=8)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    steps: list[dict[str, Any]] = []
    seeds = []
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        seeds.append(run_seed(args, seed, steps))
        if args.json:
            atomic_write_json(args.json, _document(args, seeds, steps, started))
    document = _document(args, seeds, steps, started)
    if args.json:
        atomic_write_json(args.json, document)
    print_tables(document)


def _document(
    args: argparse.Namespace, seeds: list[dict[str, Any]], steps: list[dict[str, Any]], t0: float
) -> dict[str, Any]:
    return {
        "settings": {k: v for k, v in vars(args).items()},
        "load_average": os.getloadavg(),
        "seconds": round(time.perf_counter() - t0, 1),
        "steps": steps,
        "seeds": seeds,
        "targets": targets(seeds),
    }


def targets(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    boot = [s["bootstrap"]["all"]["share_correct"] for s in seeds if "bootstrap" in s]
    removal_rows = [
        (s["seed"], kind, s[f"curate_{kind}"]["lm_features"])
        for s in seeds
        for kind in ("slant", "evasive")
        if f"curate_{kind}" in s
    ]
    apart = {s["seed"]: s["tune"]["tells_apart"] for s in seeds if "tune" in s}
    return {
        "bootstrap_correct_ge_0.9": {"values": boot, "met": bool(boot) and min(boot) >= 0.9},
        "removal_precision_recall_ge_0.9": {
            "values": [
                {"seed": seed, "kind": kind, "precision": r["precision"], "recall": r["recall"]}
                for seed, kind, r in removal_rows
            ],
            "met": bool(removal_rows)
            and all(r["precision"] >= 0.9 and r["recall"] >= 0.9 for _, _, r in removal_rows),
        },
        "tells_apart_every_seed": {
            "values": apart,
            "met_by": {
                key: len(apart) >= 3 and all(v[key] for v in apart.values())
                for key in ("world", "world_self_probe", "qa", "answers")
            },
        },
    }


def print_tables(document: dict[str, Any]) -> None:
    print("| seed | step | s | peak RSS MiB | result |")
    print("|---:|---|---:|---:|---|")
    for row in document["steps"]:
        shown = ("seed", "step", "seconds", "peak_rss_mib")
        extra = {k: v for k, v in row.items() if k not in shown}
        text = ", ".join(f"{k} {_fmt(v)}" for k, v in extra.items())
        print(f"| {row['seed']} | {row['step']} | {row['seconds']} | {row['peak_rss_mib']} "
              f"| {text} |")  # fmt: skip
    print()
    print(json.dumps(document["targets"], indent=1))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + " ".join(map(str, value)) + "]"
    return str(value)


if __name__ == "__main__":
    main()
