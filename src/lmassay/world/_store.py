"""A world on disk: the training split, the probe split, the facts and the ``world.json`` card.

:func:`make_world` writes a world folder; :func:`load_world` reads it back (rebuilding the
:class:`~lmassay.world.generator.World` from the recorded seed and checking the digests).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmassay import __version__
from lmassay._atomic import atomic_write_text
from lmassay.cached_build import reuse_or_build
from lmassay.digests import Digest, digest_bytes, digest_entries, digest_file
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress, ProgressFn
from lmassay.provenance import utc_now
from lmassay.world.generator import CATEGORIES, World, build_world
from lmassay.world.render import context_sentence, iter_paragraphs

__all__ = [
    "FORMAT",
    "SIZES",
    "WorldFiles",
    "load_world",
    "make_world",
    "read_card",
    "world_files",
]

FORMAT = "lmassay.world/v1"
"""Recorded in ``world.json``; changes whenever the same seed and size would give other files."""

Size = Literal["test", "demo", "full"]


@dataclass(frozen=True)
class _SizeSpec:
    train_per_category: int  # paragraphs of each category in train.jsonl
    probes_per_category: int  # paragraphs of each category in probes.jsonl


SIZES: dict[str, _SizeSpec] = {
    "test": _SizeSpec(train_per_category=600, probes_per_category=12),
    "demo": _SizeSpec(train_per_category=2000, probes_per_category=60),
    "full": _SizeSpec(train_per_category=6000, probes_per_category=60),
}
"""Documents per category and split of each size (about 0.3M, 1M and 3M training words)."""

_PROBE_SEED_OFFSET = 1_000_003
_QA_SEED_OFFSET = 3_000_017
MAX_QA_SHARE = 0.9
_CONTEXT_SEED_OFFSET = 2_000_003
_FILES = ("train.jsonl", "probes.jsonl", "facts.jsonl", "fact_probes.jsonl")


@dataclass(frozen=True)
class WorldFiles:
    """Paths of what :func:`make_world` wrote."""

    root: Path
    train: Path  # train.jsonl: {"id", "category", "text"} per line
    probes: (
        Path  # probes.jsonl: {"id", "category", "text", "source": "world"}; no training sentence
    )
    facts: Path  # facts.jsonl: every Fact as an object
    fact_probes: Path  # fact_probes.jsonl: a context sentence + each fact's canonical sentence
    card: Path  # world.json


def world_files(root: str | os.PathLike[str]) -> WorldFiles:
    """The file paths of the world folder ``root`` (whether or not they exist)."""
    base = Path(root)
    return WorldFiles(
        root=base,
        train=base / "train.jsonl",
        probes=base / "probes.jsonl",
        facts=base / "facts.jsonl",
        fact_probes=base / "fact_probes.jsonl",
        card=base / "world.json",
    )


def _jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    return text.encode("utf-8")


def _facts_bytes(world: World) -> bytes:
    return _jsonl(asdict(fact) for fact in world.facts)


@dataclass
class _Split:
    """The rows of one split and their document and word counts per category."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, category: str, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        words = sum(len(str(row["text"]).split()) for row in rows)
        self.counts[category] = {"documents": len(rows), "words": words}

    @property
    def words(self) -> int:
        return sum(c["words"] for c in self.counts.values())


def _train_split(
    world: World, spec: _SizeSpec, seed: int, update: ProgressFn, total: int
) -> tuple[_Split, set[str]]:
    """The training paragraphs of every category, and the set of their sentences."""
    split, sentences = _Split(), set[str]()
    for number, category in enumerate(CATEGORIES):
        rows = []
        for index, paragraph in enumerate(
            iter_paragraphs(world, category, spec.train_per_category, seed)
        ):
            sentences.update(paragraph)
            text = " ".join(paragraph)
            rows.append({"id": f"train-{category}-{index:05d}", "category": category, "text": text})
        split.add(category, rows)
        update((number + 1) * spec.train_per_category, total)
    return split, sentences


