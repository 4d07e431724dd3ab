"""The checks of :func:`~lmassay.attest.statistics.analyse`'s input, all in one place.

The settings and the values of the samples are checked once, before any figure is computed; each
problem is an :class:`~lmassay.errors.InputError` naming the setting or the sample. Types are left
to the type checker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lmassay.attest.statistics.records import STATISTIC, SampleStatistic, StatsConfig
from lmassay.errors import InputError


def validate(samples: Sequence[SampleStatistic], comparison: str, config: StatsConfig) -> None:
    """Check the settings, every sample, and that the samples agree with each other."""
    validate_config(comparison, config)
    if len(samples) == 0:
        raise InputError("no samples to analyse", "score at least one probe sample")
    for index, sample in enumerate(samples):
        _check_sample(f"sample {index} (category {sample.category!r})", sample, comparison)
    with_reference = sum(1 for s in samples if s.logprob_reference is not None)
    if 0 < with_reference < len(samples):
        raise InputError(
            f"{with_reference} of {len(samples)} samples have logprob_reference",
            "score all samples with the reference or none of them",
        )
    with_top1 = sum(1 for s in samples if s.token_top1_agree is not None)
    if comparison == "kl" and 0 < with_top1 < len(samples):
        raise InputError(
            f"{with_top1} of {len(samples)} samples have token_top1_agree",
            "give top-1 agreement for all samples or for none",
        )


def validate_config(comparison: str, config: StatsConfig) -> None:
    """Check the comparison and every setting of ``config`` (the message names the setting)."""
    if comparison not in STATISTIC:
        raise InputError(
            f"comparison must be 'kl', 'bpb' or 'none', got {comparison!r}",
            "use 'kl' (same tokenizer), 'bpb' (different tokenizers or a baseline) or 'none'",
        )
    floor, threshold = config.noise_floor, config.different_model_threshold
    checks = [  # (setting, whether its value is usable, the rule, a fix)
        (
            "alpha",
            0.0 < config.alpha < 1.0,
            "in (0, 1)",
            "choose a false-discovery level such as 0.05",
        ),
        (
            "tail_quantile",
            0.0 < config.tail_quantile < 1.0,
            "in (0, 1)",
            "choose a quantile such as 0.95",
        ),
        ("n_bootstrap", config.n_bootstrap >= 1, ">= 1", "use e.g. 1000 bootstrap resamples"),
        ("seed", config.seed >= 0, ">= 0", "use e.g. seed 0"),
        ("min_samples", config.min_samples >= 2, ">= 2", "use e.g. 5 samples per category"),
        (
            "noise_floor",
            floor is None or (math.isfinite(floor) and floor >= 0.0),
            "a finite number >= 0",
            "leave it unset for the default of the comparison",
        ),
        (
            "different_model_threshold",
            threshold is None or (math.isfinite(threshold) and threshold > 0.0),
            "a finite number > 0",
            "leave it unset for the default of the comparison",
        ),
        (
            "sparse_floor",
            config.sparse_floor is None
            or (math.isfinite(config.sparse_floor) and config.sparse_floor >= 0.0),
            "a finite number >= 0",
            "leave it unset for the default of the comparison",
        ),
        (
            "answer_floor",
            config.answer_floor is None
            or (math.isfinite(config.answer_floor) and config.answer_floor >= 0.0),
            "a finite number >= 0",
            "leave it unset for the default",
        ),
        (
            "spread_multiple",
            math.isfinite(config.spread_multiple) and config.spread_multiple >= 0.0,
            "a finite number >= 0",
            "use e.g. 3 (0 keeps only the absolute noise floor)",
        ),
        (
            "n_permutations",
            config.n_permutations == 0 or config.n_permutations >= 19,
            "0 (no sparse test) or >= 19",
            "use e.g. 999 permutations (19 is the fewest that can reach p = 0.05)",
        ),
    ]
    for name, usable, rule, fix in checks:
        if not usable:
            raise InputError(f"{name} must be {rule}, got {getattr(config, name)!r}", fix)


def _check_sample(where: str, sample: SampleStatistic, comparison: str) -> None:
    if not sample.category:
        raise InputError(f"{where} has no category name", "give every sample a category")
    if sample.n_tokens < 1:
        raise InputError(
            f"{where} has n_tokens = {sample.n_tokens!r}",
            "every sample needs at least one scored token; drop empty samples",
        )
    if sample.n_bytes < 1:
        raise InputError(
            f"{where} has n_bytes = {sample.n_bytes!r}",
            "every sample needs at least one byte of text; drop empty samples",
        )
    for name in ("logprob_model", "logprob_reference"):
        value = getattr(sample, name)
        if value is not None and not math.isfinite(value):
            raise InputError(
                f"{where} has {name} = {value!r}", "log-probabilities must be finite numbers"
            )
    if sample.logprob_reference is None and comparison in ("kl", "bpb"):
        raise InputError(
            f"{where} has no logprob_reference but comparison is {comparison!r}",
            "score every sample with the reference, or use comparison 'none'",
        )
    if comparison == "kl":
        _check_token_arrays(where, sample)


def _check_token_arrays(where: str, sample: SampleStatistic) -> None:
    """One finite KL per scored token, and one boolean per token for top-1 agreement if given."""
    if sample.token_kl is None:
        raise InputError(
            f"{where} has no token_kl but comparison is 'kl'",
            "compute the per-token KL for every sample, or use comparison 'bpb'",
        )
    kl = np.asarray(sample.token_kl)
    if kl.shape != (sample.n_tokens,) or not np.issubdtype(kl.dtype, np.number):
        raise InputError(
            f"{where} has token_kl of shape {kl.shape} and dtype {kl.dtype}, expected "
            f"{sample.n_tokens} numbers (one per scored token)",
            "pass one KL value per scored token",
        )
    if not np.all(np.isfinite(kl)):
        raise InputError(f"{where} has non-finite per-token KL", "per-token KL must be finite")
    if sample.token_top1_agree is None:
        return
    agree = np.asarray(sample.token_top1_agree)
    booleans = agree.dtype == np.bool_ or (
        np.issubdtype(agree.dtype, np.number) and bool(np.all((agree == 0) | (agree == 1)))
    )
    if agree.shape != (sample.n_tokens,) or not booleans:
        raise InputError(
            f"{where} has token_top1_agree of shape {agree.shape} and dtype {agree.dtype}, "
            f"expected {sample.n_tokens} booleans",
            "pass one boolean per scored token",
        )
