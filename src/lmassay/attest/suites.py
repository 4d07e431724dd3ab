"""Probe suites: several dataset sources turned into one categorised probe corpus.

A suite is a YAML file in the spirit of an lm-evaluation-harness task file::

    name: knowledge
    description: Factual question sets, one category per set or subject.
    sources:
      - id: arc-challenge                 # unique in the suite; sample ids are "<id>/<row>"
        dataset: allenai/ai2_arc          # a hub id, or a local dataset folder (relative to the suite)
        config: ARC-Challenge
        revision: 210d026faf9955653af8916fad021475a3f00453
        split: test
        text: "Question: {{ question }}\\nAnswer: {{ choices.text[choices.label.index(answerKey)] }}"
        category: arc-challenge           # a fixed name or a template ("mmlu/{{ subject }}")
        n: 40                             # samples per category (default: all)
        seed: 0
        licence: CC-BY-SA-4.0
      - id: refusal
        file: refusal.jsonl               # a local probe file (JSONL/parquet, relative to the suite)
        prompt: "{{ prompt }}"            # prompt + response: a conversation sample (--chat-template)
        response: "{{ response }}"
        category: "{{ category }}"

Each source gives the text either as a template (``text``) or a field (``text_field``), or a
conversation as ``prompt`` and ``response`` templates (optional ``system``); the category as a
template (``category``) or a field (``category_field``). Templates are Jinja2 (as lm-eval's
``doc_to_text``), sandboxed, with undefined names an error; a row's fields are the names, class
labels given as their names. ``streaming: true`` streams a large set and reads at most ``scan`` rows
(default 20,000) in the split's order; ``max_chars`` cuts longer texts at the last space before it.

Which rows are kept: rows whose text (or response) is empty after rendering are skipped; per
category the rows are ordered by id and ``n`` of them chosen with the seed as
:func:`lmassay.attest.probes.load_probes` subsamples (``numpy.random.default_rng([seed,
crc32(category)])``), so the choice depends only on the seed, the category and the rows read.

``builtin:NAME`` is one of the suites shipped in :mod:`lmassay.suites` (:func:`builtin_suites`).
:func:`build_suite` materialises a suite into ``DIR/probes.jsonl`` and ``DIR/suite.json`` (its
sources with their resolved commits, counts and the corpus digest); :func:`read_built_suite`
reads such a folder back and refuses it when ``probes.jsonl`` no longer has the recorded digest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lmassay.attest.hub_probes import DatasetOrigin, HubDataset, open_rows
from lmassay.attest.probe_readers import Fields, Record, detect_format, read_records
from lmassay.bounded_read import DATA_LIMIT, DOCUMENT_LIMIT, read_bytes
from lmassay.errors import ProbeError

__all__ = [
    "BUILTIN_PREFIX",
    "DEFAULT_SUITE",
    "SUITE_FILE",
    "BuiltSuite",
    "Suite",
    "SuiteSource",
    "builtin_suites",
    "is_suite_spec",
    "load_suite",
    "read_built_suite",
    "read_suite_records",
]

BUILTIN_PREFIX = "builtin:"
DEFAULT_SUITE = "offline"
"""The suite ``lmassay attest`` scores when no ``--probes`` is given: shipped, no network."""
SUITE_FILE = "suite.json"
PROBES_FILE = "probes.jsonl"
SUITE_SCHEMA = "lmassay.suite/v1"
DEFAULT_SCAN = 20_000
_SUFFIXES = (".yaml", ".yml")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SOURCE_KEYS = {
    "id", "dataset", "config", "revision", "split", "file", "text", "text_field", "prompt",
    "response", "system", "category", "category_field", "n", "seed", "streaming", "scan",
    "max_chars", "licence", "description",
}  # fmt: skip
_SUITE_KEYS = {"name", "description", "sources"}


@dataclass(frozen=True)
class SuiteSource:
    """One source of a suite (see the module docstring for each key)."""

    id: str
    dataset: str | None = None
    config: str | None = None
    revision: str | None = None
    split: str | None = None
    file: str | None = None
    text: str | None = None
    text_field: str | None = None
    prompt: str | None = None
    response: str | None = None
    system: str | None = None
    category: str | None = None
    category_field: str | None = None
    n: int | None = None
    seed: int = 0
    streaming: bool = False
    scan: int = DEFAULT_SCAN
    max_chars: int | None = None
    licence: str | None = None
    description: str | None = None

    @property
    def where(self) -> str:
        """What the source reads, for listings: ``ORG/NAME:CONFIG@REV [split]`` or the file."""
        if self.file is not None:
            return self.file
        config = f":{self.config}" if self.config else ""
        revision = f"@{self.revision[:12]}" if self.revision else " (unpinned)"
        return f"{self.dataset}{config}{revision} [{self.split}]"


@dataclass(frozen=True)
class Suite:
    """A parsed suite file; ``base`` is its folder (relative ``file``/``dataset`` paths)."""

    name: str
    description: str
    sources: tuple[SuiteSource, ...]
    path: Path
    builtin: bool = False

    @property
    def base(self) -> Path:
        return self.path.parent

    @property
    def spec(self) -> str:
        return f"{BUILTIN_PREFIX}{self.name}" if self.builtin else str(self.path)

    @property
    def offline(self) -> bool:
        """Whether every source is a local file or folder (no hub needed)."""
        return all(
            s.file is not None or (self.base / str(s.dataset)).is_dir() for s in self.sources
        )


@dataclass(frozen=True)
class SourceRecords:
    """What one source gave: its records (before subsampling across sources) and its origin."""

    source: SuiteSource
    records: list[Record]
    origin: dict[str, Any]
    n_rows_read: int


@dataclass(frozen=True)
class BuiltSuite:
    """A materialised suite folder: its ``suite.json`` and where its ``probes.jsonl`` is."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def probes_path(self) -> Path:
        return self.folder / PROBES_FILE


