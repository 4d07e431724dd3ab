"""Attest: score a probe corpus with the model under test and a reference, find the tampering axis.

The steps, in the order a run takes them:

* :mod:`~lmassay.attest.probes` reads the probe corpus (JSONL, a folder of ``.txt`` files by
  category, a saved dataset or parquet) into a :class:`~lmassay.attest.probes.ProbeSet` with a
  content digest.
* :mod:`~lmassay.attest.model_loading` resolves and loads a model and its tokenizer (safetensors
  only unless pickles are allowed; no remote code unless asked for).
* :mod:`~lmassay.attest.scoring` tokenises once and reduces each batch's logits to per-token
  scalars (log-probabilities, KL, top-1 agreement); :mod:`~lmassay.attest.streaming` does the same
  one transformer block at a time for models larger than memory.
* :mod:`~lmassay.attest.statistics` aggregates per sample and per category and runs the tests
  that flag a category (or call the model a different model).
* :mod:`~lmassay.attest.evidence` picks the samples and tokens that carry each flag.
* :mod:`~lmassay.attest.document` types ``attestation.json`` (and ships its JSON Schema);
  :mod:`~lmassay.attest.config` holds :class:`AttestConfig`, :mod:`~lmassay.attest.baseline` the
  reference-less ``--baseline`` comparison.
* :mod:`~lmassay.attest.recipe` is the recipe that runs them top to bottom and writes
  ``attestation.json`` and ``samples.jsonl``.

``from lmassay.attest import attest, AttestConfig`` is the entry point; it is imported lazily so
that importing a part (say, the probe reader) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmassay.attest.config import AttestConfig
    from lmassay.attest.recipe import AttestationResult, attest

__all__ = ["AttestConfig", "AttestationResult", "attest"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lmassay.attest import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'lmassay.attest' has no attribute {name!r}")
