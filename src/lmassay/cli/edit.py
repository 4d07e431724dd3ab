"""``lmassay edit``: write facts into a model by rank-one (ROME-style) edits, verify, save, attest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from lmassay.cli._app import app, run_command

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
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model to edit: local folder or hub id.")
    ],
    facts: Annotated[
        str,
        typer.Option(
            "--facts",
            "-f",
            help='JSONL, one fact a line: {"prompt": ..., "subject": ..., "target": ...} '
            '(optional "id").',
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Folder for the edited model: new or empty (see --overwrite)."
        ),
    ],
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", "-r", help="Attest the edited model against this known-good model."
        ),
    ] = None,
    probes: Annotated[
        str | None,
        typer.Option("--probes", "-p", help="Probe corpus for the attestation (with --reference)."),
    ] = None,
    covariance_texts: Annotated[
        str | None,
        typer.Option(
            help='Texts for the key statistics: .jsonl with "text" per line, a folder of '
            "category/*.txt, or parquet (default: the probes; without them C = I)."
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(help="Layer whose MLP output projection is edited (default: middle)."),
    ] = None,
    fact_token: Annotated[
        str | None,
        typer.Option(help="Where the key is read: subject_last or last (default: subject_last)."),
    ] = None,
    min_probability: Annotated[
        float, typer.Option(help="A fact is verified when P(target | prompt) is at least this.")
    ] = 0.5,
    steps: Annotated[int, typer.Option(help="Optimisation steps of each value vector.")] = 40,
    lr: Annotated[float, typer.Option(help="Adam learning rate of the value vector.")] = 0.5,
    kl_weight: Annotated[
        float, typer.Option(help='Weight of the KL term that keeps "{subject} is a" unchanged.')
    ] = 0.0625,
    weight_decay: Annotated[float, typer.Option(help="Weight of the ‖δ‖ penalty.")] = 0.5,
    clamp: Annotated[float, typer.Option(help="‖δ‖ is kept at most clamp · ‖W k*‖.")] = 4.0,
    ridge: Annotated[float, typer.Option(help="Ridge added to the second moment C.")] = 0.01,
    n_prefixes: Annotated[
        int, typer.Option(help="Contexts the value is optimised over (the bare prompt + N-1).")
    ] = 5,
    n_covariance_texts: Annotated[
        int, typer.Option(help="At most this many covariance texts (sampled with --seed).")
    ] = 300,
    n_bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples of the attestation.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and the optimisation.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[
        str,
        typer.Option(help="Dtype the edits are computed in; the model is saved in its own dtype."),
    ] = "float32",
    allow_pickle: Annotated[
        bool, typer.Option(help="Allow pickled weights (*.bin); unpickling can run code.")
    ] = False,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow the model's own Python code to run.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing --out folder once the new one is complete.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
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
    from lmassay.progress import cli_progress
    from lmassay.repair.edit import EditConfig, edit_model

    config = EditConfig(
        model=model,
        facts=facts,
        out=out,
        reference=reference,
        probes=probes,
        covariance_texts=covariance_texts,
        layer=layer,
        fact_token=fact_token,
        min_probability=min_probability,
        seed=seed,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        steps=steps,
        lr=lr,
        kl_weight=kl_weight,
        weight_decay=weight_decay,
        clamp=clamp,
        ridge=ridge,
        n_prefixes=n_prefixes,
        n_covariance_texts=n_covariance_texts,
        n_bootstrap=n_bootstrap,
        overwrite=overwrite,
    )
    with cli_progress(quiet) as progress:
        result = run_command("edit", edit_model, config, progress)
    _print_table(result)
    raise typer.Exit(result.exit_code)
