"""``lmassay attest`` and ``lmassay report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.bounded_read import DATA_LIMIT_TEXT
from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import config_from
from lmassay.progress import cli_progress


@app.command()
def attest(
    model: opt.Model,
    out: opt.Out,
    probes: opt.Probes = None,
    reference: opt.Reference = None,
    baseline: opt.Baseline = None,
    reference_cache: opt.ReferenceCache = None,
    text_field: opt.TextField = "text",
    category_field: opt.CategoryField = "category",
    id_field: opt.IdField = "id",
    split: opt.Split = None,
    per_category: opt.PerCategory = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    revision: opt.Revision = None,
    reference_revision: opt.ReferenceRevision = None,
    max_length: opt.MaxLength = None,
    token_budget: opt.TokenBudget = None,
    offload: opt.Offload = "none",
    ray: opt.Ray = None,
    ray_workers: opt.RayWorkers = None,
    comparison: opt.Comparison = "auto",
    alpha: opt.Alpha = 0.05,
    noise_floor: opt.NoiseFloor = None,
    spread_multiple: opt.SpreadMultiple = 3.0,
    sparse_floor: opt.SparseFloor = None,
    answer_floor: opt.AnswerFloor = None,
    different_model_threshold: opt.DifferentModelThreshold = None,
    n_bootstrap: opt.NBootstrap = 1000,
    n_permutations: opt.NPermutations = 999,
    min_samples: opt.MinSamples = 5,
    chat_template: opt.ChatTemplate = False,
    max_file_size: opt.MaxFileSize = DATA_LIMIT_TEXT,
    self_probe: opt.SelfProbe = 0,
    self_probe_tokens: opt.SelfProbeTokens = 48,
    self_probe_prompt_tokens: opt.SelfProbePromptTokens = 16,
    self_probe_temperature: opt.SelfProbeTemperature = 1.0,
    no_report: opt.NoReport = False,
    quiet: opt.Quiet = False,
    sign: opt.Sign = None,
    registry: opt.Registry = None,
) -> None:
    """Score a probe corpus with a model and a reference; flag the categories where it was tampered with.

    Example:

        lmassay attest --model ./suspect --reference gpt2 --probes probes.jsonl --out runs/suspect

    A model larger than memory, streamed one block at a time:

        lmassay attest --model ./big --reference ./big-ref --probes probes.jsonl --out runs/big --offload stream

    Without --probes, the shipped public-domain suite (builtin:offline; no network):

        lmassay attest --model ./suspect --reference ./ref --out runs/offline

    A chat model on the built-in refusal suite, answers scored under its chat template:

        lmassay attest --model ./chat --reference ./chat-ref --probes builtin:refusal --chat-template --out runs/chat

    Against a reference cache (`lmassay reference build`): only the model runs:

        lmassay attest --model ./suspect --reference-cache base.lmref --probes probes.jsonl --out runs/suspect

    Sharded on Ray, two workers on a private local cluster (or --ray HOST:6379 to join one):

        lmassay attest --model ./suspect --reference ./ref --probes probes.jsonl --out runs/suspect --ray local --ray-workers 2

    What the model now says (8 continuations per category sampled from it, scored by both):

        lmassay attest --model ./suspect --reference ./ref --probes probes.jsonl --out runs/suspect --self-probe 8

    Writes OUT/attestation.json, OUT/samples.jsonl, OUT/report.html and OUT/report.md, and prints the
    markdown summary. Exit 0: consistent; 1: tampered or a different model; 2: could not run.
    """
    params = dict(locals())  # the flags, before any other local name exists
    from lmassay.attest.recipe import AttestConfig
    from lmassay.attest.recipe import attest as run_attest
    from lmassay.cli.seal import check_attest_signing, finish_attest

    config = config_from(
        AttestConfig,
        params,
        cli_only=("no_report", "quiet", "sign", "registry"),
        write_report=not no_report,
    )
    check_attest_signing(model, sign)
    with cli_progress(quiet) as progress:
        result = run_command("attest", run_attest, config, progress)
    finish_attest(result, model, sign, registry)
    if not quiet:
        from lmassay.report import render_markdown

        typer.echo(render_markdown(result.document))
        if "html" in result.paths:
            typer.echo(f"Report: {result.paths['html']}")
    raise typer.Exit(result.exit_code)


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="An attestation folder (or its attestation.json).")
    ],
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Do not print the markdown summary.")
    ] = False,
) -> None:
    """Re-render report.html and report.md from attestation.json alone (no re-scoring).

    A repair's folder (OUT/repair) also holds repair.json: its before/after section is kept.

    Example:

        lmassay report runs/suspect
    """
    from lmassay.report import render_markdown, rerender_report

    att, repair, paths = run_command("report", rerender_report, run_dir)
    if not quiet:
        typer.echo(render_markdown(att, repair))
    typer.echo(f"Report: {paths['html']}")
