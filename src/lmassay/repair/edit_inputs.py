"""The inputs of ``lmassay edit``: the facts file, the covariance texts and the second moment ``C``.

:func:`read_fact_edits` reads and checks the facts (one JSON object a line), naming the file and
line of the first bad one; :func:`read_covariance_texts` reads the texts ``C`` is estimated from;
:func:`edit_covariance` chooses those texts (the ``--covariance-texts``, else the probes' texts, else
none: ``C = I``), samples at most ``n_covariance_texts`` of them and computes ``C``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmassay.bounded_read import DATA_LIMIT, read_bytes
from lmassay.errors import InputError
from lmassay.progress import Progress
from lmassay.repair.mlp_site import mlp_site, second_moment
from lmassay.repair.rank_one import FactEdit

if TYPE_CHECKING:
    import torch

    from lmassay.attest.model_loading import LoadedModel
    from lmassay.repair.edit import EditConfig

__all__ = [
    "COVARIANCE_SOURCES",
    "IDENTITY_NOTE",
    "EditCovariance",
    "FactRequest",
    "edit_covariance",
    "read_covariance_texts",
    "read_fact_edits",
]

COVARIANCE_SOURCES = ("file", "probes", "identity")
IDENTITY_NOTE = (
    "no covariance texts and no probes were given, so C = I (ΔW = u k*ᵀ / k*ᵀk*, the smallest "
    "rank-one change that writes the value) and the bare prompt is the only context; the edit "
    "is less specific than with C estimated from text — pass --covariance-texts (or --probes)"
)


@dataclass(frozen=True)
class FactRequest:
    """One fact to write, as read from the facts file: its id, the edit and its line number."""

    id: str
    edit: FactEdit
    line: int


def _read_lines(path: Path, what: str, max_bytes: int) -> list[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines of a UTF-8 text file: a regular file of at
    most ``max_bytes`` (:mod:`lmassay.bounded_read`)."""
    data = read_bytes(path, what=what, limit=max_bytes)
    try:
        text = data.decode("utf-8")
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


def read_fact_edits(
    path: str | os.PathLike[str], *, max_bytes: int = DATA_LIMIT
) -> list[FactRequest]:
    """The facts of a JSONL file: one ``{"prompt", "subject", "target"}`` object a line.

    ``"id"`` is optional (default ``"line-N"``); other fields are ignored; blank lines are
    skipped. The target is written after the prompt with one space, so neither may carry that
    space. Raises :class:`InputError` naming the file and line for the first bad line, for an
    empty file, for a repeated id and for one prompt given two targets, and naming the file when
    it is not a regular file or is larger than ``max_bytes`` (``--max-file-size``).
    """
    file = Path(path)
    if not file.exists():
        raise InputError(f"facts file {str(file)!r} does not exist", "check the --facts path")
    requests = [
        _fact_request(file, n, _json_object(file, n, line, _FACT_EXAMPLE))
        for n, line in _read_lines(file, "facts file", max_bytes)
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


def read_covariance_texts(
    path: str | os.PathLike[str], *, max_bytes: int = DATA_LIMIT
) -> list[str]:
    """The texts of a ``.jsonl`` file with ``"text"`` per line (other fields ignored), or of
    anything :func:`lmassay.attest.probes.load_probes` reads (a folder of category sub-folders of
    ``.txt`` files, a parquet file, a saved dataset), in file order; at most ``max_bytes`` of
    regular files (``--max-file-size``)."""
    source = Path(path)
    if not source.is_dir() and source.suffix.lower() in (".jsonl", ".json"):
        example = '{"text": "A paragraph of ordinary text."}'
        texts = []
        for number, line in _read_lines(source, "covariance texts file", max_bytes):
            text = _json_object(source, number, line, example).get("text")
            if not isinstance(text, str):
                raise InputError(
                    f'{source} line {number} has no "text" string', f"write lines like {example}"
                )
            if text.strip():
                texts.append(text)
    else:
        from lmassay.attest.probes import load_probes

        loaded = load_probes(source, min_per_category=1, max_bytes=max_bytes)
        texts = [s.text for s in loaded.samples if s.text.strip()]
    if not texts:
        raise InputError(f"{source} holds no text", "give a few hundred sample paragraphs")
    return texts


@dataclass(frozen=True)
class EditCovariance:
    """The second moment the edits use, and what it was computed from."""

    matrix: torch.Tensor  # (d_in, d_in), float64
    texts: list[str]  # the covariance texts (also the source of the context prefixes)
    record: dict[str, Any]


def _chosen_texts(config: EditConfig) -> tuple[str, str, list[str]] | None:
    """``(source, path, texts)`` of the covariance texts: the file, else the probes, else None."""
    if config.covariance_texts is not None:
        texts = read_covariance_texts(config.covariance_texts, max_bytes=config.max_file_bytes)
        return "file", config.covariance_texts, texts
    if config.probes is not None:
        from lmassay.attest.probes import load_probes

        probes = load_probes(config.probes, max_bytes=config.max_file_bytes)
        return "probes", config.probes, [s.text for s in probes.samples]
    return None


def edit_covariance(
    config: EditConfig, loaded: LoadedModel, layer: int, progress: Progress
) -> EditCovariance:
    """``C`` of layer ``layer`` over at most ``config.n_covariance_texts`` of the chosen texts
    (sampled with ``config.seed``), or ``C = I`` without texts; with its record for ``edit.json``."""
    import torch

    chosen = _chosen_texts(config)
    if chosen is None:
        progress.log(f"covariance: {IDENTITY_NOTE}")
        d_in = mlp_site(loaded.model, layer).d_in
        return EditCovariance(
            torch.eye(d_in, dtype=torch.float64),
            [],
            {"source": "identity", "path": None, "n_texts": 0, "note": IDENTITY_NOTE},
        )
    source, path, texts = chosen
    n_available = len(texts)
    if n_available > config.n_covariance_texts:
        rng = random.Random(f"lmassay-edit-covariance:{config.seed}")
        texts = rng.sample(texts, config.n_covariance_texts)
    progress.log(f"covariance: second moment of layer {layer} over {len(texts)} texts ({source})")
    matrix = second_moment(loaded.model, loaded.tokenizer, texts, layer=layer, ridge=config.ridge)
    joined = "\n".join(texts).encode("utf-8")
    return EditCovariance(
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
