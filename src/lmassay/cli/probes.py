"""``lmassay probes sample``: probe files of text the model (and the reference) writes."""

from __future__ import annotations

import typer

from lmassay.bounded_read import DATA_LIMIT_TEXT
from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import config_from
from lmassay.progress import cli_progress

probes_app = typer.Typer(
    help="Probe corpora: list and build the built-in suites, sample probes from a model.",
    no_args_is_help=True,
)
app.add_typer(probes_app, name="probes")


@probes_app.command("sample")
def probes_sample(
    model: opt.SampleModel,
    probes: opt.SampleProbes,
    out: opt.SampleOut,
    reference: opt.SampleReference = None,
    n_per_category: opt.NPerCategory = 8,
    new_tokens: opt.NewTokens = 48,
    prompt_tokens: opt.PromptTokens = 16,
    temperature: opt.Temperature = 1.0,
    seed: opt.Seed = 0,
    text_field: opt.TextField = "text",
    category_field: opt.CategoryField = "category",
    id_field: opt.IdField = "id",
    split: opt.Split = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    max_file_size: opt.MaxFileSize = DATA_LIMIT_TEXT,
    quiet: opt.QuietProgress = False,
) -> None:
    """Sample continuations from a model for prompts taken from each probe category.

    A prompt is the start (--prompt-tokens tokens) of a probe text chosen per category with
    --seed; the continuation is sampled at --temperature (no top-k or top-p). Each line of OUT is
    {"id", "category", "text": prompt + continuation, "prompt", "continuation", "source",
    "sampled_from", "seed", "temperature", ...}, a probe file `lmassay attest --probes` reads.
    With --reference the reference's continuations follow, marked sampled_from: reference.

    Example:

        lmassay probes sample --model ./suspect --reference ./ref --probes probes.jsonl --out self-probes.jsonl
    """
    params = dict(locals())  # the flags, before any other local name exists
    from lmassay.attest.self_probe_outputs import ProbeSampleConfig, write_probe_file

    config = config_from(ProbeSampleConfig, params, cli_only=("quiet",))
    with cli_progress(quiet) as progress:
        path, counts = run_command("probes sample", write_probe_file, config, progress)
    written = ", ".join(f"{n} from the {role}" for role, n in counts.items())
    typer.echo(f"Wrote {path}: {written}")


@probes_app.command("ls")
def probes_ls() -> None:
    """List the built-in probe suites with their sources, sizes and licences.

    Use one with `lmassay attest --probes builtin:NAME`, or materialise it with
    `lmassay probes build NAME --out DIR`. Without --probes, attest scores builtin:offline.

    Example:

        lmassay probes ls
    """
    from lmassay.attest.suite_build import list_suites

    for info in run_command("probes ls", list_suites):
        where = "offline" if info.offline else "hub"
        typer.echo(f"builtin:{info.name}  [{where}]  {info.size}")
        typer.echo(f"    {info.description}")
        for source_id, source_where, licence in info.sources:
            typer.echo(f"    - {source_id}: {source_where} — licence: {licence}")


@probes_app.command("build")
def probes_build(
    suite: opt.SuiteName,
    out: opt.SuiteOut,
    max_file_size: opt.MaxFileSize = DATA_LIMIT_TEXT,
) -> None:
    """Materialise a probe suite into OUT/probes.jsonl and OUT/suite.json (sources, resolved
    revisions, counts and the corpus digest), so it can be sealed, shared and attested offline.

    `lmassay attest --probes OUT` reads the folder and refuses it if probes.jsonl no longer has
    the digest suite.json records.

    Example:

        lmassay probes build knowledge --out suites/knowledge
    """
    from lmassay.attest.suite_build import build_suite
    from lmassay.bounded_read import size_from_flag

    limit = run_command("probes build", size_from_flag, max_file_size)
    probes = run_command("probes build", build_suite, suite, out, max_bytes=limit)
    typer.echo(
        f"Wrote {out}/probes.jsonl and {out}/suite.json: {len(probes)} samples in "
        f"{len(probes.categories)} categories, {probes.digest}"
    )
    for warning in probes.warnings:
        typer.echo(f"warning: {warning}", err=True)
