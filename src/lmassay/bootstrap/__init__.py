"""Bootstrap: grow instruction data from a small curated core with a known-good raw LM.

:func:`bootstrap` (``lmassay bootstrap``) few-shot prompts the LM with core examples for new
instructions, then for their responses, drops exact and near duplicates
(:mod:`lmassay.bootstrap.dedupe`), filters by the LM's own likelihood of each response, optionally
critiques and revises with the same LM, and records per pair where it came from. The few-shot
format is :mod:`lmassay.bootstrap.fewshot` (the offline world's Q&A documents use it too).

Importing this package does not import torch; :func:`bootstrap` does when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmassay.bootstrap.run import BootstrapConfig, BootstrapResult, bootstrap

__all__ = ["BootstrapConfig", "BootstrapResult", "bootstrap"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lmassay.bootstrap import run

        return getattr(run, name)
    raise AttributeError(name)
