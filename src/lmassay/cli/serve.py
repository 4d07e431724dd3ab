"""``lmassay serve`` (the hosted attestation service), ``lmassay serve token create|revoke|list``
and ``lmassay serve model add|remove|list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.cli import options as opt
from lmassay.cli._app import app, fail, run_command

serve_app = typer.Typer(
    help="Host attestation as a service: a job queue, workers, signed results on a public page.",
    invoke_without_command=True,
)
app.add_typer(serve_app, name="serve")
token_app = typer.Typer(help="API tokens for submitting jobs (only their hashes are stored).")
serve_app.add_typer(token_app, name="token", no_args_is_help=True)

_Key = Annotated[
    Path | None,
    typer.Option("--key", "-k", help="The service's private key (PEM): every result is signed."),
]
_AllowLocalRoot = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-local-root",
        metavar="DIR",
        help="Jobs may name local model folders and probe files under DIR (repeatable).",
    ),
]
model_app = typer.Typer(help="Models the operator registers: requests name them registered:NAME.")
serve_app.add_typer(model_app, name="model", no_args_is_help=True)
_TokenName = Annotated[str | None, typer.Option("--name", help="A name for the token.")]


@serve_app.callback()
def serve(
    ctx: typer.Context,
    key: _Key = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    registry: opt.Registry = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the jobs' results (default: serve-results beside the registry)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes running jobs (0: queue only).")
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Shard each job's scoring on Ray: local, or a cluster address."),
    ] = None,
    allow_local_root: _AllowLocalRoot = None,
    trust_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust-key",
            metavar="PUB",
            help="A public key whose seals on probe sets jobs accept (repeatable); a sealed "
            "probe set is verified before its job runs.",
        ),
    ] = None,
    rate_limit: Annotated[int, typer.Option(help="Submissions per minute per token.")] = 30,
    queue_cap: Annotated[int, typer.Option(help="Most jobs queued or running (429 beyond).")] = 100,
    max_body: Annotated[
        int, typer.Option(help="Largest request body in bytes (413 beyond).")
    ] = 65536,
    max_attempts: Annotated[
        int, typer.Option(help="Runs of a job whose worker dies before it is marked failed.")
    ] = 3,
    threads: Annotated[int | None, typer.Option(help="Torch threads per worker.")] = None,
    public_url: Annotated[
        str | None, typer.Option(help="The address clients use, shown in verify commands.")
    ] = None,
) -> None:
    """Start the attestation service: the HTTP API, the results page and the workers.

    Example:

        lmassay keygen --out service.pem
        lmassay serve token create --registry serve.sqlite --name alice
        lmassay serve --host 127.0.0.1 --port 8000 --key service.pem --registry serve.sqlite

    The queue lives in the registry file, so a restart loses nothing. Stop with Ctrl-C.
    """
    if ctx.invoked_subcommand is not None:
        return
    if key is None:
        fail("serve", "--key is missing — create one with: lmassay keygen --out service.pem")
    from lmassay.serve.config import ServeConfig
    from lmassay.serve.server import open_service
    from lmassay.serve.server import serve as run_service

    config = ServeConfig(
        key=key,
        host=host,
        port=port,
        registry=registry,
        results=results,
        workers=workers,
        ray=ray,
        allow_local_root=tuple(allow_local_root or ()),
        trust_keys=tuple(trust_key or ()),
        rate_limit=rate_limit,
        queue_cap=queue_cap,
        max_body=max_body,
        max_attempts=max_attempts,
        threads=threads,
        public_url=public_url,
    )
    run_command("serve", open_service, config)  # an unusable registry or key: one line, exit 2
    run_command("serve", run_service, config)


@token_app.command("create")
def token_create(registry: opt.Registry = None, name: _TokenName = None) -> None:
    """Create an API token; it is printed once, alone on the last line (only its hash is kept).

    Example:

        lmassay serve token create --registry serve.sqlite --name alice
    """
    from lmassay.serve.store import JobStore

    store = run_command("serve token create", JobStore, registry)
    token, info = run_command("serve token create", store.create_token, name)
    typer.echo(f"token {info.name!r} created in {store.path}; it is shown only now:")
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    registry: opt.Registry = None,
) -> None:
    """Revoke a token by its name: its submissions are refused (403) from now on.

    Example:

        lmassay serve token revoke alice --registry serve.sqlite
    """
    from lmassay.serve.store import JobStore

    store = run_command("serve token revoke", JobStore, registry)
    info = run_command("serve token revoke", store.revoke_token, name)
    typer.echo(f"token {info.name!r} revoked at {info.revoked}")


@token_app.command("list")
def token_list(registry: opt.Registry = None) -> None:
    """List the tokens' names, creation and revocation times (never the tokens).

    Example:

        lmassay serve token list --registry serve.sqlite
    """
    from lmassay.serve.store import JobStore

    store = run_command("serve token list", JobStore, registry)
    for info in run_command("serve token list", store.tokens):
        state = f"revoked {info.revoked}" if info.revoked else "active"
        typer.echo(f"{info.name}\tcreated {info.created}\t{state}")


@model_app.command("add")
def model_add(
    name: Annotated[str, typer.Argument(help="The name requests use: registered:NAME.")],
    source: Annotated[
        str, typer.Argument(metavar="PATH_OR_HUB_ID", help="A local model folder or a hub id.")
    ],
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="Hub revision (branch, tag or commit) of a hub id."),
    ] = None,
    registry: opt.Registry = None,
) -> None:
    """Register a model: jobs may then name it ``"model": "registered:NAME"`` (a local folder
    registered here needs no --allow-local-root; clients never see or name its path).

    Example:

        lmassay serve model add base ./models/base --registry serve.sqlite
    """
    from lmassay.serve.requests import registered_model
    from lmassay.serve.store import JobStore

    model = run_command("serve model add", registered_model, name, source, revision)
    store = run_command("serve model add", JobStore, registry)
    added = run_command("serve model add", store.add_model, model)
    at = f" at revision {added.revision}" if added.revision else ""
    typer.echo(f"model {added.name!r} registered: {added.source}{at}")


@model_app.command("remove")
def model_remove(
    name: Annotated[str, typer.Argument(help="The registered name.")],
    registry: opt.Registry = None,
) -> None:
    """Remove a registered model (queued jobs keep what it resolved to when they were submitted).

    Example:

        lmassay serve model remove base --registry serve.sqlite
    """
    from lmassay.serve.store import JobStore

    store = run_command("serve model remove", JobStore, registry)
    removed = run_command("serve model remove", store.remove_model, name)
    typer.echo(f"model {removed.name!r} removed")


@model_app.command("list")
def model_list(registry: opt.Registry = None) -> None:
    """List the registered models: name, source, revision, registration time.

    Example:

        lmassay serve model list --registry serve.sqlite
    """
    from lmassay.serve.store import JobStore

    store = run_command("serve model list", JobStore, registry)
    for model in run_command("serve model list", store.models):
        typer.echo(f"{model.name}\t{model.source}\t{model.revision or '-'}\t{model.created}")
