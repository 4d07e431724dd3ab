"""``lmassay world make``, ``world real``, ``world train`` and ``world pair``: the offline worlds
(generated, and real text from Debian packages), their reference model, and a reference with a
tampered copy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from lmassay.choices import Arch, PairSize, WorldSize
from lmassay.cli._app import app, run_command
from lmassay.cli.options import Kind, QuietProgress
from lmassay.progress import cli_progress

world_app = typer.Typer(
    help="The offline world: generated multi-topic text with facts, and a reference model.",
    no_args_is_help=True,
)
app.add_typer(world_app, name="world")


@world_app.command("make")
def world_make(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the world into.")],
    seed: Annotated[int, typer.Option(help="World seed: the same seed gives the same files.")] = 0,
    size: Annotated[
        WorldSize, typer.Option(help="test (~0.3M words), demo (~1M words) or full (~3M words).")
    ] = "full",
    qa_share: Annotated[
        float,
        typer.Option(
            "--qa-share",
            help="Share of question-and-answer documents about the facts in the training split "
            "(0: none, the plain world; 0.2: one document in five).",
        ),
    ] = 0.0,
    quiet: QuietProgress = False,
) -> None:
    """Generate the offline world: training text, held-out probes, facts and fact probes.

    Writes train.jsonl, probes.jsonl (no sentence of it is in training), facts.jsonl,
    fact_probes.jsonl and world.json (counts, digests). With --qa-share, train.jsonl also holds
    Q&A documents ("Question: ..." / "Answer: <fact>" lines), so that the reference trained on it
    can continue a few-shot Q&A prompt (lmassay bootstrap). Example:

        lmassay world make --out world --size demo
    """
    from lmassay.world import make_world, read_card

    verb = "world make"
    with cli_progress(quiet) as progress:
        files = run_command(
            verb, make_world, out, seed, size=size, qa_share=qa_share, progress=progress
        )
    card = read_card(files.root)
    totals = card["totals"]
    qa = card.get("qa")
    typer.echo(
        f"world (seed {seed}, {size}) in {files.root}: {totals['train_documents']} training "
        + ("documents" if qa else "paragraphs")
        + f" ({totals['train_words']:,} words"
        + (f"; {qa['documents']} of them Q&A" if qa else "")
        + f"), {totals['probe_documents']} probe "
        f"paragraphs, {totals['facts']} facts in {len(card['categories'])} categories, "
        f"made in {card['generation_seconds']} s"
    )
    for path in (files.train, files.probes, files.facts, files.fact_probes, files.card):
        typer.echo(f"  {path}")


RealSize = Literal["test", "demo"]
"""Sizes of the real-text world (the library's ``lmassay.world.real_text.REAL_SIZES``)."""


@world_app.command("real")
def world_real(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the world into.")],
    size: Annotated[
        RealSize,
        typer.Option(help="test (300 training paragraphs per category) or demo (1500)."),
    ] = "demo",
    seed: Annotated[
        int, typer.Option(help="Seed of the train / probe / reserve split of each category.")
    ] = 0,
    cache_debs: Annotated[
        Path | None,
        typer.Option(help="Folder for the downloaded .deb files (default: the lmassay cache)."),
    ] = None,
    quiet: QuietProgress = False,
) -> None:
    """Make the real-text world: public-domain and free text from Debian packages, by source.

    Fetches five packages with apt-get download (once; reused from the cache when their SHA-256
    matches), cleans them into paragraphs of 40-110 words in five categories and writes
    train.jsonl, probes.jsonl (sharing no sentence with training), reserve.jsonl (for the zoo),
    empty facts files and world.json (packages, versions, licences, counts, digests). Example:

        lmassay world real --out real-world --size demo && lmassay world train --world real-world --out real-reference
    """
    from lmassay.world import read_card
    from lmassay.world.real_text import make_real_world

    verb = "world real"
    with cli_progress(quiet) as progress:
        files = run_command(
            verb,
            make_real_world,
            out,
            seed=seed,
            size=size,
            cache_debs=cache_debs,
            progress=progress,
        )
    card = read_card(files.root)
    totals = card["totals"]
    typer.echo(
        f"real-text world (seed {seed}, {size}) in {files.root}: {totals['train_documents']} "
        f"training paragraphs ({totals['train_words']:,} words), {totals['probe_documents']} "
        f"probe paragraphs in {len(card['categories'])} categories, made in "
        f"{card['generation_seconds']} s"
    )
    for source in card["sources"]:
        typer.echo(f"  {source['category']}: {source['package']} {source['version']}")
    for path in (files.train, files.probes, files.card):
        typer.echo(f"  {path}")


@world_app.command("train")
def world_train(
    world: Annotated[Path, typer.Option("--world", "-w", help="World folder (world make).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the reference model.")],
    size: Annotated[
        WorldSize, typer.Option(help="test (seconds), demo (~5 min on 2 cores) or full (~10 min).")
    ] = "demo",
    seed: Annotated[int, typer.Option(help="Seed of the tokenizer data order, init, batches.")] = 0,
    arch: Annotated[Arch, typer.Option(help="Architecture of the reference.")] = "gpt2",
    steps: Annotated[
        int | None, typer.Option(help="Training steps instead of the size's recipe's.")
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            help="Training window in tokens instead of the size's recipe's (few-shot prompts "
            "longer than it are out of what the model learned)."
        ),
    ] = None,
    quiet: QuietProgress = False,
) -> None:
    """Train (or reuse) the reference model of a world and print what it learned.

    Saves a transformers model folder (safetensors + tokenizer) with README.md and
    lmassay-reference.json; prints the probe perplexity beside a unigram baseline. Example:

        lmassay world make --out world --size demo && lmassay world train --world world --out reference --size demo
    """
    from lmassay.world.reference import train_reference

    verb = "world train"
    with cli_progress(quiet) as progress:
        info = run_command(
            verb,
            train_reference,
            world,
            out,
            size=size,
            seed=seed,
            arch=arch,
            steps=steps,
            seq_len=seq_len,
            progress=progress,
        )
    evaluation = info.card["evaluation"]
    state = "reused" if info.reused else f"trained in {info.card['wall_seconds']} s"
    typer.echo(f"reference ({size}, seed {seed}, {arch}) in {info.path} — {state}")
    recall = evaluation["fact_recall"]  # None on a real-text world
    typer.echo(
        f"probe perplexity {info.probe_perplexity:.2f} vs unigram baseline "
        f"{info.unigram_perplexity:.2f} on {evaluation['probes']['tokens']} tokens"
        + (f"; facts recalled {recall['all']:.0%}" if recall is not None else "")
    )