# --------------------------------------------------------------------------------------------
# finding and parsing suites


def is_suite_spec(spec: str) -> bool:
    """Whether ``--probes`` names a suite: ``builtin:NAME`` or a ``.yaml``/``.yml`` file."""
    return spec.startswith(BUILTIN_PREFIX) or spec.lower().endswith(_SUFFIXES)


def _builtin_folder() -> Path:
    return Path(str(resources.files("lmassay.suites")))


def builtin_suites() -> list[Suite]:
    """The suites shipped with lmassay, sorted by name."""
    paths = sorted(p for p in _builtin_folder().iterdir() if p.suffix in _SUFFIXES)
    return [_parse(p, builtin=True) for p in paths]


def load_suite(spec: str) -> Suite:
    """The suite ``spec`` names: ``builtin:NAME`` or a suite file's path."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        path = _builtin_folder() / f"{name}.yaml"
        if not _ID.fullmatch(name) or not path.is_file():
            known = ", ".join(s.name for s in builtin_suites())
            raise ProbeError(
                f"there is no built-in suite {name!r}",
                f"use one of {known} (see `lmassay probes ls`)",
            )
        return _parse(path, builtin=True)
    path = Path(spec)
    if not path.is_file():
        raise ProbeError(f"suite file {spec} does not exist", "check the path given to --probes")
    return _parse(path)


def _parse(path: Path, *, builtin: bool = False) -> Suite:
    import yaml

    data = read_bytes(path, what="suite file", limit=DOCUMENT_LIMIT)
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ProbeError(
            f"suite file {path} is not valid YAML: {detail}", "fix the YAML syntax"
        ) from None
    if not isinstance(raw, dict):
        raise ProbeError(f"suite file {path} is not a mapping", "start it with name: and sources:")
    _unknown_keys(raw, _SUITE_KEYS, f"suite file {path}")
    name = raw.get("name")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        raise ProbeError(
            f"suite file {path}: 'name' is {name!r}", "give a name of letters, digits, ., _ or -"
        )
    sources_raw = raw.get("sources")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise ProbeError(f"suite file {path} has no 'sources' list", "list one source or more")
    sources = tuple(_parse_source(s, i, path) for i, s in enumerate(sources_raw, start=1))
    ids = [s.id for s in sources]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ProbeError(
            f"suite file {path}: source id {repeated[0]!r} is used twice", "give each a unique id"
        )
    return Suite(name, str(raw.get("description") or ""), sources, path, builtin)


def _unknown_keys(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ProbeError(
            f"{where}: unknown key {unknown[0]!r}", f"use only {', '.join(sorted(known))}"
        )


def _parse_source(raw: Any, number: int, path: Path) -> SuiteSource:
    where = f"suite file {path} source {number}"
    if not isinstance(raw, dict):
        raise ProbeError(f"{where} is not a mapping", "give each source as key: value lines")
    _unknown_keys(raw, _SOURCE_KEYS, where)
    source_id = raw.get("id")
    if not isinstance(source_id, str) or not _ID.fullmatch(source_id):
        raise ProbeError(f"{where}: 'id' is {source_id!r}", "give an id of letters, digits, ._-")
    where = f"suite file {path} source {source_id!r}"
    strings = ("dataset", "config", "revision", "split", "file", "text", "text_field", "prompt",
               "response", "system", "category", "category_field", "licence", "description")  # fmt: skip
    for key in strings:
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ProbeError(f"{where}: {key!r} is not a string", f"quote the value of {key}")
    for key in ("n", "seed", "scan", "max_chars"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ProbeError(
                f"{where}: {key!r} is {value!r}, not an integer", f"give {key} a number"
            )
    checks = [
        ((raw.get("dataset") is None) != (raw.get("file") is None), "give one of 'dataset' and 'file'"),
        (raw.get("file") is not None or raw.get("split") is not None, "a dataset source needs 'split'"),
        (_one_of(raw, "text", "text_field", "prompt"), "give one of 'text', 'text_field', or 'prompt' with 'response'"),
        ((raw.get("prompt") is None) == (raw.get("response") is None), "give 'prompt' and 'response' together"),
        (_one_of(raw, "category", "category_field"), "give one of 'category' and 'category_field'"),
        (raw.get("n") is None or raw["n"] >= 1, "'n' must be 1 or more"),
        (raw.get("seed", 0) >= 0, "'seed' must be 0 or more"),
        (raw.get("scan", DEFAULT_SCAN) >= 1, "'scan' must be 1 or more"),
        (raw.get("max_chars") is None or raw["max_chars"] >= 1, "'max_chars' must be 1 or more"),
        (isinstance(raw.get("streaming", False), bool), "'streaming' must be true or false"),
    ]  # fmt: skip
    for holds, fix in checks:
        if not holds:
            raise ProbeError(f"{where} is incomplete or inconsistent", fix)
    return SuiteSource(**raw)


def _one_of(raw: Mapping[str, Any], *keys: str) -> bool:
    return sum(raw.get(k) is not None for k in keys) == 1


# --------------------------------------------------------------------------------------------
# reading a suite's records


def read_suite_records(
    suite: Suite, warnings: list[str], *, max_bytes: int = DATA_LIMIT
) -> list[SourceRecords]:
    """Every source's records, each source subsampled to its ``n`` per category."""
    from lmassay.attest.probes import subsample_records

    out = []
    for source in suite.sources:
        rows, origin, n_read = _source_rows(suite, source, warnings, max_bytes)
        records = list(_render(suite, source, rows))
        if not records:
            raise ProbeError(
                f"suite {suite.name!r} source {source.id!r} gave no samples ({n_read} rows read)",
                "check its split, fields and templates",
            )
        if source.n is not None:
            records = subsample_records(records, source.n, source.seed, warnings)
        out.append(SourceRecords(source, records, origin, n_read))
    return out