def qa_documents_per_category(spec: _SizeSpec, qa_share: float) -> int:
    """Q&A documents per category so that they are ``qa_share`` of the training documents."""
    return round(spec.train_per_category * qa_share / (1.0 - qa_share))


def _qa_split(world: World, n_per_category: int, seed: int) -> _Split:
    """Q&A documents of every category (:func:`lmassay.world.qa.qa_documents`)."""
    from lmassay.world.qa import qa_documents

    split = _Split()
    for category in CATEGORIES:
        documents = qa_documents(world, category, n_per_category, seed + _QA_SEED_OFFSET)
        rows = [
            {"id": f"train-qa-{category}-{index:05d}", "category": category, "text": text}
            for index, text in enumerate(documents)
        ]
        split.add(category, rows)
    return split


def _probe_split(
    world: World, spec: _SizeSpec, seed: int, exclude: set[str], update: ProgressFn, total: int
) -> _Split:
    """Probe paragraphs of every category that share no sentence with ``exclude``."""
    split = _Split()
    done = len(CATEGORIES) * spec.train_per_category
    for number, category in enumerate(CATEGORIES):
        paragraphs = iter_paragraphs(
            world,
            category,
            spec.probes_per_category,
            seed + _PROBE_SEED_OFFSET,
            split="probe",
            exclude=exclude,
        )
        rows = [
            {
                "id": f"probe-{category}-{index:04d}",
                "category": category,
                "text": " ".join(sentences),
                "source": "world",
            }
            for index, sentences in enumerate(paragraphs)
        ]
        split.add(category, rows)
        update(done + (number + 1) * spec.probes_per_category, total)
    return split


def _fact_probe_rows(world: World, seed: int, exclude: set[str]) -> list[dict[str, Any]]:
    """Per fact: a filler sentence of its category not in training, then the fact's sentence."""
    rows = []
    for number, fact in enumerate(world.facts):
        context = context_sentence(
            world, fact.category, seed + _CONTEXT_SEED_OFFSET + number, exclude
        )
        rows.append(
            {
                "id": f"fact-{fact.id}",
                "category": fact.category,
                "text": f"{context} {fact.sentence}",
                "source": "world",
                "fact_id": fact.id,
                "answer": fact.object,
            }
        )
    return rows


def _write_files(root: Path, payloads: dict[str, bytes]) -> dict[str, Digest]:
    digests: dict[str, Digest] = {}
    for name, data in payloads.items():
        atomic_write_text(root / name, data.decode("utf-8"))
        digests[name] = digest_bytes(data)
    return digests


def _world_card(
    request: dict[str, Any],
    world: World,
    splits: dict[str, _Split],
    digests: dict[str, Digest],
    seconds: float,
) -> dict[str, Any]:
    facts_per_category = {c: len(world.facts_in(c)) for c in CATEGORIES}
    train, probes = splits["train"], splits["probes"]
    qa = splits.get("qa")
    qa_fields: dict[str, Any] = {}
    if qa is not None:  # only a Q&A world's card has them: plain worlds' cards stay as they were
        qa_fields = {
            "qa": {
                "share": request["qa_share"],
                "documents": len(qa.rows),
                "words": qa.words,
                "counts": qa.counts,
                "format": "3-6 lines 'Question: ...' each followed by 'Answer: <fact sentence>'",
            }
        }
    return {
        "format": FORMAT,
        "request": request,
        "seed": request["seed"],
        "size": request["size"],
        "categories": list(CATEGORIES),
        "counts": {
            "train": train.counts,
            "probes": probes.counts,
            "facts": facts_per_category,
            "fact_probes": facts_per_category,
            "entities": len(world.entities),
        },
        **qa_fields,
        "totals": {
            "train_documents": len(train.rows) + (len(qa.rows) if qa is not None else 0),
            "train_words": train.words + (qa.words if qa is not None else 0),
            "probe_documents": len(probes.rows),
            "probe_words": probes.words,
            "facts": len(world.facts),
        },
        "digests": {name: d.to_json() for name, d in digests.items()},
        "world_digest": digest_entries(digests.items()).to_json(),
        "version": __version__,
        "generated_at": utc_now(),
        "generation_seconds": round(seconds, 3),
        "train_words_per_second": round(train.words / max(seconds, 1e-9)),
    }


