"""Anchor text sampled from the reference, for the categories the repair data lacks.

A user who repairs one flagged category usually has text of that category only. Distilling on it
alone leaves the other categories free to drift, and on real text they do (a category that was
fine becomes flagged). When ``--data`` lacks a category of the attestation that is not being
repaired, :func:`reference_samples` draws texts from the reference itself: plain ancestral
sampling from the prefix token alone (no prompt, so the texts follow the reference's own mix of
topics; never the probes, and any text that contains a probe is dropped by the caller), with
:func:`lmassay.attest.self_probe.draw_continuations`, the one sampler, under its seeding contract.

Distilling toward the reference on its own samples is the forward KL(reference ‖ model) estimated
on the reference's distribution, so it pulls every category back toward the reference, including
the ones no repair text covers. A slice of the samples is held out as one more monitored group
(:data:`SAMPLED`), so the held-out checks see the categories the data lacks as well.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmassay.attest.model_loading import LoadedModel
from lmassay.attest.probes import ProbeSample
from lmassay.attest.self_probe import SampleSettings, draw_continuations

__all__ = ["DEFAULT_ANCHOR_SAMPLES", "SAMPLED", "missing_categories", "reference_samples"]

SAMPLED = "(reference samples)"
"""The monitored group of held-out texts sampled from the reference."""
DEFAULT_ANCHOR_SAMPLES = 256
"""Texts sampled when ``--anchor-samples`` is automatic and the data lacks a category."""
_MIN_TOKENS = 8  # a sample shorter than this (an early EOS) is dropped


def missing_categories(
    attested: Sequence[str], in_data: Sequence[str], repaired: Sequence[str]
) -> list[str]:
    """The attested categories, other than the repaired ones, that the repair data lacks."""
    have = set(in_data) | set(repaired)
    return [c for c in attested if c not in have]


def reference_samples(reference: LoadedModel, n: int, new_tokens: int, seed: int) -> list[str]:
    """``n`` texts of at most ``new_tokens`` tokens sampled from ``reference`` (temperature 1,
    from the prefix token alone), without those of fewer than 8 tokens."""
    settings = SampleSettings(
        n_per_category=n, prompt_tokens=0, new_tokens=new_tokens, temperature=1.0, seed=seed
    )
    prompts = [ProbeSample(id=f"anchor-{i:05d}", category=SAMPLED, text="") for i in range(n)]
    draws = draw_continuations(reference, prompts, settings, sampled_from="reference")
    return [d.continuation for d in draws if len(d.continuation_ids) >= _MIN_TOKENS]