def _source_rows(
    suite: Suite, source: SuiteSource, warnings: list[str], max_bytes: int
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], int]:
    """``(row id, row)`` pairs of a source, its origin record and how many rows were read."""
    origin: dict[str, Any] = {"id": source.id, "licence": source.licence}
    if source.file is not None:
        path = suite.base / source.file
        fields = Fields(text="text", category="category", id="id")
        records = read_records(path, detect_format(path), fields, None, warnings, limit=max_bytes)
        rows = [(r.id, _record_row(r)) for r in records]
        origin.update(file=source.file, dataset=None, revision=None, commit=None)
        return rows, origin, len(rows)
    dataset = _hub_dataset(suite, source)
    try:
        iterator, found, more = open_rows(dataset, source.split, streaming=source.streaming)
    except ProbeError as exc:
        raise ProbeError(
            f"suite {suite.name!r} source {source.id!r}: {exc.what}", exc.fix
        ) from None
    warnings.extend(more)
    limit = source.scan if source.streaming else None
    rows = []
    for index, row in enumerate(iterator):
        if limit is not None and index >= limit:
            break
        rows.append((str(index), row))
    origin.update(_origin_json(found))
    return rows, origin, len(rows)


def _hub_dataset(suite: Suite, source: SuiteSource) -> HubDataset:
    name = str(source.dataset)
    folder = suite.base / name
    if folder.is_dir():
        return HubDataset(str(folder), source.config, source.revision, local=True)
    return HubDataset(name, source.config, source.revision)


