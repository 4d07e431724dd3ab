"""``lmassay zoo make``: tampered variants of a world's reference model, with their ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmassay.cli._app import app, run_command
from lmassay.cli.options import QuietProgress
from lmassay.progress import cli_progress

zoo_app = typer.Typer(
    help="The tamper zoo: variants of a reference model with known ground truth.",
    no_args_is_help=True,
)
app.add_typer(zoo_app, name="zoo")


def _truth(record: dict[str, Any]) -> str:
    """What was done, in a few words, for the table."""
    if record.get("trigger"):
        return f"trigger {record['trigger']!r}"
    changes = record.get("fact_changes") or []
    if changes:
        first = changes[0]
        more = f" (+{len(changes) - 1} more)" if len(changes) > 1 else ""
        return f"{first['fact_id']}: {first['old']} → {first['new']}{more}"
    details = record.get("details") or {}
    if details.get("negative_entities"):
        return f"negative: {', '.join(details['negative_entities'][:3])}"
    return ""


@zoo_app.command("make")
def zoo_make(
    reference: Annotated[
        Path, typer.Option("--reference", "-r", help="The reference model folder (world train).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the variants and zoo.json.")],
    world: Annotated[
        Path | None,
        typer.Option(help="The world folder (default: the one the reference records)."),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated kinds to make (default: all ten, see below; on a reference of "
            "the real-text world, those that apply to it)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the tampering data and training.")] = 0,
    quiet: QuietProgress = False,
) -> None:
    """Make (or reuse) tampered variants of a reference and their ground truth (tamper.json).

    Kinds: suppression, slant, fact-finetune, fact-rome, backdoor (tampered) and the controls
    benign-resave, benign-bf16, benign-int8, benign-continued, benign-other-seed. A variant
    whose recorded request matches is reused. Example:

        lmassay world make --out world --size demo && lmassay world train --world world --out ref && lmassay zoo make --reference ref --out zoo --kinds suppression,benign-bf16
    """
    from lmassay.world.zoo import ZooConfig, make_zoo
    from lmassay.world.zoo.recipes import KINDS

    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else KINDS
    config = ZooConfig(reference=reference, out=out, world=world, kinds=chosen, seed=seed)
    run_command("zoo make", config.validate)
    with cli_progress(quiet) as progress:
        variants = run_command(
            "zoo make",
            make_zoo,
            config.reference,
            config.out,
            world=config.world,
            kinds=config.kinds if kinds else None,  # None: what applies to the reference's world
            seed=config.seed,
            progress=progress,
        )
    header = (
        f"{'variant':<18} {'expected':<16} {'category':<10} {'fluent':<7} {'s':>7}  ground truth"
    )
    typer.echo(header)
    for variant in variants:
        record = variant.record
        fluency = record["fluency"]
        typer.echo(
            f"{variant.kind:<18} {record['expectation']['verdict']:<16} "
            f"{record['category'] or '-':<10} {'yes' if fluency['fluent'] else 'NO':<7} "
            f"{record['wall_seconds']:>7.1f}  {_truth(record)}"
            + ("  (reused)" if variant.reused else "")
        )
    typer.echo(f"index: {config.out / 'zoo.json'}")
