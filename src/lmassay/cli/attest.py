"""``lmassay attest`` and ``lmassay report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.cli._app import app, run_command


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
    offload: Annotated[
        str,
        typer.Option(
            help="none: load the whole model; stream: one transformer block at a time from the "
            "safetensors files, for models larger than memory (GPT-2, Llama/Mistral/Qwen, GPT-NeoX)."
        ),
    ] = "none",
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
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            help="Private key: also write OUT/attestation.sig, a signed statement that this "
            "attestation is about exactly the --model folder's weights (see lmassay verify).",
        ),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="Registry database (default: $LMASSAY_REGISTRY or the user data folder)."
        ),
    ] = None,
) -> None:
    """Score a probe corpus with a model and a reference; flag the categories where it was tampered with.

    Example:

        lmassay attest --model ./suspect --reference gpt2 --probes probes.jsonl --out runs/suspect

    A model larger than memory, streamed one block at a time:

        lmassay attest --model ./big --reference ./big-ref --probes probes.jsonl --out runs/big --offload stream

    Writes OUT/attestation.json, OUT/samples.jsonl, OUT/report.html and OUT/report.md, and prints the
    markdown summary. Exit 0: consistent; 1: tampered or a different model; 2: could not run.
    """
    from lmassay.attest.recipe import AttestConfig
    from lmassay.attest.recipe import attest as run_attest
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
        offload=offload,  # type: ignore[arg-type]  # validated by AttestConfig.validate
        comparison=comparison,  # type: ignore[arg-type]  # validated by AttestConfig.validate
        alpha=alpha,
        noise_floor=noise_floor,
        different_model_threshold=different_model_threshold,
        n_bootstrap=n_bootstrap,
        min_samples=min_samples,
        write_report=not no_report,
    )
    from lmassay.cli.seal import check_attest_signing, finish_attest

    check_attest_signing(model, sign)
    with cli_progress(quiet) as progress:
        result = run_command("attest", run_attest, config, progress)
    finish_attest(result, model, sign, registry)
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

    A repair's folder (OUT/repair) also holds repair.json: its before/after section is kept.

    Example:

        lmassay report runs/suspect
    """
    from lmassay.report import load_attestation, load_repair_record, render_markdown, write_report

    att = run_command("report", load_attestation, run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    repair = run_command("report", load_repair_record, folder)
    paths = run_command("report", write_report, folder, att, repair)
    if not quiet:
        typer.echo(render_markdown(att, repair))
    typer.echo(f"Report: {paths['html']}")
