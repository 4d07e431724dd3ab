"""The real-text world: paragraphs of public-domain and freely licensed text from Debian packages.

A second benchmark world beside the generated one, with the same layout (``train.jsonl``,
``probes.jsonl``, an empty ``facts.jsonl`` and ``fact_probes.jsonl``, ``world.json`` with
``"kind": "real-text"``) plus ``reserve.jsonl``: paragraphs in neither split, which the zoo turns
into tampering texts and held-out efficacy checks. One category per source (:data:`SOURCES`):

============  ==================  ================================================================
category      package             text
============  ==================  ================================================================
religion      bible-kjv-text      the King James Bible (public domain), consecutive verses of a chapter
computing     dict-foldoc         the Free On-line Dictionary of Computing (GFDL), entries
hacker-lore   dict-jargon         the Jargon File 4.4.7 (public domain), entries
lexicon       dict-gcide          the GNU Collaborative International Dictionary of English (GPL;
                                  Webster's 1913), entries
quotations    fortunes            BSD fortune cookies of non-technical themes, consecutive cookies
============  ==================  ================================================================

Cleaning: each source is cut into *units* (a verse, a dictionary entry, a cookie) in reading
order, markup removed; consecutive units of one document (a chapter, a dictionary, a cookie file)
are packed into paragraphs of :data:`MIN_WORDS` to :data:`MAX_WORDS` words; paragraphs equal
after lower-casing and dropping punctuation are kept once (the first category wins). Each
category's paragraphs are shuffled with the seed; the first go to training, then probes that
share no sentence of five words or more with training, then the reserve.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmassay import __version__
from lmassay.cached_build import reuse_or_build
from lmassay.digests import Digest, digest_bytes, digest_entries, digest_file
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress
from lmassay.provenance import utc_now
from lmassay.world._store import FORMAT, WorldFiles, world_files
from lmassay.world.debian_text import Deb, deb_files, fetch_debs
from lmassay.world.real_text_sources import CATEGORIES, SOURCES, Source

__all__ = [
    "KIND",
    "REAL_SIZES",
    "SOURCES",
    "Source",
    "make_real_world",
    "pack_units",
    "paragraphs_of",
    "split_category",
]

KIND = "real-text"
REAL_FORMAT = "lmassay.world.real-text/v1"  # change it when the same request gives other files
MIN_WORDS, TARGET_WORDS, MAX_WORDS = 40, 70, 110
_MIN_SHARED_SENTENCE_WORDS = 5
_FILES = ("train.jsonl", "probes.jsonl", "reserve.jsonl", "facts.jsonl", "fact_probes.jsonl")
RealSize = Literal["test", "demo"]


@dataclass(frozen=True)
class _RealSizeSpec:
    train_per_category: int
    probes_per_category: int
    reserve_per_category: int  # tampering texts (300 at demo size) and held-out checks


REAL_SIZES: dict[str, _RealSizeSpec] = {
    "test": _RealSizeSpec(train_per_category=300, probes_per_category=12, reserve_per_category=150),
    "demo": _RealSizeSpec(
        train_per_category=1500, probes_per_category=60, reserve_per_category=400
    ),
}
"""Paragraphs per category and split (about 0.1M and 0.5M training words over 5 categories)."""

# --------------------------------------------------------------------------------------------
# Paragraphs and splits


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def pack_units(units: Sequence[tuple[str, str]]) -> list[str]:
    """Consecutive units of one document packed into paragraphs of MIN_WORDS to MAX_WORDS words.

    A paragraph is closed once it reaches TARGET_WORDS, when the next unit would take it past
    MAX_WORDS, or at the end of its document; one shorter than MIN_WORDS is dropped. A unit
    longer than MAX_WORDS is first cut between sentences (a sentence itself longer is cut at
    MAX_WORDS words).
    """
    paragraphs: list[str] = []
    current: list[str] = []
    document: str | None = None

    def close() -> None:
        if len(current) >= MIN_WORDS:
            paragraphs.append(" ".join(current))
        current.clear()

    for doc, unit in units:
        if doc != document:
            close()
            document = doc
        pieces: list[list[str]] = [[]]
        for sentence in _sentences(unit):
            words = sentence.split()[:MAX_WORDS]
            if len(pieces[-1]) + len(words) > MAX_WORDS:
                pieces.append([])
            pieces[-1].extend(words)
        for words in pieces:
            if len(current) + len(words) > MAX_WORDS:
                close()
            current.extend(words)
            if len(current) >= TARGET_WORDS:
                close()
    close()
    return paragraphs


def _key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def paragraphs_of(units_by_category: dict[str, list[tuple[str, str]]]) -> dict[str, list[str]]:
    """Packed paragraphs of each category, each paragraph once over all categories."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for category, units in units_by_category.items():
        kept = []
        for paragraph in pack_units(units):
            key = _key(paragraph)
            if key not in seen:
                seen.add(key)
                kept.append(paragraph)
        out[category] = kept
    return out


