"""``lmassay keygen``, ``seal``, ``verify``, ``diff`` and ``history``.

Seal and verify exit 0 (valid), 1 (invalid: bad signature or changed content), 2 (unusable input).
Each seal and verify is recorded in the registry (``--registry``, ``$LMASSAY_REGISTRY`` or the user
data folder); a registry problem is a warning, never a failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lmassay.cli._app import EXIT_FLAGGED, EXIT_OK, app, fail, run_command
from lmassay.cli.options import QuietProgress

_REGISTRY_HELP = "Registry database (default: $LMASSAY_REGISTRY or the user data folder)."
_Registry = Annotated[Path | None, typer.Option("--registry", help=_REGISTRY_HELP)]
_NoRecord = Annotated[
    bool, typer.Option("--no-record", help="Do not record this command in the registry.")
]
_SealOut = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Signature file (default: PATH/model.sig for a folder, PATH.sig for a file, "
        "RUN/attestation.sig for an attestation); tensor digests go beside it (*.tensors.sig).",
    ),
]
_AttestedModel = Annotated[
    Path | None,
    typer.Option(
        help="For an attestation.json: the attested model folder (default: recorded path)."
    ),
]
_AsFile = Annotated[
    bool,
    typer.Option("--as-file", help="Seal an attestation.json as a plain file, not a statement."),
]
_NoTensors = Annotated[bool, typer.Option("--no-tensors", help="Do not record per-tensor digests.")]
_ManifestOut = Annotated[
    Path | None, typer.Option(help="Also write lmassay's manifest (JSON) here.")
]
_HubRevision = Annotated[
    str | None,
    typer.Option(
        "--revision",
        help="Hub revision (branch, tag or commit) when the path is a hub id; the commit it "
        "resolves to is printed and recorded.",
    ),
]


def _locate(verb: str, spec: str, revision: str | None, what: str) -> Any:
    """``spec`` as a local path: itself, or a hub id's snapshot in the Hugging Face cache (the
    same resolution as attest's); prints the id, revision and commit of a hub id."""
    from lmassay.attest.model_source import locate_target

    source = run_command(verb, locate_target, spec, revision=revision, what=what)
    if source.hub is not None:
        hub = source.hub
        typer.echo(
            f"hub: {hub.id} at {hub.revision or 'the default branch'} = commit {hub.commit} "
            f"({source.path})",
            err=True,
        )
    return source


def _with_hub(event: Any, source: Any) -> Any:
    """The registry row ``event`` with the hub id, revision and commit of ``source``, if any."""
    if source.hub is None:
        return event
    from dataclasses import replace

    return replace(event, details={**event.details, "hub": source.hub.to_json()})


def _record(event: Any, registry: Path | None, no_record: bool) -> None:
    if no_record:
        return
    from lmassay.sealing.registry import record_event

    _, warning = record_event(event, registry)
    if warning:
        typer.echo(f"warning: {warning}", err=True)


def check_attest_signing(model: str, sign: Path | None) -> None:
    """Before ``attest --sign`` runs: the key must load and --model must be a local folder."""
    if sign is None:
        return
    from lmassay.sealing.statement import check_can_sign

    run_command("attest", check_can_sign, model, sign)


def finish_attest(result: Any, model: str, sign: Path | None, registry: Path | None) -> None:
    """After ``attest``: the signed statement (``--sign``) and the registry row (a failure warns)."""
    from lmassay.sealing.registry import record_attestation

    run_dir = result.paths["attestation"].parent
    done = run_command(
        "attest",
        record_attestation,
        result.document,
        run_dir,
        model,
        sign=sign,
        registry=registry,
    )
    if done.statement is not None:
        signed = done.statement
        typer.echo(f"signed statement: {signed.signature} (signer {signed.signer})", err=True)
    if done.warning:
        typer.echo(f"warning: {done.warning}", err=True)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Private key file (PEM, mode 0600).")],
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Public key file (default: OUT with suffix .pub)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing key files.")] = False,
) -> None:
    """Create an elliptic-curve P-256 key pair for seal and attest --sign.

    Example:

        lmassay keygen --out keys/lab.pem     # writes keys/lab.pem (0600) and keys/lab.pub
    """
    from lmassay.sealing.keys import generate_keypair

    pair = run_command("keygen", generate_keypair, out, public_key, force=force)
    typer.echo(f"private key: {pair.private_key}\npublic key:  {pair.public_key}")
    typer.echo(f"fingerprint: {pair.fingerprint}")


