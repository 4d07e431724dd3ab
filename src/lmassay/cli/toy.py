"""``lmassay toy build``: the tiny offline reference / tampered pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.cli._app import app, fail, run_command

toy_app = typer.Typer(
    help="The offline toy world: a tiny reference model and a tampered copy.", no_args_is_help=True
)
app.add_typer(toy_app, name="toy")


@toy_app.command("build")
def toy_build(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for reference/, tampered/ and probes.jsonl.")
    ],
    seed: Annotated[int, typer.Option(help="Seed for the corpus and training.")] = 0,
    tamper_category: Annotated[
        str, typer.Option(help="The category the tampered copy is fine-tuned on.")
    ] = "cooking",
    size: Annotated[str, typer.Option(help="demo (about a minute) or test (seconds).")] = "demo",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Build (or reuse) a tiny reference model, a copy tampered on one category, and probes.

    Everything is generated offline. Example:

        lmassay toy build --out toy && lmassay attest -m toy/tampered -r toy/reference -p toy/probes.jsonl -o toy/run
    """
    from lmassay.world.tiny_lm import DEFAULT_CATEGORIES, build_toy_pair

    if size not in ("demo", "test"):
        fail("toy build", f"--size {size!r} is not known — use demo or test")
    if tamper_category not in DEFAULT_CATEGORIES:
        fail(
            "toy build",
            f"--tamper-category {tamper_category!r} is not a toy category — use one of {', '.join(DEFAULT_CATEGORIES)}",
        )

    def progress(message: str) -> None:
        if not quiet:
            typer.echo(message, err=True)

    pair = run_command(
        "toy build",
        build_toy_pair,
        out,
        seed=seed,
        tamper_category=tamper_category,
        size=size,
        progress=progress,
    )
    typer.echo(f"reference: {pair.reference}\ntampered:  {pair.tampered}\nprobes:    {pair.probes}")
