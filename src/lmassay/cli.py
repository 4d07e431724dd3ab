"""The ``lmassay`` command: parse, call one library function, print, set the exit code.

Exit codes: 0 ran and nothing is wrong; 1 ran and the model is flagged (a tampered category or a
different model); 2 could not run — one line on stderr, ``"<verb> failed: <what> — <fix>"``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from lmassay import __version__
from lmassay.errors import LmassayError

app = typer.Typer(
    name="lmassay",
    help="Check whether an open language model has been tampered with, and where.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
toy_app = typer.Typer(
    help="The offline toy world: a tiny reference model and a tampered copy.", no_args_is_help=True
)
app.add_typer(toy_app, name="toy")

EXIT_OK, EXIT_FLAGGED, EXIT_UNUSABLE = 0, 1, 2


def _fail(verb: str, message: str) -> NoReturn:
    typer.echo(
        message if message.startswith(f"{verb} failed") else f"{verb} failed: {message}", err=True
    )
    raise typer.Exit(EXIT_UNUSABLE)


def _quiet_libraries() -> None:
    """Silence transformers' own progress bars and advisory warnings: lmassay reports progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _run(verb: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; turn every known error into one line on stderr and exit code 2."""
    _quiet_libraries()
    try:
        return func(*args, **kwargs)
    except LmassayError as exc:
        _fail(verb, exc.one_line(verb))
    except KeyboardInterrupt:
        typer.echo(f"{verb} interrupted — no output was written for the unfinished step", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:  # a path that cannot be written or read (permissions, full disk, ...)
        where = f" {exc.filename}" if exc.filename else ""
        _fail(
            verb,
            f"{exc.strerror or exc}:{where} — check the path, its permissions and free disk space",
        )
    except MemoryError:
        _fail(
            verb,
            "ran out of memory — lower --token-budget, use --dtype bfloat16 or a smaller --per-category",
        )
    except Exception as exc:  # the CLI boundary: never a traceback unless asked for
        if os.environ.get("LMASSAY_DEBUG"):
            raise
        if "out of memory" in str(exc).lower():
            _fail(verb, "ran out of memory — lower --token-budget or use --dtype bfloat16")
        _fail(
            verb,
            f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} — "
            "set LMASSAY_DEBUG=1 for the traceback and report it",
        )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lmassay {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """lmassay: has this model been tampered with, where, and can we undo it?"""


@app.command()
def attest(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model under test: local folder or hub id.")
    ],
    probes: Annotated[
        str,
        typer.Option(
            "--probes",
            "-p",
            help="Probe corpus: .jsonl, folder of category/*.txt, saved HF dataset or .parquet.",
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (created if missing).")],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", help="Known-good reference: local folder or hub id."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Without --reference: the --out folder of an earlier attestation of a trusted model on the same probes."
        ),
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="Field holding the text (JSONL / dataset / parquet).")
    ] = "text",
    category_field: Annotated[str, typer.Option(help="Field holding the category.")] = "category",
    id_field: Annotated[
        str, typer.Option(help="Field holding a sample id (optional in the data).")
    ] = "id",
    split: Annotated[str | None, typer.Option(help="Split of a saved HF DatasetDict.")] = None,
    per_category: Annotated[
        int | None, typer.Option(help="Subsample N texts per category.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsampling and the bootstrap.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto, float32, bfloat16 or float16 (auto: float32 on CPU, bfloat16 on GPU)."
        ),
    ] = "auto",
    allow_pickle: Annotated[
        bool, typer.Option(help="Allow pickled weights (*.bin); unpickling can run code.")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the model's own Python code to run.")
    ] = False,
    max_length: Annotated[
        int | None, typer.Option(help="Context window for scoring (default: the model's).")
    ] = None,
    token_budget: Annotated[
        int | None, typer.Option(help="Tokens per batch (default: from the vocabulary size).")
    ] = None,
    comparison: Annotated[
        str, typer.Option(help="auto (KL if the tokenizers match, else bits/byte), kl or bpb.")
    ] = "auto",
    alpha: Annotated[
        float, typer.Option(help="False-discovery level for Benjamini–Hochberg.")
    ] = 0.05,
    noise_floor: Annotated[
        float | None,
        typer.Option(
            help="Smallest effect that can flag a category (nats/token for KL, bits/byte for bpb)."
        ),
    ] = None,
    different_model_threshold: Annotated[
        float | None,
        typer.Option(
            help="Median category level above which the model is called a different model."
        ),
    ] = None,
    n_bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for intervals.")] = 1000,
    min_samples: Annotated[
        int, typer.Option(help="Fewest samples for a category to be tested.")
    ] = 5,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip report.html / report.md.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars and no markdown summary.")
    ] = False,
) -> None:
    """Score a probe corpus with a model and a reference; flag the categories where it was tampered with.

    Example:

        lmassay attest --model ./suspect --reference gpt2 --probes probes.jsonl --out runs/suspect

    Writes OUT/attestation.json, OUT/samples.jsonl, OUT/report.html and OUT/report.md, and prints the
    markdown summary. Exit 0: consistent; 1: tampered or a different model; 2: could not run.
    """
    from lmassay.attest import AttestConfig
    from lmassay.attest import attest as run_attest
    from lmassay.progress import cli_progress

    config = AttestConfig(
        model=model,
        probes=probes,
        out=out,
        reference=reference,
        baseline=baseline,
        text_field=text_field,
        category_field=category_field,
        id_field=id_field,
        split=split,
        per_category=per_category,
        seed=seed,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        max_length=max_length,
        token_budget=token_budget,
        comparison=comparison,  # type: ignore[arg-type]  # validated by AttestConfig.validate
        alpha=alpha,
        noise_floor=noise_floor,
        different_model_threshold=different_model_threshold,
        n_bootstrap=n_bootstrap,
        min_samples=min_samples,
        write_report=not no_report,
    )
    with cli_progress(quiet) as progress:
        result = _run("attest", run_attest, config, progress)
    if not quiet:
        from lmassay.report import render_markdown

        typer.echo(render_markdown(result.attestation))
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

    Example:

        lmassay report runs/suspect
    """
    from lmassay.report import load_attestation, render_markdown, write_report

    att = _run("report", load_attestation, run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    paths = _run("report", write_report, folder, att)
    if not quiet:
        typer.echo(render_markdown(att))
    typer.echo(f"Report: {paths['html']}")


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
    from lmassay.toy import DEFAULT_CATEGORIES, build_toy_pair

    if size not in ("demo", "test"):
        _fail("toy build", f"--size {size!r} is not known — use demo or test")
    if tamper_category not in DEFAULT_CATEGORIES:
        _fail(
            "toy build",
            f"--tamper-category {tamper_category!r} is not a toy category — use one of {', '.join(DEFAULT_CATEGORIES)}",
        )

    def progress(message: str) -> None:
        if not quiet:
            typer.echo(message, err=True)

    pair = _run(
        "toy build",
        build_toy_pair,
        out,
        seed=seed,
        tamper_category=tamper_category,
        size=size,
        progress=progress,
    )
    typer.echo(f"reference: {pair.reference}\ntampered:  {pair.tampered}\nprobes:    {pair.probes}")


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(standalone_mode=True)
    except SystemExit as exc:  # typer/click exit codes pass through
        raise SystemExit(exc.code) from None
    sys.exit(0)


if __name__ == "__main__":
    main()
