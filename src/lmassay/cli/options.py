"""Every option of ``lmassay attest``, ``repair`` and ``edit``: one ``Annotated`` alias each, with its help.

An option that means the same in several commands (``--device``, ``--allow-pickle``, ``--seed``,
``--quiet``, ...) is one alias here, used by all of them; an option whose meaning differs by command
(``--model``, ``--steps``, ``--kl-weight``, ...) has one alias per meaning, named after its
command. Options are grouped into help panels (:data:`LOADING`, ...), which also keeps
each panel's table narrow enough for 80 columns. Closed sets of values are ``Literal`` types from :mod:`lmassay.choices`, so ``--help``
lists them and click refuses anything else. Other command modules may use these aliases too.

:func:`config_from` turns a command's parameters into its configuration, field by field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lmassay import choices
from lmassay.attest import streaming
from lmassay.attest.model_loading import DEVICE_CHOICES

LOADING = "Model loading"
SCORING = "Scoring and statistics"
EDITING = "Editing"
TRAINING = "Training"
MONITORING = "Held-out monitoring and checkpoints"

# --------------------------------------------------------------------------------------------
# Model loading: attest, repair and edit (the fields of lmassay.attest.model_loading.ModelOptions)

Device = Annotated[
    str,
    typer.Option(
        rich_help_panel=LOADING, help=f"{DEVICE_CHOICES} (auto: CUDA, then MPS, then CPU)."
    ),
]
Dtype = Annotated[
    choices.Dtype,
    typer.Option(
        "--dtype",
        rich_help_panel=LOADING,
        help="auto: float32 on CPU, bfloat16 on GPUs that support it.",
    ),
]
EditDtype = Annotated[
    choices.Dtype,
    typer.Option(
        "--dtype",
        rich_help_panel=LOADING,
        help="Dtype the edits are computed in; the model is saved in its own.",
    ),
]
TrainDtype = Annotated[
    choices.TrainDtype,
    typer.Option(
        "--dtype",
        rich_help_panel=LOADING,
        help="auto: bfloat16 where the GPU supports it, else float32.",
    ),
]
AllowPickle = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        rich_help_panel=LOADING,
        help="Allow pickled weights (*.bin); unpickling can run code.",
    ),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        rich_help_panel=LOADING,
        help="Allow the model's own Python code to run.",
    ),
]
Revision = Annotated[
    str | None,
    typer.Option(
        "--revision",
        rich_help_panel=LOADING,
        help="Hub revision (branch, tag or commit) of a hub-id --model; the commit it resolves "
        "to is recorded. A local folder ignores it.",
    ),
]
ReferenceRevision = Annotated[
    str | None,
    typer.Option(
        "--reference-revision",
        rich_help_panel=LOADING,
        help="Hub revision of a hub-id --reference (default: its default branch); the commit is "
        "recorded.",
    ),
]

# --------------------------------------------------------------------------------------------
# Shared by several commands

Seed = Annotated[
    int,
    typer.Option(help="Seed of every random choice (sampling, bootstrap, data order, training)."),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress output and no printed summary.")
]
Kind = Annotated[
    choices.TamperKind,
    typer.Option(
        metavar="KIND",  # the choices are listed in the help: too long for the metavar column
        help=f"Tamper-zoo kind of the tampered copy: {', '.join(choices.TAMPER_KINDS)}.",
    ),
]
QuietProgress = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
"""``--quiet`` of the commands that still print their one-line result (world, zoo, demo, seal)."""
TextField = Annotated[str, typer.Option(help="Field holding the text (JSONL / dataset / parquet).")]
CategoryField = Annotated[str, typer.Option(help="Field holding the category.")]
NBootstrap = Annotated[
    int, typer.Option(rich_help_panel=SCORING, help="Bootstrap resamples of the attestation.")
]
Reference = Annotated[
    str | None,
    typer.Option("--reference", "-r", help="Known-good reference model: local folder or hub id."),
]
ReferenceCache = Annotated[
    str | None,
    typer.Option(
        "--reference-cache",
        help="Instead of --reference: a cache of the reference's top-K scores on these probes "
        "(`lmassay reference build`); only the model runs, KL is a lower bound.",
    ),
]
Registry = Annotated[
    Path | None,
    typer.Option(help="Registry database (default: $LMASSAY_REGISTRY or the user data folder)."),
]
MaxFileSize = Annotated[
    str,
    typer.Option(
        "--max-file-size",
        metavar="SIZE",
        help="Most bytes a probe, data or facts file (or the files of a folder together) may "
        "hold, e.g. 512MiB or 8GiB; only regular files are read.",
    ),
]

# --------------------------------------------------------------------------------------------
# lmassay attest

Model = Annotated[
    str, typer.Option("--model", "-m", help="Model under test: local folder or hub id.")
]
Probes = Annotated[
    str | None,
    typer.Option(
        "--probes",
        "-p",
        help="Probe corpus: .jsonl, folder of category/*.txt, saved HF dataset, .parquet, "
        "hf:ORG/NAME[:CONFIG][@REVISION] (or hf:FOLDER), a suite .yaml, builtin:NAME, or a "
        "folder from `lmassay probes build`. Default: builtin:offline (shipped, no network).",
    ),
]
ChatTemplate = Annotated[
    bool,
    typer.Option(
        "--chat-template",
        rich_help_panel=SCORING,
        help="Render conversation probes (prompt + response, or messages) with the model's chat "
        "template and score only the response tokens (as lm-eval --apply_chat_template).",
    ),
]
Out = Annotated[str, typer.Option("--out", "-o", help="Output folder (created if missing).")]
Baseline = Annotated[
    str | None,
    typer.Option(
        help="Without --reference: the --out folder of an earlier attestation of a trusted "
        "model on the same probes."
    ),
]
IdField = Annotated[str, typer.Option(help="Field holding a sample id (optional in the data).")]
Split = Annotated[
    str | None, typer.Option(help="Split of an hf: dataset or of a saved HF DatasetDict.")
]
PerCategory = Annotated[int | None, typer.Option(help="Subsample N texts per category.")]
MaxLength = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=SCORING, help="Context window for scoring (default: the model's)."
    ),
]
TokenBudget = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=SCORING, help="Tokens per batch (default: from the vocabulary size)."
    ),
]
Offload = Annotated[
    streaming.Offload,
    typer.Option(
        "--offload",
        rich_help_panel=SCORING,
        help="none: load the whole model; stream: one transformer block at a time from the "
        "safetensors files, for models larger than memory (GPT-2, Llama/Mistral/Qwen, GPT-NeoX).",
    ),
]
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray",
        rich_help_panel=SCORING,
        metavar="local|ADDRESS",
        help="Score in shards on Ray workers: local starts a private cluster on this machine for "
        "the run; HOST:PORT (or ray://HOST:PORT, auto) joins a running one (ray start --head).",
    ),
]
RayWorkers = Annotated[
    int | None,
    typer.Option(
        "--ray-workers",
        rich_help_panel=SCORING,
        help="Ray workers, each loading the models once (default: one per GPU, else per CPU).",
    ),
]
Comparison = Annotated[
    choices.Comparison,
    typer.Option(
        "--comparison",
        rich_help_panel=SCORING,
        help="auto: KL if the tokenizers match, else bits/byte.",
    ),
]
Alpha = Annotated[
    float,
    typer.Option(rich_help_panel=SCORING, help="False-discovery level for Benjamini–Hochberg."),
]
NoiseFloor = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=SCORING,
        help="Smallest effect that can flag a category (nats/token for KL, bits/byte for bpb).",
    ),
]
SpreadMultiple = Annotated[
    float,
    typer.Option(
        rich_help_panel=SCORING,
        help="A category's mean effect must also exceed this many spreads (robust standard "
        "deviations) of the other categories' levels; 0 keeps only --noise-floor.",
    ),
]
SparseFloor = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=SCORING,
        help="Smallest sparse effect that can flag a category: the median excess of its outlier "
        "samples' top-4 token KL over the other categories' 99th percentile (nats; bits/byte "
        "for bpb).",
    ),
]
AnswerFloor = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=SCORING,
        help="Smallest answer-test effect that can flag a category (nats; default 0.5): the "
        "median excess of its outlier answers' drop in log-probability over the other "
        "categories' 99th percentile; it must also exceed 2 spreads of their drops. Probe "
        "samples name their answer with an 'answer' field.",
    ),
]
NPermutations = Annotated[
    int,
    typer.Option(
        rich_help_panel=SCORING,
        help="Label permutations calibrating the sparse test (0: no sparse test).",
    ),
]
DifferentModelThreshold = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=SCORING,
        help="Median category level above which the model is called a different model.",
    ),
]
MinSamples = Annotated[
    int, typer.Option(rich_help_panel=SCORING, help="Fewest samples for a category to be tested.")
]
SELF_PROBING = "Self-probing (what the model now says)"
SelfProbe = Annotated[
    int,
    typer.Option(
        "--self-probe",
        metavar="N",
        rich_help_panel=SELF_PROBING,
        help="After the first pass, sample N continuations per category from the model and "
        "score them with both models: KL(model ‖ reference) on its own text and the excerpts "
        "the reference finds least likely (0: off). Needs --reference.",
    ),
]
SelfProbeTokens = Annotated[
    int, typer.Option(rich_help_panel=SELF_PROBING, help="Most new tokens per continuation.")
]
SelfProbePromptTokens = Annotated[
    int,
    typer.Option(
        rich_help_panel=SELF_PROBING, help="Tokens of a probe text's start used as the prompt."
    ),
]
SelfProbeTemperature = Annotated[
    float,
    typer.Option(
        rich_help_panel=SELF_PROBING,
        help="Sampling temperature (1.0: the model's own distribution).",
    ),
]
NoReport = Annotated[bool, typer.Option("--no-report", help="Skip report.html / report.md.")]
Sign = Annotated[
    Path | None,
    typer.Option(
        "--sign",
        help="Private key: also write OUT/attestation.sig, a signed statement that this "
        "attestation is about exactly the --model folder's weights (see lmassay verify).",
    ),
]

# --------------------------------------------------------------------------------------------
# lmassay edit

EditModel = Annotated[
    str, typer.Option("--model", "-m", help="Model to edit: local folder or hub id.")
]
Facts = Annotated[
    str,
    typer.Option(
        "--facts",
        "-f",
        help='JSONL, one fact a line: {"prompt": ..., "subject": ..., "target": ...} '
        '(optional "id").',
    ),
]
EditOut = Annotated[
    str,
    typer.Option(
        "--out", "-o", help="Folder for the edited model: new or empty (see --overwrite)."
    ),
]
EditReference = Annotated[
    str | None,
    typer.Option(
        "--reference", "-r", help="Attest the edited model against this known-good model."
    ),
]
EditProbes = Annotated[
    str | None,
    typer.Option("--probes", "-p", help="Probe corpus for the attestation (with --reference)."),
]
CovarianceTexts = Annotated[
    str | None,
    typer.Option(
        help='Texts for the key statistics: .jsonl with "text" per line, a folder of '
        "category/*.txt, or parquet (default: the probes; without them C = I)."
    ),
]
Layer = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=EDITING,
        help="Layer whose MLP output projection is edited (default: middle).",
    ),
]
FactToken = Annotated[
    choices.FactToken | None,
    typer.Option(
        "--fact-token",
        rich_help_panel=EDITING,
        help="Where the key is read (default: subject_last).",
    ),
]
MinProbability = Annotated[
    float,
    typer.Option(
        rich_help_panel=EDITING, help="A fact is verified when P(target | prompt) is at least this."
    ),
]
EditSteps = Annotated[
    int, typer.Option(rich_help_panel=EDITING, help="Optimisation steps of each value vector.")
]
EditLr = Annotated[
    float, typer.Option(rich_help_panel=EDITING, help="Adam learning rate of the value vector.")
]
EditKlWeight = Annotated[
    float,
    typer.Option(
        rich_help_panel=EDITING, help='Weight of the KL term that keeps "{subject} is a" unchanged.'
    ),
]
WeightDecay = Annotated[
    float, typer.Option(rich_help_panel=EDITING, help="Weight of the ‖δ‖ penalty.")
]
Clamp = Annotated[
    float, typer.Option(rich_help_panel=EDITING, help="‖δ‖ is kept at most clamp · ‖W k*‖.")
]
Ridge = Annotated[
    float, typer.Option(rich_help_panel=EDITING, help="Ridge added to the second moment C.")
]
NPrefixes = Annotated[
    int,
    typer.Option(
        rich_help_panel=EDITING,
        help="Contexts the value is optimised over (the bare prompt + N-1).",
    ),
]
NCovarianceTexts = Annotated[
    int,
    typer.Option(
        rich_help_panel=EDITING, help="At most this many covariance texts (sampled with --seed)."
    ),
]
Overwrite = Annotated[
    bool, typer.Option(help="Replace an existing --out folder once the new one is complete.")
]

# --------------------------------------------------------------------------------------------
# lmassay repair

RepairModel = Annotated[
    str, typer.Option(help="The model the attestation judged (folder or hub id).")
]
Attestation = Annotated[
    Path, typer.Option(help="The attestation that flagged it (attestation.json or its folder).")
]
RepairData = Annotated[
    Path,
    typer.Option(
        help="Repair text with categories (JSONL, category folders of .txt, parquet, saved "
        "dataset); must not contain the attestation's probes."
    ),
]
RepairOut = Annotated[
    Path, typer.Option(help="Folder for the repaired model; OUT/repair/ gets the report.")
]
Mode = Annotated[
    choices.Mode,
    typer.Option(
        "--mode",
        help="wide: LM fine-tuning on all of --data; narrow: LM fine-tuning on the flagged "
        "categories' text; distill: KL(reference ‖ model) on the flagged categories' text. "
        "narrow and distill add a KL penalty to the starting model on the other categories.",
    ),
]
Method = Annotated[
    choices.Method,
    typer.Option("--method", help="lora (peft adapters) or full fine-tuning."),
]
RepairReference = Annotated[
    str | None, typer.Option(help="Known-good model; default: the attestation's reference.")
]
Categories = Annotated[
    str | None,
    typer.Option(help="Comma-separated categories to repair; default: the flagged ones."),
]
RepairSteps = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="Most optimiser steps.")]
RepairLr = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=TRAINING, help="Peak learning rate (default 1e-3 LoRA, 1e-4 full)."
    ),
]
BatchSize = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="Windows per step.")]
SeqLen = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="Tokens per window.")]
LoraRank = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="LoRA rank.")]
LoraAlpha = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="LoRA alpha.")]
RepairKlWeight = Annotated[
    float,
    typer.Option(
        rich_help_panel=TRAINING,
        help="narrow/distill: weight of the anchor on the other categories' text (0: off): "
        "KL to the reference for distill, to the model before repair for narrow.",
    ),
]
AnchorSamples = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=TRAINING,
        help="narrow/distill: texts sampled from the reference to anchor the categories --data "
        "lacks. Default: 256 when --data lacks a category the repair does not target; 0: never.",
    ),
]
Holdout = Annotated[
    float,
    typer.Option(
        rich_help_panel=MONITORING, help="Share of --data held out to monitor the repair."
    ),
]
EvalEvery = Annotated[
    int, typer.Option(rich_help_panel=MONITORING, help="Steps between held-out checks.")
]
StopGap = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=MONITORING,
        help="Stop once every held-out group's effect (its KL level minus the others' median, "
        "on held-out repair text) is at most this. Default: half the noise floor for narrow "
        "and wide; distill runs all steps.",
    ),
]
EarlyStop = Annotated[
    bool,
    typer.Option(
        "--early-stop/--no-early-stop",
        rich_help_panel=MONITORING,
        help="Allow stopping on the held-out effects.",
    ),
]
KeepBest = Annotated[
    bool,
    typer.Option(
        "--keep-best/--keep-last",
        rich_help_panel=MONITORING,
        help="Keep the weights of the held-out check whose worst category effect is smallest, "
        "or those of the last step.",
    ),
]
CheckpointEvery = Annotated[
    int, typer.Option(rich_help_panel=MONITORING, help="Steps between resumable checkpoints.")
]
SaveAdapter = Annotated[
    bool,
    typer.Option(
        "--save-adapter",
        rich_help_panel=TRAINING,
        help="Save the LoRA adapter instead of the merged model.",
    ),
]
GradientCheckpointing = Annotated[
    choices.Checkpointing,
    typer.Option("--gradient-checkpointing", rich_help_panel=TRAINING, help="auto: on for CUDA."),
]
Restart = Annotated[
    bool,
    typer.Option(
        "--restart", rich_help_panel=MONITORING, help="Discard an interrupted run's checkpoints."
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing --out.")]

# --------------------------------------------------------------------------------------------
# lmassay probes sample

SampleModel = Annotated[
    str, typer.Option("--model", "-m", help="The model to sample from: local folder or hub id.")
]
SampleReference = Annotated[
    str | None,
    typer.Option(
        "--reference",
        "-r",
        help="Also sample from this model (rows marked sampled_from: reference).",
    ),
]
SampleProbes = Annotated[
    str,
    typer.Option(
        "--probes",
        "-p",
        help="Probe corpus giving the categories and the prompts (any form attest reads).",
    ),
]
SampleOut = Annotated[
    str, typer.Option("--out", "-o", help="The probe file to write (.jsonl, atomically).")
]
NPerCategory = Annotated[int, typer.Option(help="Continuations per category (per model).")]
NewTokens = Annotated[int, typer.Option(help="Most new tokens per continuation.")]
PromptTokens = Annotated[int, typer.Option(help="Tokens of a probe text's start used as prompt.")]
Temperature = Annotated[
    float, typer.Option(help="Sampling temperature (1.0: the model's own distribution).")
]

# --------------------------------------------------------------------------------------------
# lmassay probes ls / build

SuiteName = Annotated[
    str,
    typer.Argument(
        metavar="SUITE",
        help="A built-in suite (NAME or builtin:NAME; see `lmassay probes ls`) or a suite .yaml.",
    ),
]
SuiteOut = Annotated[
    str,
    typer.Option("--out", "-o", help="Folder for probes.jsonl and suite.json (replaced whole)."),
]

# --------------------------------------------------------------------------------------------

Config = TypeVar("Config")


def config_from(
    cls: type[Config],
    params: Mapping[str, Any],
    *,
    cli_only: Collection[str] = (),
    **overrides: Any,
) -> Config:
    """``cls`` (a configuration dataclass) from a command's parameters, matched by name.

    ``overrides`` replace parameters (a converted value, or a field whose flag has another name);
    ``cli_only`` names the parameters that are no field (``--quiet``, ``--sign``). Any other
    parameter without a field is a programming error, raised here rather than dropped.
    """
    fields = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    stray = set(params) - fields - set(cli_only) - set(overrides)
    if stray:
        raise TypeError(f"{cls.__name__} has no field for the parameters {sorted(stray)}")
    chosen = {k: v for k, v in params.items() if k in fields and k not in overrides}
    return cls(**chosen, **overrides)