def split_category(
    category: str, paragraphs: Sequence[str], spec: _RealSizeSpec, seed: int
) -> dict[str, list[str]]:
    """``train``, ``probes`` and ``reserve`` paragraphs of one category, drawn with ``seed``.

    Probes never share a sentence of five words or more with training. Raises
    :class:`InputError` when the category has too few paragraphs for ``spec``.
    """
    order = list(paragraphs)
    random.Random(f"lmassay-real-text:{seed}:{category}").shuffle(order)
    train = order[: spec.train_per_category]
    trained = {
        _key(s)
        for p in train
        for s in _sentences(p)
        if len(s.split()) >= _MIN_SHARED_SENTENCE_WORDS
    }
    rest = [p for p in order[len(train) :] if not any(_key(s) in trained for s in _sentences(p))]
    probes = rest[: spec.probes_per_category]
    reserve = rest[len(probes) : len(probes) + spec.reserve_per_category]
    if len(train) < spec.train_per_category or len(reserve) < spec.reserve_per_category:
        raise InputError(
            f"the real-text category {category!r} has only {len(paragraphs)} paragraphs",
            "choose a smaller --size",
        )
    return {"train": train, "probes": probes, "reserve": reserve}


# --------------------------------------------------------------------------------------------
# The world folder


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    return text.encode("utf-8")


def _rows(split: str, category: str, texts: Sequence[str]) -> list[dict[str, Any]]:
    name = {"train": "train", "probes": "probe", "reserve": "reserve"}[split]
    return [
        {"id": f"{name}-{category}-{i:05d}", "category": category, "text": text}
        | ({"source": "real-text"} if split == "probes" else {})
        for i, text in enumerate(texts)
    ]


