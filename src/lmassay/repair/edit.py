"""``lmassay edit``: repair (or write) facts in a model by rank-one (ROME-style) edits, and check them.

The recipe reads top to bottom in :func:`edit_model`: read the facts, load the model, gather the
covariance texts, apply one rank-one update per fact (:mod:`lmassay.repair.rank_one`, the method the
zoo's ``fact-rome`` variant tampers with), verify every fact on the edited model, save a standard
transformers folder, optionally attest it against a reference, and write ``edit.json``.

Everything goes to a hidden temporary folder beside ``OUT`` that is renamed to ``OUT`` only when
the run has finished, so a failed or interrupted run leaves no ``OUT`` (or the old one, with
``overwrite``) behind.

Verification contract: a fact is *verified* when ``P(tokens(" " + target) | [prefix] +
tokens(prompt))`` — the product of the target tokens' probabilities after the bare prompt, where
the prefix is the tokenizer's BOS token (EOS when it has none), see
:func:`lmassay.repair.rank_one.target_probability` — is at least ``min_probability`` under the edited
model *as saved* (after every edit, in the saved dtype). *Greedy* says whether greedy decoding
after the same context yields exactly the target's tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay._atomic import atomic_write_json
from lmassay.attest.model_loading import DEVICES, DTYPES, LoadedModel, load_model, prefix_token
from lmassay.digests import Digest, digest_file, digest_tree, list_files
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import provenance, utc_now
from lmassay.repair.rank_one import FACT_TOKENS, FactEdit
from lmassay.repair.saving import publish, save_like_source, source_dtype

if TYPE_CHECKING:
    import torch

    from lmassay.attest.recipe import AttestationResult

__all__ = [
    "COVARIANCE_SOURCES",
    "SCHEMA",
    "EditConfig",
    "EditResult",
    "FactOutcome",
    "FactRequest",
    "edit_model",
    "greedy_continuation",
    "read_covariance_texts",
    "read_fact_edits",
]

SCHEMA = "lmassay.edit/v1"
EDIT_FILE = "edit.json"
ATTESTATION_DIR = "attestation"
COVARIANCE_SOURCES = ("file", "probes", "identity")
VERIFICATION_METRIC = (
    "P(target | prompt): the product over the tokens of ' ' + target of their probability after "
    "[BOS or EOS] + the prompt's tokens, under the edited model as saved (all edits applied)"
)
IDENTITY_NOTE = (
    "no covariance texts and no probes were given, so C = I (ΔW = u k*ᵀ / k*ᵀk*, the smallest "
    "rank-one change that writes the value) and the bare prompt is the only context; the edit "
    "is less specific than with C estimated from text — pass --covariance-texts (or --probes)"
)
# Files of the source folder that describe the source itself, not the model: never copied to OUT.


@dataclass
class EditConfig:
    """Everything ``lmassay edit`` needs; :meth:`validate` names the offending flag."""

    model: str
    """The model to edit: a local folder or a Hugging Face hub id (GPT-2 or Llama-shaped)."""
    facts: str
    """JSONL file, one fact a line: {"prompt", "subject", "target"} and an optional "id"."""
    out: str
    """Folder for the edited model, edit.json and (with reference and probes) attestation/."""
    reference: str | None = None
    """Known-good reference to attest the edited model against (needs ``probes``)."""
    probes: str | None = None
    """Probe corpus for the attestation; also the covariance texts when none are given."""
    covariance_texts: str | None = None
    """Texts for the second moment C and the context prefixes: a JSONL file with "text" per line,
    or anything :func:`lmassay.attest.probes.load_probes` reads (category folders of .txt, parquet, a
    saved dataset). Default: the probes' texts, else C = I (see :data:`IDENTITY_NOTE`)."""
    layer: int | None = None
    """The layer whose MLP output projection is edited (default: the middle one)."""
    fact_token: str | None = None
    """Where k* is read: "subject_last" or "last" (default: subject_last, last in the last layer)."""
    min_probability: float = 0.5
    """A fact is verified when P(target | prompt) on the edited model is at least this."""
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    """The dtype the edits are computed in; the edited model is saved in the source's dtype."""
    allow_pickle: bool = False
    trust_remote_code: bool = False
    steps: int = 40
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    ridge: float = 0.01
    n_prefixes: int = 5
    n_covariance_texts: int = 300
    """At most this many covariance texts are used, sampled with ``seed``."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of the attestation."""
    overwrite: bool = False
    """Replace an existing OUT (only after the new one is complete)."""

    def validate(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                self.device in DEVICES,
                f"--device {self.device!r} is not known",
                f"use one of {', '.join(DEVICES)}",
            ),
            (
                self.dtype in DTYPES,
                f"--dtype {self.dtype!r} is not known",
                f"use one of {', '.join(DTYPES)}",
            ),
            (
                self.layer is None or self.layer >= 0,
                f"--layer {self.layer} is negative",
                "give a layer index from 0, or leave it out for the middle layer",
            ),
            (
                self.fact_token is None or self.fact_token in FACT_TOKENS,
                f"--fact-token {self.fact_token!r} is not known",
                "use subject_last or last",
            ),
            (
                0 < self.min_probability <= 1,
                f"--min-probability {self.min_probability} is outside (0, 1]",
                "use e.g. 0.5",
            ),
            (self.seed >= 0, f"--seed {self.seed} is negative", "use 0 or more"),
            (self.steps >= 1, f"--steps {self.steps} is below 1", "use e.g. 40"),
            (self.lr > 0, f"--lr {self.lr} is not positive", "use e.g. 0.5"),
            (self.kl_weight >= 0, f"--kl-weight {self.kl_weight} is negative", "use 0 or more"),
            (
                self.weight_decay >= 0,
                f"--weight-decay {self.weight_decay} is negative",
                "use 0 or more",
            ),
            (self.clamp > 0, f"--clamp {self.clamp} is not positive", "use e.g. 4"),
            (self.ridge > 0, f"--ridge {self.ridge} is not positive", "use e.g. 0.01"),
            (self.n_prefixes >= 1, f"--n-prefixes {self.n_prefixes} is below 1", "use e.g. 5"),
            (
                self.n_covariance_texts >= 1,
                f"--n-covariance-texts {self.n_covariance_texts} is below 1",
                "use e.g. 300",
            ),
            (
                self.n_bootstrap >= 1,
                f"--n-bootstrap {self.n_bootstrap} is below 1",
                "use e.g. 1000",
            ),
            (
                not (self.reference and not self.probes),
                "--reference was given without --probes",
                "add --probes to attest the edited model against the reference, or drop --reference",
            ),
            (
                not (self.probes and not self.reference),
                "--probes was given without --reference",
                "add --reference to attest the edited model, or pass the texts as "
                "--covariance-texts",
            ),
        ]
        for ok, what, fix in checks:
            if not ok:
                raise InputError(what, fix)
        for flag, value in (
            ("--facts", self.facts),
            ("--covariance-texts", self.covariance_texts),
            ("--probes", self.probes),
        ):
            if value is not None and not Path(value).exists():
                raise InputError(f"{flag} {value!r} does not exist", "check the path")
        self._validate_out()

    def _validate_out(self) -> None:
        out = Path(self.out).expanduser()
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {self.out!r} is a file", "pass a folder (it is created)")
        if out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise InputError(
                f"--out {self.out!r} already exists and is not empty",
                "choose another folder, or pass --overwrite to replace it",
            )
        source = Path(self.model).expanduser()
        if source.exists():
            src, dst = source.resolve(), out.resolve()
            if src == dst or dst in src.parents or src in dst.parents:
                raise InputError(
                    f"--out {self.out!r} is, holds or lies inside the --model folder",
                    "write the edited model to a folder of its own",
                )


