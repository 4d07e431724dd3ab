"""``lmassay demo``: world → reference → tampered variant → attestation, offline, cached."""

from __future__ import annotations

from typing import Annotated

import typer

from lmassay.choices import PairSize
from lmassay.cli._app import EXIT_FLAGGED, EXIT_OK, app, run_command
from lmassay.cli.options import Kind, QuietProgress


@app.command()
def demo(
    out: Annotated[
        str, typer.Option("--out", "-o", help="Folder for the attestation and report.html.")
    ] = "lmassay-demo",
    kind: Kind = "suppression",
    category: Annotated[
        str | None, typer.Option(help="Category to tamper with (default: the kind's own).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the world, training and tampering.")] = 0,
    cache: Annotated[
        str | None,
        typer.Option(
            help="Cache folder for the world and models (default: $LMASSAY_CACHE or the user cache)."
        ),
    ] = None,
    size: Annotated[PairSize, typer.Option(help="demo (minutes cold) or test (seconds).")] = "demo",
    quiet: QuietProgress = False,
) -> None:
    """Show the whole job offline: make a world, a reference and a tampered copy; attest; report.

    The first run makes everything (minutes on 2 CPU cores) and caches it;
    later runs reuse it and only attest. Example:

        lmassay demo --out lmassay-demo && open lmassay-demo/report.html

    Exit 0: the attestation found the tampering the ground truth records; 1: it did not; 2: could not run.
    """
    from lmassay.progress import cli_progress
    from lmassay.world.demo import DemoConfig, run_demo

    config = DemoConfig(out=out, cache=cache, kind=kind, category=category, seed=seed, size=size)
    with cli_progress(quiet) as progress:
        result = run_command("demo", run_demo, config, progress)
    truth = result.ground_truth
    document = result.attestation.document
    flagged = ", ".join(result.flagged) or "nothing"
    expected = result.expected_category or "nothing (a control)"
    typer.echo(
        f"tampered variant: {result.variant} ({truth.get('kind')}; ground truth: {expected})"
    )
    typer.echo(f"verdict: {document.verdict.value}; flagged: {flagged}")
    for row in document.categories:
        if row.flagged:
            typer.echo(f"  {row.name}: mean KL {row.mean_kl:.4f} nats/token, q = {row.q_value:.2g}")
    typer.echo(
        "found the tampering the ground truth records"
        if result.found
        else "did NOT find the tampering the ground truth records"
    )
    typer.echo(f"Report: {result.attestation.paths['html']}")
    raise typer.Exit(EXIT_OK if result.found else EXIT_FLAGGED)
