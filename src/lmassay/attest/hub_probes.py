"""Probe samples from Hugging Face datasets: ``--probes hf:ORG/NAME[:CONFIG][@REVISION]``.

A spec names a dataset on the hub (``hf:allenai/ai2_arc:ARC-Challenge@210d026f…``) or a local
dataset repository folder (``hf:./my-dataset``: data files in the layout the hub uses, e.g.
``data/test-00000-of-00001.parquet`` or ``<config>/<split>-*.parquet``, read as
``datasets.load_dataset`` reads a folder). A spec whose text after ``hf:`` is an existing folder is
that folder; otherwise ``:CONFIG`` and ``@REVISION`` are split off (``@`` first, so a revision may
hold ``/`` as in ``refs/convert/parquet``).

Both go through ``datasets.load_dataset`` (``streaming=True`` where a suite source asks for it, so a
large set is read only as far as needed). Which data was read is recorded per source
(:class:`DatasetOrigin`): for the hub, the commit the revision resolved to (asked of the hub with
``HfApi.dataset_info`` before loading, and the data then loaded at that commit, so the record and
the data agree); with ``HF_HUB_OFFLINE=1`` a full 40-hex revision is its own commit and anything
else is recorded as unresolved, with a warning. For a local folder, the SHA-256 root digest of its
files (:func:`lmassay.digests.digest_tree`).

Class-label columns arrive as their label names (``bias_type: "race-color"``, not ``0``), so they
can name categories.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.digests import digest_tree
from lmassay.errors import ProbeError

__all__ = ["HF_PREFIX", "DatasetOrigin", "HubDataset", "open_rows", "parse_hf"]

HF_PREFIX = "hf:"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_SPEC_FIX = "write hf:ORG/NAME[:CONFIG][@REVISION], e.g. hf:allenai/ai2_arc:ARC-Challenge@main, or hf:FOLDER for a local dataset repository"


@dataclass(frozen=True)
class HubDataset:
    """A dataset named by an ``hf:`` spec: a hub id or a local folder, its config and revision."""

    name: str
    config: str | None = None
    revision: str | None = None
    local: bool = False

    @property
    def spec(self) -> str:
        config = f":{self.config}" if self.config else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{HF_PREFIX}{self.name}{config}{revision}"


@dataclass(frozen=True)
class DatasetOrigin:
    """Which data a source read: recorded in ``attestation.json`` (``probes.sources``) and in a
    built suite's ``suite.json``."""

    dataset: str
    config: str | None
    split: str
    revision: str | None
    """The revision asked for (``@REVISION`` or a suite's ``revision``)."""
    commit: str | None
    """The commit it resolved to on the hub; None for a local folder or when unresolved."""
    local_digest: str | None = None
    """A local folder's root digest (``sha256:…``) of its files."""

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "config": self.config,
            "split": self.split,
            "revision": self.revision,
            "commit": self.commit,
            "local_digest": self.local_digest,
        }


