"""``lmassay probes build`` and ``probes ls``: materialise a suite, list the built-in ones.

:func:`build_suite` reads a suite (``builtin:NAME``, a bare built-in name, or a suite file) through
:func:`lmassay.attest.probes.load_probes` and writes ``OUT/probes.jsonl`` (the samples in
``(category, id)`` order) and ``OUT/suite.json``::

    {"schema": "lmassay.suite/v1", "name", "description", "spec", "built", "tool",
     "sources": [{"id", "dataset", "config", "split", "revision", "commit", "local_digest",
                  "file", "licence", "n_rows_read", "n_samples"}, ...],
     "n_samples", "categories": {name: count}, "digest": {"algorithm": "sha256", "value"},
     "warnings": [...]}

``digest`` is the probe-corpus digest (:func:`lmassay.attest.probes.probes_digest`) of
``probes.jsonl``; ``lmassay attest --probes OUT`` (and :func:`load_probes`) refuses the folder when
the file no longer has it, and ``lmassay seal`` can sign the folder for sharing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay import __version__
from lmassay._atomic import atomic_write_json
from lmassay.attest.probes import ProbeSet, load_probes, write_probes_jsonl
from lmassay.attest.suites import (
    BUILTIN_PREFIX,
    PROBES_FILE,
    SUITE_FILE,
    SUITE_SCHEMA,
    Suite,
    builtin_suites,
    is_suite_spec,
    load_suite,
)
from lmassay.bounded_read import DATA_LIMIT
from lmassay.output_folder import OutputFolder
from lmassay.provenance import utc_now

__all__ = ["SuiteInfo", "build_suite", "list_suites", "suite_spec"]


@dataclass(frozen=True)
class SuiteInfo:
    """A row of ``lmassay probes ls``: a built-in suite, its sources and their licences."""

    name: str
    description: str
    offline: bool
    size: str
    sources: tuple[tuple[str, str, str], ...]  # (id, where, licence)


def suite_spec(suite: str) -> str:
    """``builtin:NAME`` for a bare built-in name; a suite file's path or ``builtin:`` as given."""
    return suite if is_suite_spec(suite) else f"{BUILTIN_PREFIX}{suite}"


def list_suites() -> list[SuiteInfo]:
    """The built-in suites with their sources, sizes and licences."""
    return [_info(suite) for suite in builtin_suites()]


def _info(suite: Suite) -> SuiteInfo:
    if suite.offline:
        probes = load_probes(suite.spec)
        size = f"{len(probes)} samples in {len(probes.categories)} categories (shipped)"
    else:
        per = ", ".join(f"{s.id} {s.n or 'all'}" for s in suite.sources)
        size = f"per category: {per} (needs the hub)"
    rows = tuple((s.id, s.where, s.licence or "see the dataset card") for s in suite.sources)
    return SuiteInfo(suite.name, suite.description, suite.offline, size, rows)


def build_suite(suite: str, out: str | Path, *, max_bytes: int = DATA_LIMIT) -> ProbeSet:
    """Materialise ``suite`` into ``out`` (``probes.jsonl`` and ``suite.json``; see the module
    docstring); ``out`` is replaced as a whole and may hold only those files."""
    spec = suite_spec(suite)
    definition = load_suite(spec)
    with OutputFolder(out, owned=(PROBES_FILE, SUITE_FILE)) as folder:
        probes = load_probes(spec, max_bytes=max_bytes, min_per_category=1)
        with folder.writing():
            write_probes_jsonl(probes.samples, folder.staging / PROBES_FILE)
            atomic_write_json(folder.staging / SUITE_FILE, _manifest(definition, probes))
        folder.commit()
    return probes


def _manifest(suite: Suite, probes: ProbeSet) -> dict[str, Any]:
    return {
        "schema": SUITE_SCHEMA,
        "name": suite.name,
        "description": suite.description,
        "spec": suite.spec,
        "built": utc_now(),
        "tool": {"name": "lmassay", "version": __version__},
        "sources": [dict(s) for s in probes.sources],
        "n_samples": len(probes),
        "categories": probes.categories,
        "digest": probes.digest.to_json(),
        "warnings": list(probes.warnings),
    }