@app.command()
def seal(
    path: Annotated[
        str,
        typer.Argument(
            help="Model folder, dataset folder or file, an attestation.json, or a hub id."
        ),
    ],
    key: Annotated[Path, typer.Option("--key", "-k", help="Private key (PEM) to sign with.")],
    out: _SealOut = None,
    revision: _HubRevision = None,
    model: _AttestedModel = None,
    as_file: _AsFile = False,
    no_tensors: _NoTensors = False,
    manifest: _ManifestOut = None,
    registry: _Registry = None,
    no_record: _NoRecord = False,
    quiet: QuietProgress = False,
) -> None:
    """Sign a manifest of a model folder, a dataset or a file (OpenSSF model-signing format).

    The signature verifies with `lmassay verify` and with `model_signing verify key`. Given an
    attestation.json, sign a statement that the attestation is about exactly the model's weights.

    Examples:

        lmassay seal ./my-model --key lab.pem   # writes model.sig and model.tensors.sig there
        lmassay seal runs/suspect/attestation.json --key lab.pem --model ./suspect
        lmassay seal org/model --revision v1 --key lab.pem --out org-model-v1.sig   # hub id
    """
    from lmassay._atomic import atomic_write_json
    from lmassay.errors import InputError
    from lmassay.progress import cli_progress
    from lmassay.sealing.registry import seal_event
    from lmassay.sealing.signing import seal as seal_path
    from lmassay.sealing.statement import is_attestation_file, sign_attestation

    source = _locate("seal", path, revision, "path or hub id")
    target = source.path
    if source.hub is not None and out is None:
        refusal = InputError(
            f"{path} is a hub id: its signature is not written into the Hugging Face cache",
            "pass --out FILE for the signature",
        )
        fail("seal", refusal.one_line("seal"))
    with cli_progress(quiet) as progress:
        if is_attestation_file(target) and not as_file:
            result = run_command(
                "seal", sign_attestation, target, model, key, out,
                with_tensors=not no_tensors, progress=progress,
            )  # fmt: skip
        else:
            result = run_command(
                "seal", seal_path, target, key, out, with_tensors=not no_tensors,
                allow_symlinks=source.hub is not None, progress=progress,
            )  # fmt: skip
    if manifest is not None:
        run_command("seal", atomic_write_json, manifest, result.manifest.to_json())
    _print_seal(result)
    _record(_with_hub(seal_event(result), source), registry, no_record)


def _print_seal(result: Any) -> None:
    n_files = len(result.manifest.files)
    n_tensors = "no" if result.manifest.tensors is None else len(result.manifest.tensors)
    what = "attestation statement for" if result.kind == "attestation" else "sealed"
    typer.echo(
        f"{what} {result.path}: {n_files} file{'s' if n_files != 1 else ''}, {n_tensors} tensors"
    )
    typer.echo(f"root digest: {result.manifest.root}\nsigner:      {result.signer}")
    typer.echo(f"signature:   {result.signature}")