def parse_hf(spec: str, base: Path | None = None) -> HubDataset:
    """The dataset an ``hf:`` spec names (see the module docstring); ``base`` resolves a relative
    local folder (a suite file's folder), else the working directory."""
    if not spec.startswith(HF_PREFIX):
        raise ProbeError(f"{spec!r} is not an hf: dataset spec", _SPEC_FIX)
    body = spec[len(HF_PREFIX) :]
    if not body:
        raise ProbeError(f"{spec!r} names no dataset", _SPEC_FIX)
    whole = _local_folder(body, base)
    if whole is not None:
        return HubDataset(str(whole), local=True)
    rest, at, revision = body.partition("@")
    name, colon, config = rest.partition(":")
    if (at and not revision) or (colon and not config):
        raise ProbeError(f"{spec!r} has an empty config or revision", _SPEC_FIX)
    folder = _local_folder(name, base)
    if folder is not None:
        return HubDataset(str(folder), config or None, revision or None, local=True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ProbeError(f"dataset folder {name!r} of {spec!r} does not exist", "check the path")
    if not _NAME.fullmatch(name):
        raise ProbeError(f"{name!r} in {spec!r} is not a hub dataset id (ORG/NAME)", _SPEC_FIX)
    return HubDataset(name, config or None, revision or None)


def _local_folder(text: str, base: Path | None) -> Path | None:
    path = Path(text).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path if path.is_dir() else None


def open_rows(
    dataset: HubDataset, split: str | None, *, streaming: bool = False
) -> tuple[Iterable[dict[str, Any]], DatasetOrigin, list[str]]:
    """The rows of ``split`` of ``dataset`` (class labels as names), where they came from, and
    warnings. Rows stream from the hub when ``streaming``; otherwise the split is loaded whole.

    Raises:
        ProbeError: the dataset, config, revision or split cannot be loaded; the message names it.
    """
    import datasets

    warnings: list[str] = []
    commit, local_digest = None, None
    revision = dataset.revision
    if dataset.local:
        if dataset.revision:
            warnings.append(f"revision {dataset.revision!r} ignored: {dataset.name} is a folder")
            revision = None
        local_digest = str(digest_tree(dataset.name))
    else:
        commit = _resolve_commit(dataset, warnings)
    try:
        loaded = datasets.load_dataset(
            dataset.name,
            dataset.config,
            split=split,
            revision=commit or revision,
            streaming=streaming,
        )
    except (datasets.exceptions.DatasetsError, ValueError, *_network_errors()) as exc:
        raise _load_error(dataset, split, exc) from None
    if split is None:
        names = ", ".join(repr(s) for s in sorted(loaded)) or "none"
        raise ProbeError(f"{dataset.spec} has splits {names}", "pass --split NAME to pick one")
    origin = DatasetOrigin(
        dataset=dataset.name,
        config=dataset.config,
        split=split,
        revision=revision,
        commit=commit,
        local_digest=local_digest,
    )
    return _named_labels(loaded), origin, warnings


def _resolve_commit(dataset: HubDataset, warnings: list[str]) -> str | None:
    """The commit ``dataset.revision`` (default: main) points at on the hub, or None offline."""
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if dataset.revision and _COMMIT.fullmatch(dataset.revision):
        return dataset.revision
    if HF_HUB_OFFLINE:
        warnings.append(
            f"{dataset.spec}: HF_HUB_OFFLINE is set, so revision "
            f"{dataset.revision or 'main'!r} was not resolved to a commit (read from the cache)"
        )
        return None
    try:
        sha = HfApi().dataset_info(dataset.name, revision=dataset.revision).sha
    except _network_errors() as exc:
        raise ProbeError(
            f"cannot resolve {dataset.spec} on the Hugging Face hub: {_first_line(exc)}",
            "check the dataset id, revision and network (a gated set needs `hf auth login`), or "
            "give a local dataset folder as hf:FOLDER",
        ) from None
    return str(sha) if sha else None


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError (the hub's own errors, requests') and the HTTP client's base error: httpx or
    httpx2, whichever the installed huggingface_hub uses."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _load_error(dataset: HubDataset, split: str | None, exc: BaseException) -> ProbeError:
    where = f"split {split!r} of {dataset.spec}" if split else dataset.spec
    return ProbeError(
        f"cannot load {where}: {_first_line(exc)}",
        "check the dataset id, config (hf:ORG/NAME:CONFIG), --split and revision; offline, "
        "the dataset must be in the datasets cache or a local folder",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _named_labels(loaded: Any) -> Iterator[dict[str, Any]]:
    """Rows with every class-label column given as its label name."""
    from datasets import ClassLabel

    features = getattr(loaded, "features", None) or {}
    labels = {name: f for name, f in features.items() if isinstance(f, ClassLabel)}
    for row in loaded:
        for name, feature in labels.items():
            value = row.get(name)
            if isinstance(value, int) and 0 <= value < feature.num_classes:
                row[name] = feature.int2str(value)
        yield row