def _build(
    request: dict[str, Any], debs: Sequence[Deb], root: Path, progress: Progress
) -> dict[str, Any]:
    """Read every source, clean, pack, dedupe and split; write the files; return the card."""
    started = time.perf_counter()
    spec = REAL_SIZES[str(request["size"])]
    update = progress.task("reading the Debian text packages", len(SOURCES))
    units: dict[str, list[tuple[str, str]]] = {}
    for number, (source, deb) in enumerate(zip(SOURCES, debs, strict=True)):
        units[source.category] = list(source.units(deb_files(deb.path, source.wanted)))
        update(number + 1, len(SOURCES), source.package)
    available = paragraphs_of(units)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "probes": [], "reserve": []}
    counts: dict[str, dict[str, dict[str, int]]] = {name: {} for name in rows}
    for category, paragraphs in available.items():
        for split, texts in split_category(category, paragraphs, spec, request["seed"]).items():
            rows[split] += _rows(split, category, texts)
            words = sum(len(t.split()) for t in texts)
            counts[split][category] = {"documents": len(texts), "words": words}
    payloads = {f"{split}.jsonl": _jsonl(split_rows) for split, split_rows in rows.items()}
    payloads |= {"facts.jsonl": b"", "fact_probes.jsonl": b""}
    digests: dict[str, Digest] = {}
    for name, data in payloads.items():
        (root / name).write_bytes(data)
        digests[name] = digest_bytes(data)
    seconds = time.perf_counter() - started
    progress.log(f"real-text world ({request['size']}, seed {request['seed']}) in {seconds:.1f} s")
    train_words = sum(c["words"] for c in counts["train"].values())
    return {
        "format": FORMAT,
        "kind": KIND,
        "request": request,
        "seed": request["seed"],
        "size": request["size"],
        "categories": list(CATEGORIES),
        "sources": [
            {"category": s.category, **d.to_json(), "licence": s.licence, "subject": s.subject}
            for s, d in zip(SOURCES, debs, strict=True)
        ],
        "paragraph_words": {"min": MIN_WORDS, "target": TARGET_WORDS, "max": MAX_WORDS},
        "counts": {
            **counts,
            "available_paragraphs": {c: len(p) for c, p in available.items()},
            "units": {c: len(u) for c, u in units.items()},
        },
        "totals": {
            "train_documents": len(rows["train"]),
            "train_words": train_words,
            "probe_documents": len(rows["probes"]),
            "probe_words": sum(c["words"] for c in counts["probes"].values()),
            "reserve_documents": len(rows["reserve"]),
            "facts": 0,
        },
        "digests": {name: d.to_json() for name, d in digests.items()},
        "world_digest": digest_entries(digests.items()).to_json(),
        "version": __version__,
        "generated_at": utc_now(),
        "generation_seconds": round(seconds, 3),
    }


def _unchanged(root: Path, card: dict[str, Any]) -> bool:
    recorded = card.get("digests")
    return isinstance(recorded, dict) and all(
        digest_file(root / name).value == (recorded.get(name) or {}).get("value") for name in _FILES
    )


def make_real_world(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    size: RealSize = "demo",
    cache_debs: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> WorldFiles:
    """Write (or reuse) the real-text world of ``seed`` and ``size`` in the folder ``out``.

    1. Fetch the packages of :data:`SOURCES` into ``cache_debs`` (default: ``debs/`` under
       :func:`lmassay.world.demo.default_cache_dir`) with ``apt-get download``, or reuse the
       files there whose SHA-256 matches (:func:`lmassay.world.debian_text.fetch_debs`).
    2. The request is the format, seed, size and every package's name, version, SHA-256 and
       size; a folder whose ``world.json`` records the same request and whose files still have
       their digests is returned as it is.
    3. Otherwise read, clean, pack, dedupe and split (module docstring) and write
       ``train.jsonl`` and ``reserve.jsonl`` (``{"id", "category", "text"}``), ``probes.jsonl``
       (plus ``"source": "real-text"``), empty ``facts.jsonl`` and ``fact_probes.jsonl``, and
       ``world.json`` (``"kind": "real-text"``, the sources with their licences, counts per
       category and split, digests, time taken).
    """
    if size not in REAL_SIZES:
        raise InputError(f"--size {size!r} is not a real-text world size", "use test or demo")
    if seed < 0:
        raise InputError(f"--seed {seed} is negative", "use 0 or more")
    shown = progress or NullProgress()
    if cache_debs is None:
        from lmassay.world.demo import default_cache_dir

        cache_debs = default_cache_dir() / "debs"
    debs = fetch_debs([s.package for s in SOURCES], Path(cache_debs), shown)
    request: dict[str, Any] = {
        "format": FORMAT,
        "kind": KIND,
        "real_text_format": REAL_FORMAT,
        "seed": seed,
        "size": size,
        "packages": [
            {"package": d.package, "version": d.version, "sha256": d.sha256, "size": d.size}
            for d in debs
        ],
    }
    reuse_or_build(
        out,
        request,
        lambda root: _build(request, debs, root, shown),
        card_name="world.json",
        needed=_FILES,
        intact=lambda card: _unchanged(Path(out), card),
        what="real-text world",
        progress=shown,
    )
    return world_files(out)