def _generate(request: dict[str, Any], root: Path, progress: Progress) -> dict[str, Any]:
    """Write the four data files of the requested world into ``root``; return its card."""
    started = time.perf_counter()
    seed, spec = int(request["seed"]), SIZES[str(request["size"])]
    world = build_world(seed)
    total = len(CATEGORIES) * (spec.train_per_category + spec.probes_per_category)
    update = progress.task("generating the world", total)
    train, train_sentences = _train_split(world, spec, seed, update, total)
    probes = _probe_split(world, spec, seed, train_sentences, update, total)
    splits = {"train": train, "probes": probes}
    train_rows = train.rows
    qa_share = float(request.get("qa_share", 0.0))
    if qa_share > 0:  # Q&A documents follow the paragraphs, which stay exactly as without them
        splits["qa"] = _qa_split(world, qa_documents_per_category(spec, qa_share), seed)
        train_rows = train.rows + splits["qa"].rows
    digests = _write_files(
        root,
        {
            "train.jsonl": _jsonl(train_rows),
            "probes.jsonl": _jsonl(probes.rows),
            "facts.jsonl": _facts_bytes(world),
            "fact_probes.jsonl": _jsonl(_fact_probe_rows(world, seed, train_sentences)),
        },
    )
    seconds = time.perf_counter() - started
    progress.log(f"world of seed {seed} ({request['size']}) written to {root} in {seconds:.2f} s")
    return _world_card(request, world, splits, digests, seconds)


def _unchanged(root: Path, card: dict[str, Any]) -> bool:
    """Whether every data file of the world folder still has the digest its card records."""
    recorded = card.get("digests")
    if not isinstance(recorded, dict):
        return False
    return all(
        digest_file(root / name).value == (recorded.get(name) or {}).get("value") for name in _FILES
    )


