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

**Called, this package is the notebook API**: ``lmassay.attest(model=..., reference=...,
probes=...)`` runs :func:`lmassay.attest.api.attest_objects` (models as paths, hub ids or loaded
objects; probes as a spec, a ``datasets.Dataset`` or rows; ``out=`` to write the files). The
package is a module named ``attest`` inside ``lmassay``, so a top-level *function* of that name
would be replaced by the module as soon as any ``lmassay.attest.*`` is imported; instead the
module itself is callable (its class is :class:`_CallableModule`), and ``lmassay.attest`` means
the same before and after such imports.
"""

from __future__ import annotations

import sys
import types
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


class _CallableModule(types.ModuleType):
    """This package's module class: calling it runs :func:`lmassay.attest.api.attest_objects`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from lmassay.attest.api import attest_objects

        return attest_objects(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
