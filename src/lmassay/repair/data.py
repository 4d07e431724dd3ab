"""Repair data: which texts train which objective, a held-out slice, and the probe-overlap check.

A repair must never train on the probes that judge it. :func:`find_probe_overlap` compares the
repair texts with the judging probes by word 13-gram shingles (the contamination test of GPT-3 and
lm-evaluation-harness's decontamination): a probe overlaps when at least half of its shingles occur
in the repair data, or, for a probe shorter than one shingle, when a repair text contains it
whole.  Word comparison ignores case, punctuation and whitespace.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmassay.attest.probes import ProbeSample
from lmassay.errors import InputError

SHINGLE_WORDS = 13
"""Words per shingle of the overlap check."""
OVERLAP_FRACTION = 0.5
"""A probe overlaps the repair data when at least this share of its shingles occurs there."""

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _shingle_key(words: Sequence[str]) -> bytes:
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest()


def _shingles(words: Sequence[str]) -> set[bytes]:
    n = SHINGLE_WORDS
    return {_shingle_key(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class ProbeOverlap:
    """The probes that the repair data contains, and how the check was made."""

    n_probes: int
    n_repair_texts: int
    overlapping: tuple[tuple[str, float], ...]  # (probe id, share of its shingles found)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": (
                f"word {SHINGLE_WORDS}-gram shingles (lower-cased, punctuation dropped); a probe "
                f"overlaps when >= {OVERLAP_FRACTION:.0%} of its shingles occur in the repair data, "
                f"or, below {SHINGLE_WORDS} words, when a repair text contains it whole"
            ),
            "n_probes": self.n_probes,
            "n_repair_texts": self.n_repair_texts,
            "n_overlapping": len(self.overlapping),
            "overlapping": [{"id": i, "share": round(s, 4)} for i, s in self.overlapping[:20]],
        }


def find_probe_overlap(probes: Sequence[ProbeSample], repair_texts: Iterable[str]) -> ProbeOverlap:
    """Which ``probes`` occur (in large part) in ``repair_texts``; see the module docstring.

    The probes' shingles are held in memory and the repair texts are streamed once, so the repair
    corpus can be much larger than the probe set.
    """
    owners: dict[bytes, list[int]] = {}
    totals: list[int] = []
    short: list[tuple[int, str]] = []  # probes below one shingle: (index, their joined words)
    for index, probe in enumerate(probes):
        words = _words(probe.text)
        keys = _shingles(words)
        totals.append(len(keys))
        if not keys:
            if words:
                short.append((index, " ".join(words)))
            continue
        for key in keys:
            owners.setdefault(key, []).append(index)
    found: list[set[bytes]] = [set() for _ in probes]
    short_hit: set[int] = set()
    n_texts = 0
    for text in repair_texts:
        n_texts += 1
        words = _words(text)
        for key in _shingles(words):
            for index in owners.get(key, ()):
                found[index].add(key)
        if short:
            joined = f" {' '.join(words)} "
            short_hit.update(i for i, w in short if f" {w} " in joined)
    overlapping = []
    for index, probe in enumerate(probes):
        share = len(found[index]) / totals[index] if totals[index] else float(index in short_hit)
        if share >= OVERLAP_FRACTION:
            overlapping.append((probe.id, share))
    return ProbeOverlap(len(probes), n_texts, tuple(overlapping))


def sharing_a_probe_shingle(probes: Sequence[ProbeSample], texts: Sequence[str]) -> set[int]:
    """The indices of ``texts`` that share at least one word 13-gram shingle with a probe, or
    contain a probe shorter than one shingle whole: a stricter test than
    :func:`find_probe_overlap`, for text the repair makes itself (samples from the reference)."""
    keys: set[bytes] = set()
    short: list[str] = []
    for probe in probes:
        words = _words(probe.text)
        found = _shingles(words)
        keys |= found
        if not found and words:
            short.append(f" {' '.join(words)} ")
    hits = set()
    for index, text in enumerate(texts):
        words = _words(text)
        joined = f" {' '.join(words)} "
        if not keys.isdisjoint(_shingles(words)) or any(w in joined for w in short):
            hits.add(index)
    return hits


MONITOR_PER_CATEGORY = 16
"""At most this many texts of each category are held out to monitor the repair."""


@dataclass
class RepairTexts:
    """The repair texts by role.

    ``train`` texts are trained on (language-model loss, or distillation toward the reference);
    ``anchor`` texts (narrow and distill) are kept close to the model before repair.  ``heldout`` texts,
    by category, are never trained on: they monitor the repair.
    """

    train: list[str]
    anchor: list[str]
    heldout: dict[str, list[str]]
    categories: dict[str, int] = field(default_factory=dict)  # texts per category in the data
    n_sampled: int = 0  # texts sampled from the reference among the anchor and held-out texts

    @property
    def n_heldout(self) -> int:
        return sum(len(texts) for texts in self.heldout.values())


def split_repair_texts(
    samples: Sequence[ProbeSample],
    *,
    mode: str,
    categories: Sequence[str],
    holdout: float,
    seed: int,
) -> RepairTexts:
    """Hold out ``holdout`` of each category's texts (at most :data:`MONITOR_PER_CATEGORY`, at
    least one of a category with two or more), then assign the rest to roles by ``mode``:

    - ``wide``: every text is trained on (plain language-model fine-tuning).
    - ``narrow``: the texts of ``categories`` are trained on; the rest anchor the model to itself.
    - ``distill``: the texts of ``categories`` are distilled toward the reference; the rest
      anchor the model to itself.

    The held-out texts are chosen with ``seed``.  Raises :class:`InputError` when narrow or
    distill has no text of a repaired category.
    """
    by_category: dict[str, list[str]] = {}
    for sample in samples:
        by_category.setdefault(sample.category, []).append(sample.text)
    wanted = set(categories)
    missing = sorted(wanted - set(by_category))
    if missing and mode in ("narrow", "distill"):
        raise InputError(
            f"--data has no text of the categor{'y' if len(missing) == 1 else 'ies'} to repair: "
            f"{', '.join(missing)} (its categories: {', '.join(sorted(by_category)) or 'none'})",
            f"add {mode} repair text of those categories to --data, or use --mode wide",
        )
    rng = random.Random(f"lmassay-repair-holdout:{seed}")
    target: list[str] = []
    rest: list[str] = []
    heldout: dict[str, list[str]] = {}
    for name in sorted(by_category):
        kept, held = _hold_out(by_category[name], holdout, rng)
        if held:
            heldout[name] = held
        (target if name in wanted else rest).extend(kept)
    if mode == "wide":
        train, anchor = target + rest, list[str]()
    else:
        train, anchor = target, rest
    return RepairTexts(
        train=train,
        anchor=anchor,
        heldout=heldout,
        categories={name: len(texts) for name, texts in sorted(by_category.items())},
    )


def add_sampled_anchor(
    texts: RepairTexts, samples: Sequence[str], group: str, *, holdout: float, seed: int
) -> RepairTexts:
    """``texts`` with ``samples`` (texts sampled from the reference) added: a held-out slice
    (``holdout`` of them, at most :data:`MONITOR_PER_CATEGORY`) monitors the group ``group``, the
    rest anchor."""
    rng = random.Random(f"lmassay-repair-samples:{seed}")
    kept, held = _hold_out(list(samples), holdout, rng)
    heldout = {**texts.heldout, group: held} if held else dict(texts.heldout)
    return RepairTexts(
        train=texts.train,
        anchor=[*texts.anchor, *kept],
        heldout=heldout,
        categories=texts.categories,
        n_sampled=len(samples),
    )


def _hold_out(texts: list[str], share: float, rng: random.Random) -> tuple[list[str], list[str]]:
    if len(texts) < 2 or share <= 0:
        return texts, []
    n = min(len(texts) - 1, MONITOR_PER_CATEGORY, max(1, round(len(texts) * share)))
    order = list(range(len(texts)))
    rng.shuffle(order)
    held = set(order[:n])
    return (
        [t for i, t in enumerate(texts) if i not in held],
        [t for i, t in enumerate(texts) if i in held],
    )
