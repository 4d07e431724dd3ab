"""Exact and near-duplicate detection for short texts: character n-gram MinHash with LSH banding,
each candidate pair confirmed by the exact Jaccard similarity of its n-gram sets.

No MinHash library is installed in the project's environment (``datasketch`` would be the
well-kept one); this is 40 lines of numpy, deterministic across processes (CRC-32 of the
shingles, seeded permutations), and exact where it matters: a pair counts as a near-duplicate
only when the Jaccard similarity of its shingle sets, computed exactly, reaches the threshold.
LSH only decides which pairs are compared: with 16 bands of 4 rows, a pair at Jaccard 0.8 is
compared with probability 1 - (1 - 0.8^4)^16 > 0.999.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from lmassay.bootstrap.fewshot import one_line

__all__ = ["Deduplicator", "jaccard", "normalise", "shingles"]

_PRIME = 4_294_967_311  # > 2^32: a, x < 2^32 keep a * x + b below 2^64 in uint64
_BANDS, _ROWS = 16, 4


def normalise(text: str) -> str:
    """Lower case, whitespace folded: texts equal after this are exact duplicates."""
    return one_line(text).lower()


def shingles(text: str, n: int = 5) -> frozenset[str]:
    """The character ``n``-grams of :func:`normalise` (the whole text when it is shorter)."""
    norm = normalise(text)
    if len(norm) <= n:
        return frozenset({norm})
    return frozenset(norm[i : i + n] for i in range(len(norm) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class Deduplicator:
    """Remembers the texts it accepted; :meth:`check` says whether a new one duplicates one.

    ``threshold``: the Jaccard similarity of character ``n``-gram sets at or above which two texts
    are near-duplicates.
    """

    threshold: float = 0.8
    n: int = 5
    seed: int = 0
    _exact: dict[str, int] = field(default_factory=dict)
    _sets: list[frozenset[str]] = field(default_factory=list)
    _buckets: dict[tuple[int, bytes], list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        size = _BANDS * _ROWS
        self._a = rng.integers(1, 2**32, size=size, dtype=np.uint64)  # (P,)
        self._b = rng.integers(0, 2**32, size=size, dtype=np.uint64)  # (P,)

    def _signature(self, grams: frozenset[str]) -> np.ndarray:
        x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), np.uint64, len(grams))
        hashed = (x[:, None] * self._a[None, :] + self._b[None, :]) % _PRIME  # (G, P)
        return hashed.min(axis=0)  # (P,)

    def check(self, text: str) -> tuple[str, int | None]:
        """``("exact", i)`` or ``("near", i)`` naming the accepted text ``i`` it duplicates, or
        ``("new", None)``. Only :meth:`add` remembers a text."""
        key = normalise(text)
        if key in self._exact:
            return "exact", self._exact[key]
        grams = shingles(text, self.n)
        signature = self._signature(grams)
        seen: set[int] = set()
        for band in range(_BANDS):
            for other in self._buckets.get(self._band(signature, band), ()):
                if other not in seen:
                    seen.add(other)
                    if jaccard(grams, self._sets[other]) >= self.threshold:
                        return "near", other
        return "new", None

    def add(self, text: str) -> int:
        """Remember ``text``; returns its index."""
        index = len(self._sets)
        grams = shingles(text, self.n)
        self._exact.setdefault(normalise(text), index)
        self._sets.append(grams)
        signature = self._signature(grams)
        for band in range(_BANDS):
            self._buckets.setdefault(self._band(signature, band), []).append(index)
        return index

    @staticmethod
    def _band(signature: np.ndarray, band: int) -> tuple[int, bytes]:
        return band, signature[band * _ROWS : (band + 1) * _ROWS].tobytes()