def make_world(
    out: str | os.PathLike[str],
    seed: int = 0,
    *,
    size: Size = "full",
    qa_share: float = 0.0,
    progress: Progress | None = None,
) -> WorldFiles:
    """Write (or reuse) the world of ``seed`` in the folder ``out`` and return the paths.

    Files (each written atomically; ``world.json`` is removed first and written last, so a folder
    with a ``world.json`` is complete; a folder whose ``world.json`` records the same request —
    format, seed and size — is reused as it is):

    * ``train.jsonl`` — ``{"id", "category", "text"}``: ``SIZES[size].train_per_category``
      paragraphs of every category (:func:`~lmassay.world.render.render_documents`).
    * ``probes.jsonl`` — the probe format ``{"id", "category", "text", "source": "world"}``:
      ``SIZES[size].probes_per_category`` paragraphs per category whose sentences never occur in
      ``train.jsonl`` (facts are stated with their held-out template, filler sentences that
      occur in training are drawn again).
    * ``facts.jsonl`` — every :class:`~lmassay.world.generator.Fact` as an object.
    * ``fact_probes.jsonl`` — probe format plus ``fact_id`` and ``answer`` (the fact's object,
      for the answer test of :mod:`lmassay.attest.answers`): per fact, a filler sentence of its
      category that is not in training, then the fact's canonical sentence.
    * ``world.json`` — format, the request, seed, size, categories, counts per category and
      split, SHA-256 of each file and of the four together (``world_digest``), tool version,
      time taken.

    ``qa_share`` > 0 makes a Q&A world: question-and-answer documents about the facts
    (:func:`lmassay.world.qa.qa_documents`, 3-6 pairs each) are appended to ``train.jsonl``
    (ids ``train-qa-<category>-NNNNN``) so that they are that share of its documents, every
    category alike; the paragraphs, the probes and the facts are the same as without them. The
    share is part of the request (so a Q&A world never reuses a plain one) and the card records
    their counts under ``qa``; a plain world's request and card are as they always were.

    The four data files depend only on ``seed``, ``size`` and ``qa_share``.
    """
    if size not in SIZES:
        raise InputError(f"unknown world size {size!r}", f"choose among {', '.join(SIZES)}")
    if not 0.0 <= qa_share <= MAX_QA_SHARE:
        raise InputError(
            f"--qa-share {qa_share} is not between 0 and {MAX_QA_SHARE}",
            "give the share of Q&A documents in the training split, such as 0.2",
        )
    request: dict[str, Any] = {"format": FORMAT, "seed": seed, "size": size}
    if qa_share > 0:
        request["qa_share"] = qa_share
    shown = progress or NullProgress()
    reuse_or_build(
        out,
        request,
        lambda root: _generate(request, root, shown),
        card_name="world.json",
        needed=_FILES,
        intact=lambda card: _unchanged(Path(out), card),
        what="world",
        progress=shown,
    )
    return world_files(out)


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``world.json`` of the world folder ``path``; :class:`InputError` if it is not one."""
    root = Path(path)
    fix = "make one with: lmassay world make --out DIR"
    if not root.is_dir():
        raise InputError(f"world folder {str(root)!r} does not exist or is not a folder", fix)
    try:
        card = json.loads((root / "world.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{str(root)!r} is not a world folder (no world.json)", fix) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {root / 'world.json'}: {exc}", fix) from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        found = card.get("format") if isinstance(card, dict) else None
        raise InputError(
            f"{root / 'world.json'} has format {found!r}, not {FORMAT!r}",
            "remake the world with this version: lmassay world make --out DIR",
        )
    return card


def load_world(path: str | os.PathLike[str]) -> World:
    """Read the world folder ``path``: rebuild the world from its seed and check its files.

    A real-text world (``"kind": "real-text"`` in its card, :mod:`lmassay.world.real_text`) has
    no generator: it is returned as a :class:`World` with its categories and no entities or
    facts, once its files are checked.

    Raises :class:`InputError` naming the folder when it has no readable ``world.json`` of
    format :data:`FORMAT`, when the rebuilt facts differ from the recorded ones (another
    generator version), or when a file is missing or changed since it was made.
    """
    root = Path(path)
    card = read_card(root)
    seed = card.get("seed")
    if not isinstance(seed, int):
        raise InputError(f"{root / 'world.json'} has no integer seed", "remake the world")
    recorded = card.get("digests")
    if not isinstance(recorded, dict):
        recorded = {}
    if card.get("kind") == "real-text":  # lmassay.world.real_text: no generator, no facts
        _check_digests(root, recorded, sorted(recorded))
        return World(seed, tuple(card["categories"]), (), (), {})
    world = build_world(seed)
    if recorded.get("facts.jsonl", {}).get("value") != digest_bytes(_facts_bytes(world)).value:
        raise InputError(
            f"the facts of world {str(root)!r} differ from those this version makes from seed {seed}",
            "remake the world with: lmassay world make --out DIR",
        )
    _check_digests(root, recorded, _FILES)
    return world


def _check_digests(root: Path, recorded: dict[str, Any], names: Iterable[str]) -> None:
    problems = []
    for name in names:
        file = root / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif digest_file(file).value != recorded.get(name, {}).get("value"):
            problems.append(f"{name} changed")
    if problems:
        raise InputError(
            f"world folder {str(root)!r}: {', '.join(problems)} since it was made",
            "remake the world with: lmassay world make --out DIR (or lmassay world real)",
        )
