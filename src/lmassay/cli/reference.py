"""``lmassay reference build``: a compact, sealable cache of the reference's scores on a probe corpus."""

from __future__ import annotations

from typing import Annotated

import typer

from lmassay.attest.reference_cache import DEFAULT_CALIBRATION_TOKENS, DEFAULT_TOP_K
from lmassay.bounded_read import DATA_LIMIT_TEXT
from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import config_from
from lmassay.progress import cli_progress

reference_app = typer.Typer(
    help="Reference caches: score the reference once, attest many models against it.",
    no_args_is_help=True,
)
app.add_typer(reference_app, name="reference")

_BuildReference = Annotated[
    str,
    typer.Option("--reference", "-r", help="Known-good reference model: local folder or hub id."),
]
_CacheOut = Annotated[
    str, typer.Option("--out", "-o", help="Cache file to write (e.g. ref.lmref), atomically.")
]
_TopK = Annotated[
    int,
    typer.Option(
        "--top-k",
        help="Reference tokens kept per scored token; the rest is one tail bucket (KL is then a "
        "lower bound of the full KL).",
    ),
]
_CalibrationTokens = Annotated[
    int,
    typer.Option(
        help="Scored tokens whose full reference distribution is kept, so each attestation "
        "measures the bound's error on them (at most one per 1,000 scored tokens; 0: none).",
    ),
]


@reference_app.command("build")
def reference_build(
    reference: _BuildReference,
    out: _CacheOut,
    probes: opt.Probes = None,
    top_k: _TopK = DEFAULT_TOP_K,
    calibration_tokens: _CalibrationTokens = DEFAULT_CALIBRATION_TOKENS,
    text_field: opt.TextField = "text",
    category_field: opt.CategoryField = "category",
    id_field: opt.IdField = "id",
    split: opt.Split = None,
    per_category: opt.PerCategory = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    max_length: opt.MaxLength = None,
    token_budget: opt.TokenBudget = None,
    ray: opt.Ray = None,
    ray_workers: opt.RayWorkers = None,
    max_file_size: opt.MaxFileSize = DATA_LIMIT_TEXT,
    quiet: opt.QuietProgress = False,
) -> None:
    """Score a probe corpus with the reference once and keep its top-K per token in one file.

    The file binds the reference's digest, the tokenizer, the probes and the scoring contract;
    `lmassay seal` signs it and `lmassay verify` checks it. `lmassay attest --reference-cache`
    then runs only the model under test, with the same probe flags.

    Example:

        lmassay reference build --reference ./base --probes probes.jsonl --out base.lmref
        lmassay attest --model ./suspect --reference-cache base.lmref --probes probes.jsonl --out runs/suspect

    Sharded on Ray (a private local cluster; or --ray HOST:6379 to join one):

        lmassay reference build --reference ./base --probes probes.jsonl --out base.lmref --ray local
    """
    params = dict(locals())  # the flags, before any other local name exists
    from lmassay.attest.reference_cache import ReferenceBuildConfig, build_reference_cache

    config = config_from(ReferenceBuildConfig, params, cli_only=("quiet",))
    with cli_progress(quiet) as progress:
        result = run_command("reference build", build_reference_cache, config, progress)
    head = result.header
    typer.echo(
        f"Wrote {result.path}: {head.n_tokens:,} tokens of {head.n_samples:,} samples, top-{head.top_k}, "
        f"{result.n_bytes / 2**20:.2f} MiB ({result.bytes_per_token:.0f} bytes/token, "
        f"{100 * result.bytes_per_token / (2 * head.vocab_size):.2f}% of 2 bytes x vocabulary)"
    )
    typer.echo(f"digest: {result.digest}")
