"""``repair``: the recipe, top to bottom — check, load, train (resumably), save, attest again, compare.

Files: the repaired model goes to ``OUT`` (a transformers folder, or a peft adapter folder with
``save_adapter``); ``OUT/repair/`` holds ``repair.json``, the new ``attestation.json``,
``samples.jsonl`` and the reports with a before/after section.  While it runs, ``OUT.partial/``
holds the request, the newest checkpoint and the repaired model being attested
(``OUT.partial/model``); a rerun with the same request resumes from it. ``OUT`` appears, complete,
in one rename at the end (:func:`lmassay.output_folder.publish`), and ``OUT.partial/`` is then
removed; ``OUT`` is locked for the whole run, so a second repair into it is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_json
from lmassay.attest.document import ModelInfo
from lmassay.attest.model_loading import LoadedModel, resolve_device, same_tokenizer
from lmassay.attest.recipe import AttestationResult, AttestConfig, attest
from lmassay.choices import Dtype
from lmassay.digests import digest_file, model_identity
from lmassay.errors import InputError
from lmassay.output_folder import check_space, locked, needed_for_copy, publish
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now
from lmassay.repair.anchor import (
    DEFAULT_ANCHOR_SAMPLES,
    SAMPLED,
    missing_categories,
    reference_samples,
)
from lmassay.repair.checkpoint import prepare_work
from lmassay.repair.config import RepairConfig
from lmassay.repair.data import add_sampled_anchor, sharing_a_probe_shingle
from lmassay.repair.fine_tune import RepairModels, fine_tune, save_repaired, train_dtypes
from lmassay.repair.inputs import (
    Judgement,
    RepairData,
    attestation_file,
    read_judgement,
    read_repair_data,
    recorded_digest,
)
from lmassay.repair.outcome import compare_attestations
from lmassay.report import write_report

SCHEMA = "lmassay.repair/v1"
REPORT_FOLDER = "repair"
_ATTESTATION = "attestation"  # in OUT.partial, beside the staged model, until it is moved in
REPAIR_FILE = "repair.json"
_SAVED_MARK = "saved.json"
_STAGED_MODEL = "model"


@dataclass(frozen=True)
class RepairResult:
    """``record`` is the content of ``repair.json``; ``attestation`` the new attestation."""

    record: dict[str, Any]
    out: Path
    attestation: AttestationResult

    @property
    def success(self) -> bool:
        return bool(self.record["outcome"]["success"])

    @property
    def exit_code(self) -> int:
        return 0 if self.success else 1


def repair(config: RepairConfig, progress: Progress | None = None) -> RepairResult:
    """Repair ``config.model`` on the attestation's flagged categories, then attest it again."""
    progress = progress or NullProgress()
    config.validate()
    run = utc_now(), time.perf_counter()
    out = Path(config.out)
    work = out.with_name(out.name + ".partial")
    judgement = read_judgement(config)
    with locked(out):  # one repair per OUT (and per OUT.partial) at a time
        _refuse_existing_out(config, out, work)
        check_space(out, needed_for_copy(config.model))
        data = read_repair_data(config, judgement, progress)

        models = _load_models(config, judgement, progress)
        data = _with_reference_samples(config, judgement, models, data, progress)
        prepare_work(work, _request(config, judgement, models, data), config.restart, what="repair")

        staged = work / _STAGED_MODEL
        training = _trained_and_saved(config, judgement, models, data, work, progress)
        progress.log("attesting the repaired model on the held-out probes")
        # written beside the staged model, then moved in: the folder attested (and the digest the
        # attestation records) holds the model's files alone, not the attestation's lock or staging
        attested = work / _ATTESTATION
        after = attest(
            _attest_config(config, judgement, staged, attested),
            progress,
            published_as=(str(out), str(out / REPORT_FOLDER)),
        )
        folder = staged / REPORT_FOLDER
        shutil.rmtree(folder, ignore_errors=True)  # left by a run killed after this step
        os.replace(attested, folder)
        after.paths = {
            key: folder / path.relative_to(attested) for key, path in after.paths.items()
        }

        record = _record(config, run, judgement, models, data, training, after)
        atomic_write_json(folder / REPAIR_FILE, record)
        after.paths.update(write_report(folder, after.attestation, repair=record))
        after.paths = {key: out / path.relative_to(staged) for key, path in after.paths.items()}
        progress.log(f"putting the repaired model in place: {out}")
        publish(staged, out)  # an existing OUT was refused before training unless --force
        shutil.rmtree(work, ignore_errors=True)
    return RepairResult(record=record, out=out, attestation=after)