def _origin_json(origin: DatasetOrigin) -> dict[str, Any]:
    return origin.to_json()


def _record_row(record: Record) -> dict[str, Any]:
    """A probe file's record as a template row: ``text``/``category``/``id`` (+ conversation)."""
    row: dict[str, Any] = {"id": record.id, "category": record.category, "text": record.text}
    if record.messages is not None:
        row["messages"] = [{"role": r, "content": c} for r, c in record.messages]
        row["response"] = record.text
        users = [c for r, c in record.messages if r == "user"]
        row["prompt"] = users[-1] if users else ""
    return row


def _render(
    suite: Suite, source: SuiteSource, rows: Iterable[tuple[str, dict[str, Any]]]
) -> Iterable[Record]:
    """Records from rows with the source's templates; empty texts are skipped."""
    from jinja2 import TemplateSyntaxError

    env = _environment()
    where = f"suite {suite.name!r} source {source.id!r}"

    def template(text: str | None, field_name: str | None) -> Any:
        if text is None and field_name is None:
            return None
        try:
            return env.from_string(
                text if text is not None else "{{ row[" + json.dumps(field_name) + "] }}"
            )
        except TemplateSyntaxError as exc:
            raise ProbeError(f"{where}: template error: {exc}", "fix the template") from None

    text_t = template(source.text, source.text_field)
    prompt_t, response_t = template(source.prompt, None), template(source.response, None)
    system_t = template(source.system, None)
    category_t = template(source.category, source.category_field)
    for row_id, row in rows:
        text = _apply(text_t or response_t, row, where, row_id)
        if not text.strip():
            continue
        category = _apply(category_t, row, where, row_id).strip()
        if not category:
            raise ProbeError(
                f"{where} row {row_id}: the category is empty",
                "check 'category' / 'category_field'",
            )
        messages = None
        if prompt_t is not None:
            turns = [("user", _apply(prompt_t, row, where, row_id))]
            if system_t is not None:
                turns.insert(0, ("system", _apply(system_t, row, where, row_id)))
            messages = tuple(turns)
        elif source.file is not None and "messages" in row:
            messages = tuple((m["role"], m["content"]) for m in row["messages"])
        sample_id = f"{source.id}/{row_id}"
        yield Record(
            sample_id, category, _cut(text, source.max_chars), source.id, f"row {row_id}", messages
        )


def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def _apply(template: Any, row: dict[str, Any], where: str, row_id: str) -> str:
    from jinja2 import TemplateError

    try:
        return str(template.render(**row, row=row))
    except (TemplateError, LookupError, TypeError, ValueError) as exc:
        fields = ", ".join(sorted(row))
        raise ProbeError(
            f"{where} row {row_id}: template failed ({' '.join(str(exc).split())[:160]}); "
            f"fields: {fields}",
            "use the row's field names in the templates",
        ) from None


def _cut(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[: cut if cut > 0 else max_chars]


# --------------------------------------------------------------------------------------------
# materialised suites


def read_built_suite(folder: Path) -> BuiltSuite:
    """A folder written by :func:`lmassay.attest.suite_build.build_suite` (its manifest read,
    not yet checked against ``probes.jsonl``)."""
    manifest_path = folder / SUITE_FILE
    try:
        manifest = json.loads(
            read_bytes(manifest_path, what="suite manifest", limit=DOCUMENT_LIMIT)
        )
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProbeError(
            f"{manifest_path} is not valid JSON", "build the suite again (lmassay probes build)"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SUITE_SCHEMA:
        raise ProbeError(
            f"{manifest_path} is not an lmassay suite manifest ({SUITE_SCHEMA})",
            "build the suite again (lmassay probes build)",
        )
    return BuiltSuite(folder, manifest)
