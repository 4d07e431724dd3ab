"""``OUT/tune/report.md``, rendered from ``tune.json`` alone (so it can be re-rendered without
training): what was tuned on what, the loss curve, time and memory, and the drift from the base."""

from __future__ import annotations

import itertools
from typing import Any

from lmassay.report.markdown import fmt_num

CURVE_POINTS = 12
"""Rows of the loss-curve table: the mean loss of this many equal stretches of the steps."""


def loss_curve(losses: list[float], points: int = CURVE_POINTS) -> list[tuple[int, int, float]]:
    """``(first step, last step, mean loss)`` of ``points`` consecutive stretches of ``losses``
    (steps counted from 1), fewer when there are fewer steps."""
    n = len(losses)
    if n == 0:
        return []
    edges = sorted({round(i * n / min(points, n)) for i in range(min(points, n) + 1)})
    return [
        (start + 1, end, sum(losses[start:end]) / (end - start))
        for start, end in itertools.pairwise(edges)
    ]


def render_markdown(record: dict[str, Any]) -> str:
    """The report of one tune (``record``: the content of ``tune.json``)."""
    base, data, training = record["base"], record["data"], record["training"]
    memory = training["peak_memory_mib"]
    lora = training["lora"]
    lines = [
        "# lmassay tune",
        "",
        f"Base: `{base['name']}` (digest `{base['digest']['value'][:16]}`)  ",
        f"Data: `{data['source']}`"
        + (f" (sha256 `{data['digest']['value'][:16]}`)" if data["digest"] else "")
        + f": {data['n_examples']} of {data['n_pairs']} pairs trained on "
        f"({data['n_truncated']} cut at {training['max_length']} tokens, "
        f"{data['n_dropped']} left out), {data['n_target_tokens']} response tokens, "
        f"{data['template']} template  ",
        f"Tuned model: `{record['output']['path']}` ({record['output']['dtype']}, digest "
        f"`{record['output']['model_digest']['value'][:16]}`)",
        "",
        "| setting | value |",
        "|---|---|",
        f"| method | {training['method']}"
        + (f" (rank {lora['rank']}, alpha {lora['alpha']}, merged)" if lora else "")
        + " |",
        f"| steps | {training['steps_run']} of {training['steps']}"
        + (
            f" (resumed from step {training['resumed_from_step']})"
            if training["resumed_from_step"]
            else ""
        )
        + " |",
        f"| batch | {training['batch_size']} pairs, lr {training['lr']:g} |",
        f"| parameters trained | {training['trainable_parameters']:,} of "
        f"{training['total_parameters']:,} |",
        f"| device, dtype | {training['device']}, {training['compute_dtype']} |",
        f"| training time | {fmt_num(training['seconds'], 1)} s |",
        f"| peak memory | {fmt_num(memory['process_rss'], 0)} MiB resident"
        + (
            f", {fmt_num(memory['gpu_allocated'], 0)} MiB GPU"
            if memory["gpu_allocated"] is not None
            else ""
        )
        + " |",
        f"| seed | {record['provenance']['seed']} |",
        "",
        "## Loss (mean cross-entropy per response token, nats)",
        "",
        "| steps | loss |",
        "|---|---|",
    ]
    for first, last, mean in loss_curve(training["losses"]):
        lines.append(f"| {first}–{last} | {mean:.4f} |")
    drift = record["attestation"]
    if drift is not None:
        lines += [
            "",
            "## Drift from the base (attestation of the tuned model against it)",
            "",
            f"Verdict **{drift['verdict']}**; flagged: {', '.join(drift['flagged']) or 'none'}. "
            f"Full attestation: `{drift['path']}`.",
            "",
            "| category | samples | mean KL (base ‖ tuned) | effect | q | flagged |",
            "|---|---|---|---|---|---|",
        ]
        for c in drift["categories"]:
            lines.append(
                f"| {c['name']} | {c['n_samples']} | {fmt_num(c['mean_kl'], 4)} | "
                f"{fmt_num(c['effect'], 4, signed=True)} | {fmt_num(c['q_value'], 3)} | "
                f"{'yes' if c['flagged'] else ''} |"
            )
    return "\n".join(lines) + "\n"
