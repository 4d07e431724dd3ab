"""``lmassay repair``: fine-tune or distil a flagged model back toward the reference, then re-attest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.cli._app import app, run_command
from lmassay.progress import cli_progress


@app.command()
def repair(
    model: Annotated[
        str, typer.Option(help="The model the attestation judged (folder or hub id).")
    ],
    attestation: Annotated[
        Path, typer.Option(help="The attestation that flagged it (attestation.json or its folder).")
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Repair text with categories (JSONL, category folders of .txt, parquet, saved "
            "dataset); must not contain the attestation's probes."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the repaired model; OUT/repair/ gets the report.")
    ],
    mode: Annotated[
        str,
        typer.Option(
            help="wide: LM fine-tuning on all of --data; narrow: LM fine-tuning on the flagged "
            "categories' text; distill: KL(reference ‖ model) on the flagged categories' text. "
            "narrow and distill add a KL penalty to the starting model on the other categories."
        ),
    ] = "distill",
    method: Annotated[str, typer.Option(help="lora (peft adapters) or full fine-tuning.")] = "lora",
    reference: Annotated[
        str | None, typer.Option(help="Known-good model; default: the attestation's reference.")
    ] = None,
    categories: Annotated[
        str | None,
        typer.Option(help="Comma-separated categories to repair; default: the flagged ones."),
    ] = None,
    text_field: Annotated[str, typer.Option(help="Text field of --data.")] = "text",
    category_field: Annotated[str, typer.Option(help="Category field of --data.")] = "category",
    steps: Annotated[int, typer.Option(help="Most optimiser steps.")] = 200,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 1e-3 LoRA, 1e-4 full).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = 8,
    seq_len: Annotated[int, typer.Option(help="Tokens per window.")] = 128,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    kl_weight: Annotated[
        float,
        typer.Option(
            help="narrow/distill: weight of the KL penalty on the other categories (0: off)."
        ),
    ] = 1.0,
    holdout: Annotated[
        float, typer.Option(help="Share of --data held out to monitor the repair.")
    ] = 0.1,
    eval_every: Annotated[int, typer.Option(help="Steps between held-out checks.")] = 25,
    stop_gap: Annotated[
        float | None,
        typer.Option(
            help="Stop once the held-out gap (largest repaired category's KL level minus the "
            "others' median, on held-out repair text) is at most this. Default: half the noise "
            "floor for narrow and wide; distill runs all steps."
        ),
    ] = None,
    early_stop: Annotated[
        bool,
        typer.Option("--early-stop/--no-early-stop", help="Allow stopping on the held-out gap."),
    ] = True,
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between resumable checkpoints.")
    ] = 50,
    save_adapter: Annotated[
        bool,
        typer.Option("--save-adapter", help="Save the LoRA adapter instead of the merged model."),
    ] = False,
    gradient_checkpointing: Annotated[
        str, typer.Option(help="auto (on for CUDA), on or off.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (bfloat16 where the GPU supports it), float32 or bfloat16.")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the data order and the held-out split.")] = 0,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow pickled (.bin) weights: can run code.")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the model's own code.")
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an interrupted run's checkpoints.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.")] = False,
) -> None:
    """Repair the flagged categories, then attest again on the same held-out probes.

    Exit 0 when every repaired category is back under the noise floor and no other category became
    flagged; 1 otherwise; 2 when it cannot run (for example when --data contains judging probes).
    A killed run resumes from its last checkpoint (OUT.partial/) when rerun with the same flags.

    Example:

        lmassay repair --model zoo/suppression --attestation runs/suppression \\
            --data world/train.jsonl --mode distill --out repaired/suppression
    """
    from lmassay.repair import RepairConfig
    from lmassay.repair import repair as run_repair
    from lmassay.report.repair_section import repair_markdown

    config = RepairConfig(
        model=model,
        attestation=str(attestation),
        data=str(data),
        out=str(out),
        mode=mode,  # type: ignore[arg-type]  # validate() names a bad value
        method=method,  # type: ignore[arg-type]
        reference=reference,
        categories=tuple(c.strip() for c in categories.split(",") if c.strip())
        if categories
        else (),
        text_field=text_field,
        category_field=category_field,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seq_len=seq_len,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        kl_weight=kl_weight,
        holdout=holdout,
        eval_every=eval_every,
        stop_gap=stop_gap,
        early_stop=early_stop,
        checkpoint_every=checkpoint_every,
        save_adapter=save_adapter,
        gradient_checkpointing=gradient_checkpointing,  # type: ignore[arg-type]
        device=device,
        dtype=dtype,
        seed=seed,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        restart=restart,
        force=force,
    )
    with cli_progress(quiet) as progress:
        result = run_command("repair", run_repair, config, progress)
    if not quiet:
        typer.echo("\n".join(repair_markdown(result.record)))
    typer.echo(f"Repaired model: {result.out}")
    typer.echo(f"Report: {result.out / 'repair' / 'report.html'}")
    raise typer.Exit(result.exit_code)