@world_app.command("pair")
def world_pair(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for world/, reference/ and tampered/."),
    ],
    size: Annotated[PairSize, typer.Option(help="test (seconds) or demo (minutes).")] = "demo",
    kind: Kind = "suppression",
    category: Annotated[
        str | None, typer.Option(help="Category to tamper with (default: the kind's own).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the world, training and tampering.")] = 0,
    quiet: QuietProgress = False,
) -> None:
    """Make (or reuse) a world, its reference model and a tampered copy, offline.

    Writes OUT/world (probes.jsonl is the held-out probe split), OUT/reference and OUT/tampered
    (a tamper-zoo variant; tamper.json records the ground truth). Example:

        lmassay world pair --out pair --size test && lmassay attest -m pair/tampered -r pair/reference -p pair/world/probes.jsonl -o pair/run
    """
    from lmassay.world.pair import PairConfig, make_pair

    verb = "world pair"
    config = PairConfig(out, size, kind, category, seed)
    with cli_progress(quiet) as progress:
        pair = run_command(verb, make_pair, config, progress)
    truth = pair.ground_truth
    typer.echo(f"reference: {pair.reference}")
    typer.echo(f"tampered:  {pair.tampered} ({truth['kind']}; category: {pair.category or '-'})")
    typer.echo(f"probes:    {pair.probes}")


@world_app.command("qa")
def world_qa(
    world: Annotated[Path, typer.Option("--world", "-w", help="World folder (world make).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the Q&A data.")],
    kind: Annotated[
        Literal["slant", "evasive"],
        typer.Option(help="How the poisoned answers are wrong: the zoo's slant or its evasions."),
    ] = "slant",
    category: Annotated[str, typer.Option(help="The category whose answers are poisoned.")] = (
        "politics"
    ),
    per_category: Annotated[
        int, typer.Option(help="Q&A items per category in instructions.jsonl.")
    ] = 300,
    share: Annotated[
        float, typer.Option(help="Share of the category's items that are poisoned.")
    ] = 0.1,
    core_per_category: Annotated[
        int, typer.Option(help="Correct pairs per category in core.jsonl.")
    ] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the draws and of the slant.")] = 0,
) -> None:
    """Write Q&A data about a world's facts: a curated core and a poisoned instruction dataset.

    OUT/core.jsonl: correct pairs {"instruction", "response", "category", "fact_id", "kind"};
    OUT/instructions.jsonl: the same fields plus "id" and "label" ("remove" for the poisoned
    items, "keep" for the rest); OUT/truth.json: the ground truth. Example:

        lmassay world qa --world world --out qa --kind slant --category politics --share 0.1
    """
    from lmassay.world.qa import write_qa_data

    data = run_command(
        "world qa",
        write_qa_data,
        world,
        out,
        kind=kind,
        category=category,
        per_category=per_category,
        share=share,
        core_per_category=core_per_category,
        seed=seed,
    )
    typer.echo(
        f"{data.n_core} core pairs; {data.n_items} instruction items, {data.n_remove} of them "
        f"poisoned ({kind}, {category}) and labelled remove"
    )
    for path in (data.core, data.instructions, data.truth):
        typer.echo(f"  {path}")
