"""``lmassay curate train`` and ``curate filter``: classifiers on a known-good LM's own features
that remove biased items from instruction or fine-tuning data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmassay.cli import options as opt
from lmassay.cli._app import app, run_command
from lmassay.cli.options import config_from
from lmassay.curate.features import Pooling
from lmassay.progress import cli_progress

curate_app = typer.Typer(
    help="Classifiers on a known-good LM's hidden states that remove biased items from data.",
    no_args_is_help=True,
)
app.add_typer(curate_app, name="curate")

FEATURES = "Features and classifier"

_TrainModel = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Known-good LM whose hidden states are the features (folder or hub id).",
    ),
]
_Labelled = Annotated[
    str,
    typer.Option(
        help='Labelled data: JSONL {"text": ..., "label": "remove" | "keep"} (optional '
        '"category"), parquet, a saved datasets folder or hf:ORG/NAME.'
    ),
]
_ClassifierOut = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Classifier folder to write (classifier.json, .safetensors, report)."
    ),
]
_TextField = Annotated[
    str | None,
    typer.Option(
        help="Field holding the text (default: text, or an instruction pair's prompt and "
        "response: instruction/output, prompt/response, messages, ...)."
    ),
]
_LabelField = Annotated[str, typer.Option(help='Field holding "remove" or "keep".')]
_CategoryField = Annotated[
    str, typer.Option(help="Field holding a category (optional in the data; counted per value).")
]
_Layer = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=FEATURES,
        help="Hidden state read: 0 the token embeddings, i the output of block i, negative "
        "from the end (default: the block three quarters deep).",
    ),
]
_Pooling = Annotated[
    Pooling,
    typer.Option(
        rich_help_panel=FEATURES,
        help="Over a text's tokens: mean, max (per dimension) or last (the final token's state).",
    ),
]
_MaxTokens = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=FEATURES,
        help="Most tokens of a text read, from its start (default: 1024, or the model's "
        "context if shorter).",
    ),
]
_C = Annotated[
    float,
    typer.Option(
        "--c", rich_help_panel=FEATURES, help="Inverse L2 strength of the logistic regression."
    ),
]
_Sweep = Annotated[
    bool,
    typer.Option(
        "--sweep",
        rich_help_panel=FEATURES,
        help="Also cross-validate every layer and pooling and show them in the report (keeps "
        "features of all layers in memory).",
    ),
]
_TokenBudget = Annotated[int, typer.Option(help="Tokens per forward batch.")]


@curate_app.command("train")
def curate_train(
    model: _TrainModel,
    labelled: _Labelled,
    out: _ClassifierOut,
    text_field: _TextField = None,
    label_field: _LabelField = "label",
    category_field: _CategoryField = "category",
    split: opt.Split = None,
    layer: _Layer = None,
    pooling: _Pooling = "mean",
    max_tokens: _MaxTokens = None,
    c: _C = 1.0,
    sweep: _Sweep = False,
    token_budget: _TokenBudget = 4096,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    revision: opt.Revision = None,
    quiet: opt.Quiet = False,
) -> None:
    """Train a classifier on the LM's hidden-state features from texts labelled remove/keep.

    Cross-validates it (precision, recall, AUC at the F1-best threshold, written to
    OUT/report.json and report.html) and saves it without pickle, with the LM's digest, in a
    folder `lmassay seal` can sign. Example:

        lmassay curate train --model reference --labelled labelled.jsonl --out slant-classifier
    """
    params = dict(locals())
    from lmassay.curate import TrainConfig, train_classifier

    config = config_from(
        TrainConfig, params, cli_only=("quiet",), labelled=str(labelled), out=str(out)
    )
    with cli_progress(quiet) as progress:
        result = run_command("curate train", train_classifier, config, progress)
    if not quiet:
        cv = result.report["cv"]
        typer.echo(
            f"cross-validated ({cv['folds']} folds, {cv['n_remove']} remove, {cv['n_keep']} "
            f"keep): AUC {cv['auc']:.3f}, precision {cv['precision']:.3f}, recall "
            f"{cv['recall']:.3f} at threshold {result.classifier.threshold:.3f}"
        )
    typer.echo(f"Classifier: {result.out}")
    typer.echo(f"Report: {result.out / 'report.html'}")


_Classifier = Annotated[
    str, typer.Option("--classifier", "-c", help="A folder written by `lmassay curate train`.")
]
_Data = Annotated[
    str,
    typer.Option(
        help="Data to filter: JSONL, parquet, a saved datasets folder or hf:ORG/NAME[@REVISION]."
    ),
]
_FilterOut = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Folder for kept.jsonl, removed.jsonl, curate.json, report.html."
    ),
]
_FilterModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="The LM to read features with (default: the one the classifier records); its "
        "digest must be the classifier's.",
    ),
]
_Threshold = Annotated[
    float | None,
    typer.Option(help="Remove items scoring at least this (default: the classifier's)."),
]
_TargetRecall = Annotated[
    float | None,
    typer.Option(
        help="Instead of --threshold: the highest threshold whose recall on the classifier's "
        "cross-validated scores reaches this."
    ),
]
_FilterTextField = Annotated[
    str | None,
    typer.Option(help="Field holding the text (default: the one the classifier was trained on)."),
]
_BatchSize = Annotated[int, typer.Option(help="Rows read and scored together.")]
_Examples = Annotated[
    int, typer.Option(help="Items shown on each side of the threshold in report.html.")
]


@curate_app.command("filter")
def curate_filter(
    classifier: _Classifier,
    data: _Data,
    out: _FilterOut,
    model: _FilterModel = None,
    threshold: _Threshold = None,
    target_recall: _TargetRecall = None,
    text_field: _FilterTextField = None,
    category_field: _CategoryField = "category",
    split: opt.Split = None,
    batch_size: _BatchSize = 256,
    examples: _Examples = 10,
    token_budget: _TokenBudget = 4096,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    allow_pickle: opt.AllowPickle = False,
    trust_remote_code: opt.TrustRemoteCode = False,
    revision: opt.Revision = None,
    quiet: opt.Quiet = False,
) -> None:
    """Score every item of --data with a curate classifier; write kept and removed items.

    Streams the data in batches (memory does not grow with it). OUT/kept.jsonl and
    OUT/removed.jsonl hold every input line as it was plus "curate_score"; OUT/curate.json the
    counts, removed per category, threshold, digests; OUT/report.html the items nearest the
    threshold. Example:

        lmassay curate filter --classifier slant-classifier --data train.jsonl --out filtered
    """
    params = dict(locals())
    from lmassay.curate import FilterConfig, filter_dataset

    config = config_from(FilterConfig, params, cli_only=("quiet",), out=str(out))
    with cli_progress(quiet) as progress:
        result = run_command("curate filter", filter_dataset, config, progress)
    summary = result.summary
    if not quiet:
        for row in summary["categories"]:
            typer.echo(f"  {row['category']}: {row['removed']} of {row['total']} removed")
    counts = summary["counts"]
    typer.echo(
        f"{counts['removed']} of {counts['total']} items removed, {counts['kept']} kept "
        f"(threshold {summary['threshold']['value']:.3f}): {result.out}"
    )
