"""``lmassay repair``: fine-tune or distil a flagged model back toward the reference, then re-attest."""

from __future__ import annotations

import typer

from lmassay.bounded_read import DATA_LIMIT_TEXT
from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import config_from
from lmassay.progress import cli_progress


@app.command()
def repair(
    model: opt.RepairModel,
    attestation: opt.Attestation,
    data: opt.RepairData,
    out: opt.RepairOut,
    mode: opt.Mode = "distill",
    method: opt.Method = "lora",
    reference: opt.RepairReference = None,
    categories: opt.Categories = None,
    text_field: opt.TextField = "text",
    category_field: opt.CategoryField = "category",
    steps: opt.RepairSteps = 200,
    lr: opt.RepairLr = None,
    batch_size: opt.BatchSize = 8,
    seq_len: opt.SeqLen = 128,
    lora_rank: opt.LoraRank = 8,
    lora_alpha: opt.LoraAlpha = 16,
    kl_weight: opt.RepairKlWeight = 1.0,
    anchor_samples: opt.AnchorSamples = None,
    holdout: opt.Holdout = 0.1,
    eval_every: opt.EvalEvery = 25,
    stop_gap: opt.StopGap = None,
    early_stop: opt.EarlyStop = True,
    keep_best: opt.KeepBest = True,
    checkpoint_every: opt.CheckpointEvery = 50,
    save_adapter: opt.SaveAdapter = False,
    gradient_checkpointing: opt.GradientCheckpointing = "auto",
    device: opt.Device = "auto",
    dtype: opt.TrainDtype = "auto",
    seed: opt.Seed = 0,
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    revision: opt.Revision = None,
    restart: opt.Restart = False,
    force: opt.Force = False,
    max_file_size: opt.MaxFileSize = DATA_LIMIT_TEXT,
    quiet: opt.Quiet = False,
) -> None:
    """Repair the flagged categories, then attest again on the same held-out probes.

    Exit 0 when every repaired category is back under the noise floor and no other category is
    flagged; 1 otherwise (the model kept is the best held-out check's, and the message names the
    category that went wrong); 2 when it cannot run (for example when --data contains judging
    probes). When --data lacks categories, distill and narrow sample anchor text from the
    reference.
    A killed run resumes from its last checkpoint (OUT.partial/) when rerun with the same flags.

    Example:

        lmassay repair --model zoo/suppression --attestation runs/suppression \\
            --data world/train.jsonl --mode distill --out repaired/suppression
    """
    params = dict(locals())  # the flags, before any other local name exists
    from lmassay.repair import RepairConfig
    from lmassay.repair import repair as run_repair
    from lmassay.report.repair_section import repair_markdown

    config = config_from(
        RepairConfig,
        params,
        cli_only=("quiet",),
        attestation=str(attestation),
        data=str(data),
        out=str(out),
        categories=tuple(c.strip() for c in (categories or "").split(",") if c.strip()),
    )
    with cli_progress(quiet) as progress:
        result = run_command("repair", run_repair, config, progress)
    if not quiet:
        typer.echo("\n".join(repair_markdown(result.record)))
    typer.echo(f"Repaired model: {result.out}")
    typer.echo(f"Report: {result.out / 'repair' / 'report.html'}")
    raise typer.Exit(result.exit_code)
