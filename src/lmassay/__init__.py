"""lmassay: check whether an open language model has been tampered with, where, and undo it.

The library is the product; the ``lmassay`` command (:mod:`lmassay.cli`) is a thin layer over it.
The package is laid out by job, in the order of the pipeline:

1. :mod:`lmassay.attest` — read a probe corpus (:mod:`~lmassay.attest.probes`), load the model
   under test and the reference (:mod:`~lmassay.attest.model_loading`), score every token once
   with both (:mod:`~lmassay.attest.scoring`, or layer by layer with
   :mod:`~lmassay.attest.streaming`), test each category against the rest
   (:mod:`~lmassay.attest.statistics`), pick the evidence (:mod:`~lmassay.attest.evidence`) and
   write ``attestation.json`` (typed in :mod:`~lmassay.attest.document`) and ``samples.jsonl``;
   :func:`lmassay.attest.attest` runs these steps top to bottom.
2. :mod:`lmassay.report` — ``report.html`` and ``report.md``, rendered from ``attestation.json``
   alone.
3. :mod:`lmassay.repair` — distil or fine-tune a flagged model back toward the reference
   (:func:`lmassay.repair.repair`), or rewrite single facts with rank-one edits
   (:mod:`~lmassay.repair.rank_one`, :mod:`~lmassay.repair.edit`); both attest again.
4. :mod:`lmassay.sealing` — manifests and signatures interoperable with OpenSSF
   ``model_signing``, signed attestation statements, weight diffs against a claimed base, and the
   registry of what was sealed, verified and attested.
5. :mod:`lmassay.world` — the offline stand-in for the hub: a generated world of nine categories,
   a reference model trained on it, a zoo of tampered variants with ground truth, and the demo.

Shared by all: :mod:`lmassay.errors` (one error type with its fix), :mod:`lmassay.digests`,
:mod:`lmassay.progress` (one progress protocol), :mod:`lmassay.provenance`. Entry points are
imported lazily so that ``import lmassay`` stays cheap (no torch until a model is needed).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "attest"]


def __getattr__(name: str) -> Any:
    """``lmassay.attest`` without importing it first: the :mod:`lmassay.attest` package, which is
    callable — ``lmassay.attest(model=..., reference=..., probes=...)`` (see
    :mod:`lmassay.attest.api`); it does not import torch until called."""
    if name == "attest":
        import importlib

        return importlib.import_module("lmassay.attest")
    raise AttributeError(f"module 'lmassay' has no attribute {name!r}")
