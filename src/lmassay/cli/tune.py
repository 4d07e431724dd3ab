"""``lmassay tune``: supervised fine-tuning on instruction pairs, optionally attested against the base."""

from __future__ import annotations

from typing import Annotated

import typer

from lmassay.bounded_read import DATA_LIMIT_TEXT
from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import TRAINING, config_from
from lmassay.progress import cli_progress
from lmassay.tune.config import Template

TuneModel = Annotated[
    str, typer.Option("--model", "-m", help="The base model to tune: local folder or hub id.")
]
TuneData = Annotated[
    str,
    typer.Option(
        help="Instruction pairs: .jsonl, .parquet, a folder saved by datasets, or "
        "hf:ORG/NAME[@REVISION]; rows instruction/input/output, instruction/response, "
        "prompt/response, prompt/completion, question/answer or messages."
    ),
]
TuneOut = Annotated[
    str,
    typer.Option(
        "--out", "-o", help="Folder for the tuned model (LoRA merged); OUT/tune/ gets the record."
    ),
]
TemplateOption = Annotated[
    Template,
    typer.Option(
        help="chat: the tokenizer's chat template; plain: '### Instruction:' / '### Response:' "
        "for raw LMs; auto: chat when the tokenizer has a template."
    ),
]
Attest = Annotated[
    str | None,
    typer.Option(
        "--attest",
        metavar="PROBES",
        help="At the end, attest the tuned model against the base on these probes (any --probes "
        "form of attest); OUT/attestation/ gets it and the report the per-category drift.",
    ),
]
TuneSteps = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="Optimiser steps.")]
TuneBatchSize = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="Pairs per step.")]
TuneMaxLength = Annotated[
    int,
    typer.Option(
        rich_help_panel=TRAINING,
        help="Most tokens of a pair; longer responses are cut, longer prompts left out.",
    ),
]


@app.command()
def tune(
    model: TuneModel,
    data: TuneData,
    out: TuneOut,
    method: opt.Method = "lora",
    template: TemplateOption = "auto",
    split: opt.Split = None,
    attest: Attest = None,
    steps: TuneSteps = 200,
    lr: opt.RepairLr = None,
    batch_size: TuneBatchSize = 8,
    max_length: TuneMaxLength = 512,
    lora_rank: opt.LoraRank = 8,
    lora_alpha: opt.LoraAlpha = 16,
    checkpoint_every: opt.CheckpointEvery = 50,
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
    """Fine-tune a base model on instruction pairs (loss on the response tokens only).

    Saves an ordinary safetensors folder that `lmassay attest` takes, with OUT/tune/tune.json
    (data and base digests, settings, seed, loss per step, time, peak memory) and report.md.
    A killed run resumes from its last checkpoint (OUT.partial/) when rerun with the same flags.
    Exit 0 when tuned; with --attest, 1 when the attestation flags the tuned model (it is saved
    either way); 2 when it cannot run.

    Example:

        lmassay tune --model base/ --data pairs.jsonl --out tuned/ --attest probes.jsonl
    """
    params = dict(locals())  # the flags, before any other local name exists
    from lmassay.tune import TuneConfig
    from lmassay.tune import tune as run_tune

    config = config_from(TuneConfig, params, cli_only=("quiet",))
    with cli_progress(quiet) as progress:
        result = run_command("tune", run_tune, config, progress)
    record = result.record
    training = record["training"]
    if not quiet:
        typer.echo(
            f"Trained {training['steps_run']} steps on {record['data']['n_examples']} pairs "
            f"({record['data']['template']} template): loss {training['loss_first']:.4f} → "
            f"{training['loss_last_mean']:.4f} in {training['seconds']:.1f} s"
        )
        drift = record["attestation"]
        if drift is not None:
            typer.echo(
                f"Attestation against the base: {drift['verdict']}; flagged: "
                f"{', '.join(drift['flagged']) or 'none'}"
            )
    typer.echo(f"Tuned model: {result.out}")
    typer.echo(f"Report: {result.out / 'tune' / 'report.md'}")
    raise typer.Exit(result.exit_code)
