"""``lmassay serve``: attestation as a hosted service.

Modules: :mod:`~lmassay.serve.config` (the settings), :mod:`~lmassay.serve.store` (the job queue
and API tokens in the registry's SQLite file), :mod:`~lmassay.serve.requests` (what a client may
ask for), :mod:`~lmassay.serve.app` (the HTTP API), :mod:`~lmassay.serve.limits` (body size and
rate limits), :mod:`~lmassay.serve.page` (the results page), :mod:`~lmassay.serve.supervisor`
(the worker processes), :mod:`~lmassay.serve.worker` (one worker: attest, sign, record) and
:mod:`~lmassay.serve.server` (the command's main loop).
"""

from __future__ import annotations

from lmassay.serve.config import ServeConfig
from lmassay.serve.store import Job, JobStore

__all__ = ["Job", "JobStore", "ServeConfig"]
