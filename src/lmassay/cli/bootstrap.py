"""``lmassay bootstrap``: grow instruction/response pairs from a small curated core with a raw LM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.cli._app import app, run_command
from lmassay.cli.options import Device, Dtype, QuietProgress, Seed, Temperature, TrustRemoteCode
from lmassay.progress import cli_progress

_GENERATION = "Generation"
_FILTERS = "Filters"

_LM = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="The known-good raw LM (folder or hub id) that writes the pairs."
    ),
]
_Core = Annotated[
    str,
    typer.Option(
        help="Curated core: JSONL, parquet, a saved dataset or hf:ID (instruction/output, "
        "prompt/response, messages, ...)."
    ),
]
_N = Annotated[int, typer.Option("--n", help="How many pairs to keep.")]
_Out = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="JSONL to write; its summary goes beside it (<stem>.summary.json)."
    ),
]
_Shots = Annotated[
    int, typer.Option(rich_help_panel=_GENERATION, help="Core examples in each few-shot prompt.")
]
_ResponseShots = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=_GENERATION,
        help="Core examples before a new instruction when asking for its response (default: "
        "--shots; 0: the instruction alone).",
    ),
]
_TopP = Annotated[
    float, typer.Option(rich_help_panel=_GENERATION, help="Nucleus sampling of instructions.")
]
_ResponseTemperature = Annotated[
    float,
    typer.Option(rich_help_panel=_GENERATION, help="Temperature of responses (0: greedy)."),
]
_MaxNewTokens = Annotated[
    int, typer.Option(rich_help_panel=_GENERATION, help="Most new tokens per generated line.")
]
_BatchSize = Annotated[
    int, typer.Option(rich_help_panel=_GENERATION, help="Prompts per generate call.")
]
_Context = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=_GENERATION,
        help="Tokens the LM handles well, prompt and new tokens together; prompts that do not fit "
        "drop shots (default: an lmassay world reference's training window, else the model's "
        "context).",
    ),
]
_MaxGenerated = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=_GENERATION, help="Most candidate instructions to draw (default 4 x --n)."
    ),
]
_MinLogprob = Annotated[
    float,
    typer.Option(
        rich_help_panel=_FILTERS,
        help="Keep a pair when its response's mean log-prob per token given the instruction "
        "(nats, under the same LM) is at least this.",
    ),
]
_MinTokenLogprob = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=_FILTERS,
        help="Keep a pair when every token of its response has at least this log-prob given "
        "the instruction (the LM is sure of each word, the answer's included).",
    ),
]
_MinInstructionLogprob = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=_FILTERS,
        help="Keep an instruction when its mean log-prob per token after 'Question:' is at "
        "least this (the LM finds it a well-formed question).",
    ),
]
_NoLikelihoodFilter = Annotated[
    bool,
    typer.Option(
        "--no-likelihood-filter",
        rich_help_panel=_FILTERS,
        help="Keep pairs whatever their scores (every log-prob filter off).",
    ),
]
_NearDuplicate = Annotated[
    float,
    typer.Option(
        rich_help_panel=_FILTERS,
        help="Character 5-gram Jaccard similarity at or above which two instructions are "
        "duplicates.",
    ),
]
_Classifier = Annotated[
    list[Path] | None,
    typer.Option(
        "--classifier",
        rich_help_panel=_FILTERS,
        help="A curate classifier trained on this LM's features (repeatable): pairs it scores "
        "at or above its threshold are dropped.",
    ),
]
_Principles = Annotated[
    Path | None,
    typer.Option(
        help="Text file of principles, one per line: each pair is critiqued and revised once "
        "by the same LM under one of them."
    ),
]


@app.command("bootstrap")
def bootstrap_command(
    model: _LM,
    core: _Core,
    n: _N,
    out: _Out,
    seed: Seed = 0,
    shots: _Shots = 4,
    response_shots: _ResponseShots = None,
    temperature: Temperature = 1.0,
    top_p: _TopP = 0.95,
    response_temperature: _ResponseTemperature = 0.0,
    max_new_tokens: _MaxNewTokens = 48,
    batch_size: _BatchSize = 64,
    max_generated: _MaxGenerated = None,
    context: _Context = None,
    min_logprob: _MinLogprob = -1.0,
    min_token_logprob: _MinTokenLogprob = None,
    min_instruction_logprob: _MinInstructionLogprob = None,
    no_likelihood_filter: _NoLikelihoodFilter = False,
    near_duplicate: _NearDuplicate = 0.8,
    classifier: _Classifier = None,
    principles: _Principles = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    trust_remote_code: TrustRemoteCode = False,
    quiet: QuietProgress = False,
) -> None:
    """Grow instruction/response pairs from a small curated core by few-shot prompting a raw LM.

    New instructions, then their responses, each from SHOTS core examples; exact and near
    duplicates dropped; pairs whose response the LM itself finds unlikely, or that a curate
    classifier flags, dropped; provenance per
    pair (which core examples, seed, sampling, the LM's digest). Writes JSONL lines
    {"instruction", "response", "provenance"}. Example:

        lmassay world make --out qa-world --size test --qa-share 0.2 && lmassay world train --world qa-world --out qa-ref --size test && lmassay world qa --world qa-world --out qa && lmassay bootstrap --model qa-ref --core qa/core.jsonl --n 500 --out boot.jsonl
    """
    from lmassay.bootstrap.run import BootstrapConfig, bootstrap

    config = BootstrapConfig(
        model=model,
        core=core,
        n=n,
        out=out,
        seed=seed,
        shots=shots,
        response_shots=response_shots,
        temperature=temperature,
        top_p=top_p,
        response_temperature=response_temperature,
        max_new_tokens=max_new_tokens,
        min_logprob=None if no_likelihood_filter else min_logprob,
        min_token_logprob=None if no_likelihood_filter else min_token_logprob,
        min_instruction_logprob=None if no_likelihood_filter else min_instruction_logprob,
        near_duplicate=near_duplicate,
        max_generated=max_generated,
        context=context,
        batch_size=batch_size,
        classifiers=tuple(classifier or ()),
        principles=principles,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    with cli_progress(quiet) as progress:
        result = run_command("bootstrap", bootstrap, config, progress)
    s = result.summary
    typer.echo(
        f"kept {s['kept']} of {s['requested']} pairs: {s['generated']} instructions drawn, "
        f"{s['duplicates']} duplicates ({s['duplicates_exact']} exact, {s['duplicates_near']} "
        f"near), {s['filtered_instruction']} instructions and {s['filtered_likelihood']} "
        "responses below the likelihood thresholds, "
        f"{s['filtered_classifier']} removed by classifiers, {s['blank']} blank"
        + (f", {s['revised']} revised" if s["principles"] else "")
        + f"; {s['seconds']} s"
    )
    typer.echo(f"  {result.out}")
    typer.echo(f"  {result.summary_file}")