# --------------------------------------------------------------------------------------------
# Check


def _refuse_existing_out(config: RepairConfig, out: Path, work: Path) -> None:
    """A non-empty ``OUT`` is replaced only with ``--force``."""
    if out.exists() and any(out.iterdir()) and not config.force:
        raise InputError(
            f"--out {out} already exists", "pass --force to replace it, or choose another folder"
        )


# --------------------------------------------------------------------------------------------
# Load


def _is_judged_model(loaded: LoadedModel, judged: ModelInfo | None) -> bool:
    """Whether ``loaded`` is the model an attestation judged: the same identity, or (for an
    attestation from lmassay 0.1) the legacy tree digest over the files it lists."""
    recorded = recorded_digest(judged)
    if not recorded or loaded.digest.value == recorded:
        return True
    files = list(judged.files) if judged is not None and judged.files is not None else None
    return loaded.path.is_dir() and model_identity(loaded.path).names_model(recorded, files)


def _load_models(config: RepairConfig, judgement: Judgement, progress: Progress) -> RepairModels:
    """The model (checked to be the one the attestation judged) and the reference (kept only if
    it shares the model's tokenizer), loaded for training on the resolved device."""
    device = resolve_device(config.device)
    load_dtype, autocast_dtype = train_dtypes(config, device)
    spec = judgement.reference
    progress.log(f"loading {config.model}" + (f" and reference {spec}" if spec else ""))
    options = dataclasses.replace(config.model_options, device=device)
    loaded = dataclasses.replace(options, dtype=load_dtype).load(config.model)
    if not _is_judged_model(loaded, judgement.before.model):
        judged = recorded_digest(judgement.before.model) or ""
        raise InputError(
            f"--model {config.model} is not the model the attestation judged (digest "
            f"{loaded.digest.value[:12]} ≠ {judged[:12]})",
            "pass the model that was attested, or attest this model first",
        )
    reference_dtype: Dtype = "bfloat16" if autocast_dtype else "float32"
    # --revision names the model's revision; a hub reference is loaded at the commit the
    # attestation recorded for it (its default branch when the attestation names none).
    recorded = judgement.before.reference
    reference_revision = recorded.hub.commit if recorded and recorded.hub else None
    reference = (
        dataclasses.replace(options, dtype=reference_dtype, revision=reference_revision).load(spec)
        if spec
        else None
    )
    if reference is not None and not same_tokenizer(loaded, reference):
        if config.mode == "distill":
            raise InputError(
                f"--mode distill needs the reference {spec} to share the model's tokenizer",
                "use --mode narrow or wide with a reference of another tokenizer",
            )
        progress.log("the reference has another tokenizer: no held-out KL monitoring")
        reference = None
    if reference is not None:
        for p in reference.model.parameters():
            p.requires_grad_(False)
    return RepairModels(loaded, reference, autocast_dtype)


def _with_reference_samples(
    config: RepairConfig,
    judgement: Judgement,
    models: RepairModels,
    data: RepairData,
    progress: Progress,
) -> RepairData:
    """``data`` with anchor texts sampled from the reference (:mod:`lmassay.repair.anchor`) when
    ``--anchor-samples`` asks for them or, by default, when the data lacks a category of the
    attestation that is not repaired; samples that contain a judging probe are dropped."""
    reference = models.reference
    if config.mode == "wide" or reference is None or config.kl_weight == 0:
        return data
    lacking = missing_categories(
        [c.name for c in judgement.before.categories],
        list(data.texts.categories),
        judgement.categories,
    )
    n = config.anchor_samples
    if n is None:
        n = DEFAULT_ANCHOR_SAMPLES if lacking else 0
    if n == 0:
        return data
    seq_len = min(config.seq_len, models.model.max_length)
    progress.log(
        f"sampling {n} anchor texts of up to {seq_len - 1} tokens from the reference"
        + (f" (--data has no text of {', '.join(lacking)})" if lacking else "")
    )
    samples = reference_samples(reference, n, seq_len - 1, config.seed)
    sharing = sharing_a_probe_shingle(data.probes.samples, samples)
    if sharing:  # a sample that repeats any 13 words of a judging probe does not train
        progress.log(f"dropping {len(sharing)} samples that share 13 words with a probe")
        samples = [t for i, t in enumerate(samples) if i not in sharing]
    texts = add_sampled_anchor(
        data.texts, samples, SAMPLED, holdout=max(config.holdout, 0.1), seed=config.seed
    )
    return dataclasses.replace(data, texts=texts)