@dataclass(frozen=True)
class FactRequest:
    """One fact to write, as read from the facts file: its id, the edit and its line number."""

    id: str
    edit: FactEdit
    line: int


@dataclass
class FactOutcome:
    """What happened to one fact. Probabilities are P(target | prompt), see the module doc."""

    request: FactRequest
    layer: int
    tensor: str
    fact_token: str
    prob_before: float  # on the input model, before any edit
    prob_before_own_edit: float  # right before this fact's edit (after the earlier facts')
    prob_after_own_edit: float  # right after this fact's edit (later edits may move it)
    prob_after: float  # on the final model as saved: what ``verified`` is judged on
    verified: bool
    greedy: bool  # greedy decoding after the prompt gives exactly the target's tokens
    greedy_text: str  # what greedy decoding gives (as many tokens as the target has)
    delta_norm: float  # Frobenius norm of this fact's ΔW
    target_nll_before: float
    target_nll_optimised: float

    def to_json(self) -> dict[str, Any]:
        edit = self.request.edit
        return {
            "id": self.request.id,
            "line": self.request.line,
            "prompt": edit.prompt,
            "subject": edit.subject,
            "target": edit.target,
            "prob_before": self.prob_before,
            "prob_after": self.prob_after,
            "prob_before_own_edit": self.prob_before_own_edit,
            "prob_after_own_edit": self.prob_after_own_edit,
            "verified": self.verified,
            "greedy": self.greedy,
            "greedy_text": self.greedy_text,
            "layer": self.layer,
            "tensor": self.tensor,
            "fact_token": self.fact_token,
            "delta_norm": self.delta_norm,
            "target_nll_before": self.target_nll_before,
            "target_nll_optimised": self.target_nll_optimised,
        }