@app.command()
def verify(
    path: Annotated[
        str, typer.Argument(help="The folder or file the signature is about, or a hub id.")
    ],
    signature: Annotated[
        Path, typer.Option("--signature", "-s", help="Signature (model.sig or attestation.sig).")
    ],
    public_key: Annotated[
        Path, typer.Option("--public-key", "-p", help="The signer's public key (PEM).")
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
    revision: _HubRevision = None,
    registry: _Registry = None,
    no_record: _NoRecord = False,
    quiet: QuietProgress = False,
) -> None:
    """Check a signature and re-hash: exit 0 valid, 1 invalid (lists what changed), 2 unusable input.

    Works for seals by lmassay and by `model_signing sign key`, and for attestation statements
    (is this attestation about exactly these weights, signed by this key?).

    Examples:

        lmassay verify ./my-model --signature ./my-model/model.sig --public-key lab.pub
        lmassay verify ./suspect --signature runs/suspect/attestation.sig --public-key lab.pub
        lmassay verify org/model --revision v1 --signature org-model-v1.sig --public-key lab.pub
    """
    from lmassay._atomic import atomic_write_json
    from lmassay.progress import cli_progress
    from lmassay.sealing.registry import verify_event
    from lmassay.sealing.verifying import verify as verify_path

    source = _locate("verify", path, revision, "path or hub id")
    with cli_progress(quiet) as progress:
        result = run_command(
            "verify", verify_path, source.path, signature, public_key, progress=progress
        )
    if json_out is not None:
        found = result.to_json()
        if source.hub is not None:
            found["hub"] = source.hub.to_json()
        run_command("verify", atomic_write_json, json_out, found)
    _print_verify(result)
    _record(_with_hub(verify_event(result), source), registry, no_record)
    raise typer.Exit(EXIT_OK if result.valid else EXIT_FLAGGED)


def _print_verify(result: Any) -> None:
    label = "attestation statement" if result.kind == "attestation" else "signature"
    if result.valid:
        typer.echo(f"VALID: {result.path} matches the {label}, signed by {result.signer}")
        typer.echo(f"root digest: {result.actual_root}")
    else:
        typer.echo(f"INVALID: {result.path} does not match the {label} {result.signature}")
        if result.reason:
            typer.echo(f"  {result.reason} (key {result.signer})")
        for line in result.diff.lines() if result.diff else []:
            typer.echo(f"  {line}")
        if result.signed_root and result.actual_root and result.signed_root != result.actual_root:
            typer.echo(f"  signed root {result.signed_root}\n  actual root {result.actual_root}")
    for note in [*(result.diff.notes if result.diff else []), *result.notes]:
        typer.echo(f"note: {note}")
    if result.kind == "attestation" and result.predicate:
        summary = result.predicate.get("attestation") or {}
        flagged = ", ".join(summary.get("flagged") or []) or "none"
        typer.echo(f"attestation: verdict {summary.get('verdict')}, flagged: {flagged}")


@app.command()
def diff(
    base: Annotated[
        str,
        typer.Argument(help="The claimed base checkpoint (folder, .safetensors or hub id)."),
    ],
    model: Annotated[str, typer.Argument(help="The model to compare with it (or a hub id).")],
    base_revision: Annotated[
        str | None, typer.Option(help="Hub revision of a hub-id BASE; its commit is printed.")
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="Hub revision of a hub-id MODEL; its commit is printed."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full diff as JSON.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a heat map (HTML).")
    ] = None,
    changed_only: Annotated[
        bool, typer.Option("--changed-only", help="List only changed tensors on stdout.")
    ] = False,
    rank_rtol: Annotated[
        float, typer.Option(help="Singular values above RTOL x the largest count towards the rank.")
    ] = 1e-2,
    exact_svd_max: Annotated[
        int, typer.Option(help="Exact SVD up to this min(rows, cols); randomized beyond.")
    ] = 512,
    lowrank_q: Annotated[
        int, typer.Option(help="Singular values the randomized SVD estimates.")
    ] = 64,
    quiet: QuietProgress = False,
) -> None:
    """Per-tensor weight change of MODEL against BASE: relative change and effective rank of ΔW.

    A rank-one edit (ROME-style) shows as one tensor with effective rank 1; everything else
    unchanged. Reads one tensor at a time (memory-mapped).

    Example:

        lmassay diff ./base-model ./suspect --json diff.json --html diff.html
        lmassay diff openai-community/gpt2 someone/gpt2-tuned --revision v2   # hub ids
    """
    from lmassay.progress import cli_progress
    from lmassay.sealing.weight_diff import DiffConfig, diff_weights, write_diff_outputs

    base_source = _locate("diff", base, base_revision, "base")
    model_source = _locate("diff", model, revision, "model")
    config = DiffConfig(
        str(base_source.path),
        str(model_source.path),
        rank_rtol=rank_rtol,
        exact_svd_max=exact_svd_max,
        lowrank_q=lowrank_q,
    )
    with cli_progress(quiet) as progress:
        result = run_command("diff", diff_weights, config, progress)
    result.base_hub = None if base_source.hub is None else base_source.hub.to_json()
    result.model_hub = None if model_source.hub is None else model_source.hub.to_json()
    _print_diff(result, changed_only)
    written = run_command("diff", write_diff_outputs, result, json_out, html_out)
    for kind, written_path in written.items():
        typer.echo(f"{kind}: {written_path}")


def _print_diff(result: Any, changed_only: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(result.changed)} of {len(result.tensors)} tensors changed")
    for column in (
        "tensor",
        "layer",
        "shape",
        "rel change",
        "max |Δ|",
        "eff. rank",
        "entropy rank",
    ):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for t in result.tensors:
        if changed_only and not t.changed:
            continue
        rel = "inf" if t.rel_change is None else ("0" if not t.changed else f"{t.rel_change:.3e}")
        rank = (
            ""
            if t.effective_rank is None
            else f"{t.effective_rank}{'+' if t.rank_saturated else ''}"
        )
        table.add_row(
            t.name,
            "" if t.layer is None else str(t.layer),
            "x".join(str(n) for n in t.shape),
            rel if t.changed else "unchanged",
            f"{t.max_abs_change:.3g}" if t.changed else "",
            rank,
            "" if t.entropy_rank is None else f"{t.entropy_rank:.2f}",
        )
    Console(width=160).print(table)


@app.command()
def history(
    target: Annotated[
        str, typer.Argument(help="A model folder, a file, or a digest (8+ hex chars).")
    ],
    registry: _Registry = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the events as JSON lines instead of a table.")
    ] = False,
) -> None:
    """List what the registry knows about a model: seals, verifications and attestations.

    Example:

        lmassay history ./my-model
        lmassay history sha256:3f9a3f9a
    """
    from lmassay.sealing.registry import history as registry_history

    events, digest = run_command("history", registry_history, target, registry)
    if json_out:
        for event in events:
            typer.echo(json.dumps(event.to_json(), sort_keys=True))
        return
    if digest:
        typer.echo(f"{target}: manifest root {digest}")
    if not events:
        typer.echo("no events recorded")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(events)} events")
    for column in ("time", "action", "verdict", "signer", "digest", "path"):
        table.add_column(column)
    for e in events:
        table.add_row(
            e.time,
            e.action,
            e.verdict or "",
            (e.signer or "")[:23],
            (e.digest or e.tree_digest or "")[:23],
            e.path or "",
        )
    Console(width=200).print(table)
