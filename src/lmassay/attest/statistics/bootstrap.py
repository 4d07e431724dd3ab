"""Bootstrap intervals of a category's figures, by resampling its *samples* with replacement.

``ppl_model_ci`` / ``ppl_reference_ci`` (perplexity, by the same token-weighted ratio on each
resample), ``mean_kl_ci`` and ``tail_kl_ci`` are 95 % percentile intervals from ``n_bootstrap``
resamples (tokens of one sample stay together, so correlation within a sample is respected). The
generator is seeded with ``(seed, crc32(category name))`` (and a stream ``1`` apart for the
perplexities), so each category's interval is reproducible and does not depend on the order of
categories or of samples (the caller puts samples in a canonical order first).

The tail quantile of every resample is computed exactly, without a cap or subsample: the pooled
tokens are sorted once and cut into blocks; a matrix product of the resample counts with
per-sample cumulative block counts locates the block holding the wanted rank, and only that block
is scanned. The cost is O(n_bootstrap · (n_samples · n_blocks + block size)) per category.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from lmassay.attest.statistics.records import FloatArray, Interval, safe_exp

_CI_LEVEL = 0.95
_CI_QUANTILES = ((1.0 - _CI_LEVEL) / 2.0, 1.0 - (1.0 - _CI_LEVEL) / 2.0)
# Bound on the elements of one bootstrap work array (float64: 32 MiB).
_CHUNK_ELEMENTS = 1 << 22
# Blocks of the exact tail bootstrap: about sqrt(tokens / 8) (a speed trade-off, not a cap).
_BLOCKS_PER_TOKEN = 1.0 / 8.0


def _generator(seed: int, name: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), *stream])


def resample_counts(rng: np.random.Generator, rows: int, n: int) -> FloatArray:
    """How often each of ``n`` samples is drawn in each of ``rows`` resamples of size ``n``."""
    dtype = np.int32 if rows * n < 2**31 else np.int64
    draws = rng.integers(0, n, size=(rows, n), dtype=dtype)  # (rows, n) sample indices
    draws += (np.arange(rows, dtype=dtype) * n)[:, None]  # row r counts into [r·n, (r+1)·n)
    return np.bincount(draws.reshape(-1), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _row_chunks(n_bootstrap: int, rows: int) -> list[int]:
    """Resamples per work array: ``rows`` at a time, the rest in the last chunk."""
    return [min(rows, n_bootstrap - done) for done in range(0, n_bootstrap, rows)]


def perplexity_intervals(
    columns: list[tuple[FloatArray, FloatArray]], n_bootstrap: int, seed: int, name: str
) -> list[Interval]:
    """95 % percentile intervals of token-weighted perplexities over resamples of the samples.

    ``columns`` holds ``(logprob, n_tokens)`` per sample for each perplexity (the model's, and
    the reference's when there is one). Each resample's perplexity is
    ``exp(−Σ c_i·logprob_i / Σ c_i·T_i)``; the generator is seeded with ``(seed, crc32(name), 1)``,
    a stream apart from the KL intervals'.
    """
    n = columns[0][0].size
    rng = _generator(seed, name, 1)
    design = np.stack([array for pair in columns for array in pair], axis=1)  # (n, 2 or 4)
    rows = max(1, min(n_bootstrap, _CHUNK_ELEMENTS // n))
    sums = [resample_counts(rng, b, n) @ design for b in _row_chunks(n_bootstrap, rows)]
    totals = np.concatenate(sums)  # (n_bootstrap, 2 or 4)
    out = []
    for k in range(len(columns)):
        q = np.quantile(-totals[:, 2 * k] / totals[:, 2 * k + 1], _CI_QUANTILES)
        out.append((safe_exp(float(q[0])), safe_exp(float(q[1]))))
    return out


def kl_intervals(
    token_kl: list[FloatArray], tail_quantile: float, n_bootstrap: int, seed: int, name: str
) -> tuple[Interval, Interval]:
    """Percentile intervals of mean_kl and tail_kl over resamples of the samples."""
    rng = _generator(seed, name)
    resampler = Resampler(token_kl, tail_quantile)
    n = len(token_kl)
    rows = max(1, min(n_bootstrap, _CHUNK_ELEMENTS // max(n, resampler.block)))
    mean_reps: list[FloatArray] = []
    tail_reps: list[FloatArray] = []
    for b in _row_chunks(n_bootstrap, rows):
        means, tails = resampler.replicates(resample_counts(rng, b, n))
        mean_reps.append(means)
        tail_reps.append(tails)
    m = np.quantile(np.concatenate(mean_reps), _CI_QUANTILES)
    t = np.quantile(np.concatenate(tail_reps), _CI_QUANTILES)
    return (float(m[0]), float(m[1])), (float(t[0]), float(t[1]))


class Resampler:
    """Token-weighted mean KL and exact tail quantile of weighted resamples of the samples.

    A resample that draws sample ``i`` ``c_i`` times has mean KL ``Σ c_i·KL_i / Σ c_i·T_i`` and
    pools every token of sample ``i`` ``c_i`` times; its tail is ``numpy.quantile`` (linear) of
    that multiset, computed exactly. The tokens are sorted once and cut into blocks of ``block``
    sorted positions; ``cum[i, k]`` (the first columns of ``design``) counts the tokens of sample
    ``i`` before block ``k``, so ``counts @ cum`` gives each resample's cumulative weight at every
    block boundary. The block holding the wanted rank is found from those, and only that block is
    scanned.
    """

    def __init__(self, token_kl: list[FloatArray], q: float) -> None:
        self.q = q
        n = len(token_kl)
        lengths = np.array([k.size for k in token_kl], dtype=np.int64)
        pooled = np.concatenate(token_kl)
        order = np.argsort(pooled)
        total = pooled.size
        n_blocks = int(np.clip(round(math.sqrt(total * _BLOCKS_PER_TOKEN)), 1, 1024))
        n_blocks = max(1, min(n_blocks, _CHUNK_ELEMENTS // max(n, 1)))
        self.block = math.ceil(total / n_blocks)
        self.n_blocks = math.ceil(total / self.block)
        padded = self.n_blocks * self.block
        # Padding sits after the last real token; it is never reached before the wanted rank, so
        # its value and owner (sample 0) do not matter.
        self.values = np.full(padded, np.inf, dtype=np.float64)  # (K·G,) sorted token KL
        self.values[:total] = pooled[order]
        owner = np.zeros(padded, dtype=np.intp)  # (K·G,) sample of each sorted token
        owner[:total] = np.repeat(np.arange(n), lengths)[order]
        self.owner = owner.reshape(self.n_blocks, self.block)  # (K, G)
        block_of = np.arange(total) // self.block
        per_block = np.bincount(
            owner[:total] * self.n_blocks + block_of, minlength=n * self.n_blocks
        ).reshape(n, self.n_blocks)
        # One matrix product gives all per-resample sums: [cum | Σ KL | tokens], (n, K+3).
        self.design = np.zeros((n, self.n_blocks + 3), dtype=np.float64)
        np.cumsum(per_block, axis=1, out=self.design[:, 1 : self.n_blocks + 1])
        self.design[:, -2] = [k.sum() for k in token_kl]
        self.design[:, -1] = lengths
        # A resample's weight within one block is at most n · (longest sample); int32 is exact
        # (and twice as fast to scan) below 2**31.
        self.count_dtype = np.int32 if n * int(lengths.max()) < 2**31 else np.int64

    def replicates(self, counts: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean KL and ``q`` quantile of each resample; ``counts`` is (B, n) draws per sample."""
        sums = counts @ self.design  # (B, K+3)
        means: FloatArray = sums[:, -2] / sums[:, -1]
        at_edges = sums[:, : self.n_blocks + 1]  # (B, K+1) cumulative weight before each block
        total = at_edges[:, -1]
        h = self.q * (total - 1.0)
        lower = np.floor(h)
        upper = np.minimum(lower + 1.0, total - 1.0)
        small = counts.astype(self.count_dtype)  # (B, n) for the cheap in-block scan
        start, target, within = self._scan(small, at_edges, lower)
        v_lower = self.values[start + np.argmax(within > target[:, None], axis=1)]
        target_upper = target + (upper - lower).astype(np.int64)
        past_upper = within > target_upper[:, None]  # (B, G)
        v_upper = self.values[start + np.argmax(past_upper, axis=1)]
        missing = ~past_upper[:, -1]
        if np.any(missing):  # rank lower + 1 lies in a later block
            start2, target2, within2 = self._scan(small[missing], at_edges[missing], upper[missing])
            v_upper[missing] = self.values[start2 + np.argmax(within2 > target2[:, None], axis=1)]
        tails: FloatArray = v_lower + (h - lower) * (v_upper - v_lower)
        return means, tails

    def _scan(
        self, counts: npt.NDArray[np.integer[Any]], at_edges: FloatArray, rank: FloatArray
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.integer[Any]]]:
        """Locate 0-based ``rank`` of each resample: the start of its block, the rank within the
        block, and the running weight through the block (the rank is at the first position where
        the running weight exceeds the rank within the block)."""
        block = np.count_nonzero(at_edges[:, :-1] <= rank[:, None], axis=1) - 1  # (B,)
        weights = np.take_along_axis(counts, self.owner[block], axis=1)  # (B, G)
        within = np.cumsum(weights, axis=1, dtype=self.count_dtype)  # (B, G)
        base = np.take_along_axis(at_edges, block[:, None], axis=1)[:, 0]  # (B,)
        target = (rank - base).astype(np.int64)
        return block * self.block, target, within