@dataclass
class EditResult:
    """What :func:`edit_model` produced: ``edit.json``'s content, per-fact outcomes and paths."""

    record: dict[str, Any]
    facts: list[FactOutcome]
    out: Path
    attestation: AttestationResult | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def all_verified(self) -> bool:
        return all(f.verified for f in self.facts)

    @property
    def exit_code(self) -> int:
        """0 when every fact is verified and the attestation (if run) is consistent; else 1."""
        attest_ok = self.attestation is None or self.attestation.exit_code == 0
        return 0 if self.all_verified and attest_ok else 1


# --------------------------------------------------------------------------------------------
# Reading the inputs


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines of a UTF-8 text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from exc
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _json_object(path: Path, number: int, line: str, example: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} line {number} is not JSON ({exc.msg})",
            f"write one JSON object a line: {example}",
        ) from exc
    if not isinstance(row, dict):
        raise InputError(
            f"{path} line {number} is a JSON {type(row).__name__}, not an object",
            f"write one JSON object a line: {example}",
        )
    return row


_FACT_EXAMPLE = '{"prompt": "The capital of France is", "subject": "France", "target": "Paris"}'


def _fact_request(path: Path, number: int, row: dict[str, Any]) -> FactRequest:
    where = f"{path} line {number}"
    for name in ("prompt", "subject", "target"):
        value = row.get(name)
        if value is None:
            hint = (
                ' (it has "object": name that field "target")'
                if name == "target" and ("object" in row)
                else ""
            )
            raise InputError(
                f'{where} has no "{name}"{hint}',
                f"give prompt, subject and target: {_FACT_EXAMPLE}",
            )
        if not isinstance(value, str) or not value.strip():
            raise InputError(
                f'{where}: "{name}" is not a non-empty string', f'give "{name}" as text'
            )
    prompt, subject, target = str(row["prompt"]), str(row["subject"]), str(row["target"])
    if subject not in prompt:
        raise InputError(
            f"{where}: the subject {subject!r} does not occur in the prompt {prompt!r}",
            "give a subject written exactly as in the prompt (case matters)",
        )
    if prompt != prompt.rstrip():
        raise InputError(
            f"{where}: the prompt ends with a space",
            "drop it: the target is put after the prompt with one space",
        )
    if target != target.strip():
        raise InputError(
            f"{where}: the target {target!r} starts or ends with a space",
            "drop it: the target is put after the prompt with one space",
        )
    raw_id = row.get("id", f"line-{number}")
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or not str(raw_id).strip():
        raise InputError(
            f'{where}: "id" is not a non-empty string', 'give "id" as text or leave it out'
        )
    return FactRequest(str(raw_id), FactEdit(prompt, subject, target), number)