def _request(
    config: RepairConfig, judgement: Judgement, models: RepairModels, data: RepairData
) -> dict[str, Any]:
    """Everything that decides the training: a rerun resumes only when it is the same."""
    reference = models.reference
    return {
        "config": config.training_request(),
        "model_digest": models.model.digest.value,
        "reference_digest": reference.digest.value if reference else None,
        "data_digest": data.data.digest.value,
        "categories": list(judgement.categories),
    }


# --------------------------------------------------------------------------------------------
# Run


def _trained_and_saved(
    config: RepairConfig,
    judgement: Judgement,
    models: RepairModels,
    data: RepairData,
    work: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Train and save the repaired model to ``work/model`` (published to ``OUT`` once attested);
    return the training record. When an earlier run of this request saved it already (and
    stopped before attesting), only its record."""
    staged = work / _STAGED_MODEL
    saved_mark = work / _SAVED_MARK
    model_file = staged / ("adapter_config.json" if config.save_adapter else "config.json")
    if saved_mark.is_file() and model_file.is_file():
        progress.log("the repaired model was saved by the interrupted run; attesting it")
        training: dict[str, Any] = json.loads(saved_mark.read_text(encoding="utf-8"))["training"]
        return training
    noise_floor = judgement.before.summary.noise_floor
    floor = None if noise_floor is None else float(noise_floor)
    checkpoints = work / "checkpoints"
    trained, training = fine_tune(
        config, models, data.texts, judgement.categories, floor, checkpoints, progress
    )
    progress.log("saving the repaired model")
    shutil.rmtree(staged, ignore_errors=True)  # a save cut short by a kill
    save_repaired(trained, models.model, config, staged)
    atomic_write_json(saved_mark, {"training": training})
    return training


def _attest_config(
    config: RepairConfig, judgement: Judgement, staged: Path, out: Path
) -> AttestConfig:
    """The attestation's own settings, on the repaired model ``staged``, into ``out``."""
    return AttestConfig(
        **{
            **judgement.settings,
            "model": str(staged),
            "reference": judgement.reference,
            "out": str(out),
            "write_report": False,
            "device": config.device,
            "allow_pickle": config.allow_pickle,
            "trust_remote_code": config.trust_remote_code,
        }
    )


# --------------------------------------------------------------------------------------------
# Record


def _record(
    config: RepairConfig,
    run: tuple[str, float],
    judgement: Judgement,
    models: RepairModels,
    data: RepairData,
    training: dict[str, Any],
    after: AttestationResult,
) -> dict[str, Any]:
    """The content of ``repair.json`` (schema :data:`SCHEMA`)."""
    before, out, started = judgement.before, Path(config.out), run[0]
    outcome = compare_attestations(before, after.attestation, judgement.categories)
    reference = models.reference
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "mode": config.mode,
        "method": config.method,
        "categories": list(judgement.categories),
        "model": models.model.describe(),
        "reference": reference.describe()
        if reference
        else (judgement.reference and {"name": judgement.reference}),
        "attestation_before": {
            "path": str(config.attestation),
            "sha256": digest_file(attestation_file(config.attestation)).value,
            "verdict": before.verdict.value,
            "flagged": list(before.flagged),
        },
        "attestation_after": {"path": str(out / REPORT_FOLDER / "attestation.json")},
        "data": {
            **data.data.to_json(),
            "n_train": len(data.texts.train),
            "n_anchor": len(data.texts.anchor),
            "n_sampled_from_reference": data.texts.n_sampled,
            "n_heldout": data.texts.n_heldout,
            "probe_overlap": data.overlap.to_json(),
        },
        "training": training,
        "output": {
            "path": str(out),
            "format": "peft-adapter" if config.save_adapter else "transformers",
        },
        "outcome": outcome,
        "provenance": {
            **provenance(dataclasses.asdict(config), config.seed),
            "started": started,
            "finished": utc_now(),
            "duration_s": round(time.perf_counter() - run[1], 2),
        },
    }
