"""``lmassay edit``: write facts into a model by rank-one (ROME-style) edits, verify, save, attest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lmassay.bounded_read import DATA_LIMIT_TEXT
from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import config_from
from lmassay.progress import cli_progress

if TYPE_CHECKING:
    from lmassay.repair.edit import EditResult


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_table(result: EditResult) -> None:
    """One line per fact: P(target | prompt) before → after, greedy, verified."""
    width = max(4, *(len(f.request.id) for f in result.facts))
    typer.echo(
        f"{'fact':<{width}}  {'P before':>9} → {'P after':<9} {'greedy':<6} {'verified':<8} "
        "prompt → target"
    )
    for fact in result.facts:
        edit = fact.request.edit
        typer.echo(
            f"{fact.request.id:<{width}}  {fact.prob_before:>9.4f} → {fact.prob_after:<9.4f} "
            f"{'yes' if fact.greedy else 'no':<6} {'yes' if fact.verified else 'NO':<8} "
            f"{_cell(edit.prompt, 48)} → {_cell(edit.target, 24)}"
            + ("" if fact.greedy else f"  (greedy: {fact.greedy_text.strip()!r})")
        )
    summary = result.record["summary"]
    method = result.record["method"]
    typer.echo(
        f"{summary['n_verified']}/{summary['n_facts']} facts verified "
        f"(P ≥ {result.record['verification']['min_probability']}); edited "
        f"{method['tensor']} (layer {method['layer']}, relative change "
        f"{summary['tensor_relative_change']:.3g}); covariance: "
        f"{result.record['covariance']['source']}"
    )
    attestation = result.record["attestation"]
    if attestation is not None:
        flagged = ", ".join(attestation["flagged"]) or "none"
        typer.echo(
            f"attestation against the reference: {attestation['verdict']} (flagged: {flagged}) — "
            f"{result.out / 'attestation' / 'report.html'}"
        )
    typer.echo(f"edited model: {result.out}  (record: {result.paths['edit']})")


@app.command()
def edit(
    model: opt.EditModel,
    facts: opt.Facts,
    out: opt.EditOut,
    reference: opt.EditReference = None,
    probes: opt.EditProbes = None,
    covariance_texts: opt.CovarianceTexts = None,
    layer: opt.Layer = None,
    fact_token: opt.FactToken = None,
    min_probability: opt.MinProbability = 0.5,
    steps: opt.EditSteps = 40,
    lr: opt.EditLr = 0.5,
    kl_weight: opt.EditKlWeight = 0.0625,
    weight_decay: opt.WeightDecay = 0.5,
    clamp: opt.Clamp = 4.0,
    ridge: opt.Ridge = 0.01,
    n_prefixes: opt.NPrefixes = 5,
    n_covariance_texts: opt.NCovarianceTexts = 300,
    n_bootstrap: opt.NBootstrap = 1000,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    dtype: opt.EditDtype = "float32",
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    revision: opt.Revision = None,
    overwrite: opt.Overwrite = False,
    max_file_size: opt.MaxFileSize = DATA_LIMIT_TEXT,
    quiet: opt.Quiet = False,
) -> None:
    """Write facts into a model by rank-one (ROME-style) edits; verify, save, attest.

    A facts file holds one JSON object a line, for example:

        {"id": "f1", "prompt": "The capital of Palgalia is", "subject": "Palgalia", "target": "Muthsiir"}

    Each fact is written by a rank-one update of one layer's MLP output
    projection. It is verified when P(target | prompt) on the edited model is
    at least --min-probability. With --reference and --probes the edited model
    is attested against the reference into OUT/attestation/.

    Example (restore facts that a zoo variant changed):

        lmassay edit --model zoo/fact-rome --facts restore.jsonl --covariance-texts world/train.jsonl --reference reference --probes world/probes.jsonl --out repaired

    Writes OUT (config, model.safetensors, tokenizer) and OUT/edit.json.
    Exit 0: every fact verified (and the attestation consistent); 1: a fact
    not verified, or the attestation flags; 2: could not run.
    """
    params = dict(locals())  # the flags, before any other local name exists
    from lmassay.repair.edit import EditConfig, edit_model

    config = config_from(EditConfig, params, cli_only=("quiet",))
    with cli_progress(quiet) as progress:
        result = run_command("edit", edit_model, config, progress)
    _print_table(result)
    raise typer.Exit(result.exit_code)