def read_fact_edits(path: str | os.PathLike[str]) -> list[FactRequest]:
    """The facts of a JSONL file: one ``{"prompt", "subject", "target"}`` object a line.

    ``"id"`` is optional (default ``"line-N"``); other fields are ignored; blank lines are
    skipped. The target is written after the prompt with one space, so neither may carry that
    space. Raises :class:`InputError` naming the file and line for the first bad line, for an
    empty file, for a repeated id and for one prompt given two targets.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"facts file {str(file)!r} does not exist", "check the --facts path")
    requests = [
        _fact_request(file, n, _json_object(file, n, line, _FACT_EXAMPLE))
        for n, line in _read_lines(file)
    ]
    if not requests:
        raise InputError(f"facts file {file} holds no facts", f"write one a line: {_FACT_EXAMPLE}")
    seen_ids: dict[str, int] = {}
    seen_prompts: dict[str, FactRequest] = {}
    for request in requests:
        if request.id in seen_ids:
            raise InputError(
                f"{file} line {request.line}: the id {request.id!r} was used on line "
                f"{seen_ids[request.id]}",
                "give every fact its own id",
            )
        seen_ids[request.id] = request.line
        earlier = seen_prompts.get(request.edit.prompt)
        if earlier is not None and earlier.edit.target != request.edit.target:
            raise InputError(
                f"{file} line {request.line}: the prompt {request.edit.prompt!r} was given the "
                f"target {earlier.edit.target!r} on line {earlier.line}",
                "give each prompt one target",
            )
        seen_prompts[request.edit.prompt] = request
    return requests


def read_covariance_texts(path: str | os.PathLike[str]) -> list[str]:
    """The texts of a ``.jsonl`` file with ``"text"`` per line (other fields ignored), or of
    anything :func:`lmassay.attest.probes.load_probes` reads (a folder of category sub-folders of
    ``.txt`` files, a parquet file, a saved dataset), in file order."""
    source = Path(path)
    if source.is_file() and source.suffix.lower() in (".jsonl", ".json"):
        example = '{"text": "A paragraph of ordinary text."}'
        texts = []
        for number, line in _read_lines(source):
            text = _json_object(source, number, line, example).get("text")
            if not isinstance(text, str):
                raise InputError(
                    f'{source} line {number} has no "text" string', f"write lines like {example}"
                )
            if text.strip():
                texts.append(text)
    else:
        from lmassay.attest.probes import load_probes

        texts = [s.text for s in load_probes(source, min_per_category=1).samples if s.text.strip()]
    if not texts:
        raise InputError(f"{source} holds no text", "give a few hundred sample paragraphs")
    return texts


# --------------------------------------------------------------------------------------------
# Scoring helpers


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def greedy_continuation(model: Any, tokenizer: Any, prompt: str, target: str) -> tuple[bool, str]:
    """Whether greedy decoding after ``[prefix] + tokens(prompt)`` gives exactly the tokens of
    ``" " + target``, and the decoded greedy continuation of that many tokens."""
    import torch

    context = [prefix_token(tokenizer, "model"), *_token_ids(tokenizer, prompt)]
    target_ids = _token_ids(tokenizer, " " + target)
    device = next(model.parameters()).device
    generated: list[int] = []
    with torch.no_grad():
        for _ in target_ids:
            ids = torch.tensor([context + generated], device=device)  # (1, T)
            logits = model(input_ids=ids).logits[0, -1]  # (V,)
            generated.append(int(logits.argmax()))
    return generated == target_ids, str(tokenizer.decode(generated))


# --------------------------------------------------------------------------------------------
# The recipe


@dataclass
class _Covariance:
    """The second moment the edits use, and what it was computed from."""

    matrix: torch.Tensor  # (d_in, d_in), float64
    texts: list[str]  # the covariance texts (also the source of the context prefixes)
    record: dict[str, Any]


def _covariance(
    config: EditConfig, loaded: LoadedModel, layer: int, progress: Progress
) -> _Covariance:
    import torch

    from lmassay.repair.rank_one import mlp_site, second_moment

    if config.covariance_texts is not None:
        source, path = "file", config.covariance_texts
        texts = read_covariance_texts(path)
    elif config.probes is not None:
        from lmassay.attest.probes import load_probes

        source, path = "probes", config.probes
        texts = [s.text for s in load_probes(path).samples]
    else:
        progress.log(f"covariance: {IDENTITY_NOTE}")
        d_in = mlp_site(loaded.model, layer).d_in
        return _Covariance(
            torch.eye(d_in, dtype=torch.float64),
            [],
            {"source": "identity", "path": None, "n_texts": 0, "note": IDENTITY_NOTE},
        )
    n_available = len(texts)
    if n_available > config.n_covariance_texts:
        rng = random.Random(f"lmassay-edit-covariance:{config.seed}")
        texts = rng.sample(texts, config.n_covariance_texts)
    progress.log(f"covariance: second moment of layer {layer} over {len(texts)} texts ({source})")
    matrix = second_moment(loaded.model, loaded.tokenizer, texts, layer=layer, ridge=config.ridge)
    joined = "\n".join(texts).encode("utf-8")
    return _Covariance(
        matrix,
        texts,
        {
            "source": source,
            "path": str(path),
            "n_texts": len(texts),
            "n_available": n_available,
            "sha256": hashlib.sha256(joined).hexdigest(),
            "sha256_of": "the covariance texts in order, joined with '\\n', UTF-8",
            "role": "second moment C of the MLP hidden activations, and context prefixes",
        },
    )


def _apply_edits(
    config: EditConfig,
    loaded: LoadedModel,
    requests: Sequence[FactRequest],
    covariance: _Covariance,
    layer: int,
    fact_token: str,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Edit ``loaded.model`` in place, fact after fact (each on the model the earlier edits left),
    as :func:`lmassay.repair.rank_one.edit_facts` does, with a covariance given rather than computed."""
    from lmassay.repair.rank_one import apply_update, compute_rank_one_update, target_probability

    model, tokenizer = loaded.model, loaded.tokenizer
    update_progress = progress.task("rank-one edits", len(requests))
    rows = []
    for index, request in enumerate(requests):
        before = target_probability(model, tokenizer, request.edit.prompt, request.edit.target)
        update = compute_rank_one_update(
            model,
            tokenizer,
            request.edit,
            layer=layer,
            covariance_texts=covariance.texts,
            covariance=covariance.matrix,
            n_prefixes=config.n_prefixes,
            fact_token=fact_token,  # type: ignore[arg-type]  # one of FACT_TOKENS
            steps=config.steps,
            lr=config.lr,
            kl_weight=config.kl_weight,
            weight_decay=config.weight_decay,
            clamp=config.clamp,
            ridge=config.ridge,
            seed=config.seed + index,
        )
        apply_update(model, update)
        after = target_probability(model, tokenizer, request.edit.prompt, request.edit.target)
        rows.append(
            {
                "prob_before_own_edit": before,
                "prob_after_own_edit": after,
                "tensor": update.tensor_name,
                "delta_norm": float(update.delta().norm()),
                "target_nll_before": update.loss_before,
                "target_nll_optimised": update.loss_after,
            }
        )
        update_progress(index + 1, len(requests))
    return rows


def _attest(
    config: EditConfig, reference: str, probes: str, staging: Path, final: Path, progress: Progress
) -> AttestationResult:
    """Attest the edited model in ``staging`` against ``reference`` into ``staging/attestation``;
    the paths it records are then rewritten to where the folder will be (``final``)."""
    from lmassay.attest.recipe import AttestConfig, attest
    from lmassay.report import write_report

    folder = staging / ATTESTATION_DIR
    result = attest(
        AttestConfig(
            model=str(staging),
            probes=probes,
            out=str(folder),
            reference=reference,
            seed=config.seed,
            device=config.device,
            dtype=config.dtype,
            allow_pickle=config.allow_pickle,
            trust_remote_code=config.trust_remote_code,
            n_bootstrap=config.n_bootstrap,
        ),
        progress,
    )
    att = result.attestation
    att["model"]["name"] = att["model"]["path"] = str(final)
    att["provenance"]["config"].update(model=str(final), out=str(final / ATTESTATION_DIR))
    atomic_write_json(folder / "attestation.json", att)
    write_report(folder, att)
    return result


def edit_model(config: EditConfig, progress: Progress | None = None) -> EditResult:
    """Write the facts of ``config.facts`` into ``config.model`` and save the result to
    ``config.out`` with ``edit.json`` (and ``attestation/`` with a reference and probes).

    Raises :class:`InputError` for unusable input before anything is written. A fact that is
    not verified is not an error: the edited model is saved, ``edit.json`` says which facts fall
    short and :attr:`EditResult.exit_code` is 1.
    """
    import torch

    from lmassay.repair.rank_one import choose_fact_token, default_layer, target_probability

    progress = progress or NullProgress()
    config.validate()
    started, t0 = utc_now(), time.perf_counter()
    requests = read_fact_edits(config.facts)
    progress.log(f"facts: {len(requests)} from {config.facts}")

    progress.log(f"loading model {config.model}")
    loaded = load_model(
        config.model,
        device=config.device,
        dtype=config.dtype,
        allow_pickle=config.allow_pickle,
        trust_remote_code=config.trust_remote_code,
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    layer = default_layer(model) if config.layer is None else config.layer
    tensor_name = _tensor_of(model, layer)  # InputError for a layer out of range
    fact_token = config.fact_token or choose_fact_token(model, layer)
    initial = [target_probability(model, tokenizer, r.edit.prompt, r.edit.target) for r in requests]
    covariance = _covariance(config, loaded, layer, progress)
    original = dict(model.named_parameters())[tensor_name].detach().double().cpu().clone()

    edits = _apply_edits(config, loaded, requests, covariance, layer, fact_token, progress)

    saved_dtype = source_dtype(loaded.path) or loaded.dtype
    model.to(getattr(torch, saved_dtype))
    progress.log(f"verifying {len(requests)} facts on the edited model ({saved_dtype})")
    outcomes = _verify(loaded, requests, initial, edits, layer, fact_token, config.min_probability)
    edited = dict(model.named_parameters())[tensor_name].detach().double().cpu()
    change = float((edited - original).norm())
    relative = change / max(float(original.norm()), 1e-12)

    out = Path(config.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        progress.log(f"saving the edited model ({saved_dtype} safetensors)")
        copied = save_like_source(loaded.model, loaded.path, staging)
        model_files = list_files(staging)
        output_digest = digest_tree(staging, model_files)
        input_record = _describe_input(loaded)
        del model, loaded, edited, original
        attestation = None
        if config.reference is not None and config.probes is not None:
            progress.log("attesting the edited model against the reference")
            attestation = _attest(config, config.reference, config.probes, staging, out, progress)
        record = _record(
            config,
            started=started,
            t0=t0,
            input_record=input_record,
            requests_digest=digest_file(config.facts),
            covariance=covariance.record,
            layer=layer,
            fact_token=fact_token,
            tensor_name=tensor_name,
            outcomes=outcomes,
            change=(change, relative),
            output=(out, model_files, output_digest, saved_dtype, copied),
            attestation=attestation,
        )
        atomic_write_json(staging / EDIT_FILE, record)
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress.log(f"wrote {out}")
    paths = {"model": out, "edit": out / EDIT_FILE}
    if attestation is not None:
        paths["attestation"] = out / ATTESTATION_DIR / "attestation.json"
    return EditResult(record, outcomes, out, attestation, paths)


def _verify(
    loaded: LoadedModel,
    requests: Sequence[FactRequest],
    initial: Sequence[float],
    edits: Sequence[dict[str, Any]],
    layer: int,
    fact_token: str,
    min_probability: float,
) -> list[FactOutcome]:
    """Each fact's outcome, judged on ``loaded.model`` as it is now (all edits applied)."""
    from lmassay.repair.rank_one import target_probability

    model, tokenizer = loaded.model, loaded.tokenizer
    outcomes = []
    for request, before, row in zip(requests, initial, edits, strict=True):
        prompt, target = request.edit.prompt, request.edit.target
        after = target_probability(model, tokenizer, prompt, target)
        greedy, greedy_text = greedy_continuation(model, tokenizer, prompt, target)
        outcomes.append(
            FactOutcome(
                request=request,
                layer=layer,
                tensor=row["tensor"],
                fact_token=fact_token,
                prob_before=before,
                prob_before_own_edit=row["prob_before_own_edit"],
                prob_after_own_edit=row["prob_after_own_edit"],
                prob_after=after,
                verified=after >= min_probability,
                greedy=greedy,
                greedy_text=greedy_text,
                delta_norm=row["delta_norm"],
                target_nll_before=row["target_nll_before"],
                target_nll_optimised=row["target_nll_optimised"],
            )
        )
    return outcomes


def _describe_input(loaded: LoadedModel) -> dict[str, Any]:
    """The input model as ``edit.json`` records it (its dtype as its config.json states it)."""
    return {
        "name": loaded.name,
        "path": str(loaded.path),
        "digest": loaded.digest.to_json(),
        "tokenizer_digest": loaded.tokenizer_digest.to_json(),
        "files": loaded.files,
        "dtype": source_dtype(loaded.path),
        "architecture": type(loaded.model).__name__,
        "n_parameters": loaded.n_parameters,
    }


def _tensor_of(model: Any, layer: int) -> str:
    from lmassay.repair.rank_one import mlp_site

    return mlp_site(model, layer).tensor_name


def _record(
    config: EditConfig,
    *,
    started: str,
    t0: float,
    input_record: dict[str, Any],
    requests_digest: Digest,
    covariance: dict[str, Any],
    layer: int,
    fact_token: str,
    tensor_name: str,
    outcomes: Sequence[FactOutcome],
    change: tuple[float, float],
    output: tuple[Path, list[str], Digest, str, list[str]],
    attestation: AttestationResult | None,
) -> dict[str, Any]:
    """The content of ``edit.json`` (schema :data:`SCHEMA`)."""
    out, model_files, output_digest, saved_dtype, copied = output
    n_verified = sum(o.verified for o in outcomes)
    prov = provenance(asdict(config), config.seed)
    prov.update(
        started=started,
        finished=utc_now(),
        duration_s=round(time.perf_counter() - t0, 3),
    )
    attestation_record = None
    if attestation is not None:
        att = attestation.attestation
        attestation_record = {
            "path": f"{ATTESTATION_DIR}/attestation.json",
            "verdict": att["verdict"],
            "flagged": att["flagged"],
            "comparison": att["comparison"],
            "reference": {"path": config.reference, "digest": att["reference"]["digest"]},
            "probes": {"path": config.probes, "digest": att["probes"].get("digest")},
        }
    return {
        "schema": SCHEMA,
        "created": prov["finished"],
        "model": input_record,
        "facts_file": {
            "path": str(config.facts),
            "digest": requests_digest.to_json(),
            "n_facts": len(outcomes),
        },
        "method": {
            "name": "rank-one (ROME-style) edit of one MLP output projection, fact after fact",
            "layer": layer,
            "tensor": tensor_name,
            "fact_token": fact_token,
            "steps": config.steps,
            "lr": config.lr,
            "kl_weight": config.kl_weight,
            "weight_decay": config.weight_decay,
            "clamp": config.clamp,
            "ridge": config.ridge,
            "n_prefixes": config.n_prefixes,
            "seed": config.seed,
            "compute_dtype": config.dtype,
        },
        "covariance": covariance,
        "verification": {"metric": VERIFICATION_METRIC, "min_probability": config.min_probability},
        "edits": [o.to_json() for o in outcomes],
        "summary": {
            "n_facts": len(outcomes),
            "n_verified": n_verified,
            "n_greedy": sum(o.greedy for o in outcomes),
            "all_verified": n_verified == len(outcomes),
            "tensor": tensor_name,
            "tensor_change_norm": change[0],
            "tensor_relative_change": change[1],
        },
        "output": {
            "path": str(out),
            "dtype": saved_dtype,
            "files": model_files,
            "digest": output_digest.to_json(),
            "digest_of": "the model files listed here, as written (before edit.json and "
            "attestation/ were added)",
            "copied_from_source": copied,
        },
        "attestation": attestation_record,
        "provenance": prov,
    }
