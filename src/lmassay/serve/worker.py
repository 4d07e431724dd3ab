"""A job worker: ``python -m lmassay.serve.worker`` (started by ``lmassay serve``, one per slot).

Loop: claim the oldest queued job (atomically), run the attest library on it with a heartbeat
thread writing progress back, sign the result with the service key (the in-toto statement of
``lmassay attest --sign``), record it in the registry, mark the job done.  A job whose input
cannot be used fails with the one-line reason; a row that cannot be read fails as corrupt; the
worker goes on with the next job.  The worker exits when the server that started it is gone (its
running job then goes back to the queue when a server starts again).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay.errors import LmassayError
from lmassay.progress import ProgressFn
from lmassay.serve.store import Job, JobStore

HEARTBEAT_SECONDS = 1.0
ORPHAN_EXIT_CODE = 3
UNUSABLE_EXIT_CODE = 2


@dataclass(frozen=True)
class WorkerSettings:
    registry: Path
    key: Path
    results: Path
    worker_id: str
    parent_pid: int
    ray: str | None = None
    trust_keys: tuple[Path, ...] = ()
    poll_seconds: float = 0.5


class Heartbeat:
    """Writes the job's heartbeat and latest progress every second; ends the process when the
    server that started it is gone (an orphan would run jobs nobody watches)."""

    def __init__(self, store: JobStore, settings: WorkerSettings) -> None:
        self.store = store
        self.settings = settings
        self.job_id: str | None = None
        self.progress: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def begin(self, job_id: str | None) -> None:
        with self._lock:
            self.job_id, self.progress = job_id, None

    def set(self, **progress: Any) -> None:
        with self._lock:
            self.progress = progress

    def _loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            if os.getppid() != self.settings.parent_pid:
                os._exit(ORPHAN_EXIT_CODE)  # the server is gone: stop now, the job is retried
            with self._lock:
                job_id, progress, self.progress = self.job_id, self.progress, None
            if job_id is not None:
                try:
                    self.store.heartbeat(job_id, self.settings.worker_id, progress)
                except LmassayError as exc:
                    print(f"worker {self.settings.worker_id}: heartbeat: {exc}", file=sys.stderr)


class StoreProgress:
    """The attest library's progress, written to the job row by :class:`Heartbeat`."""

    def __init__(self, beat: Heartbeat, results: Path) -> None:
        self.beat = beat
        self.results = str(results)

    def task(self, description: str, total: int) -> ProgressFn:
        self.beat.set(stage=description, done=0, total=total)

        def update(done: int, new_total: int, note: str | None = None, /) -> None:
            self.beat.set(stage=description, done=done, total=new_total)

        return update

    def log(self, message: str) -> None:
        """A stage's line, without the service's own folders (clients see it)."""
        self.beat.set(stage=message.replace(self.results, "results")[:200])


@dataclass(frozen=True)
class JobOutcome:
    verdict: str
    flagged: list[str]
    published: dict[str, Any]
    """What the results page shows beside the verdict."""


def run_job(job: Job, settings: WorkerSettings, beat: Heartbeat) -> JobOutcome:
    """Attest, sign and record one job."""
    from lmassay.attest.model_source import locate_model
    from lmassay.attest.recipe import attest
    from lmassay.errors import InputError
    from lmassay.sealing.registry import record_attestation
    from lmassay.serve.requests import REGISTERED_KEY, AttestationRequest, attest_config
    from lmassay.serve.sealed import probe_signature, verify_probes

    if job.request is None or "request" in job.corrupt:
        raise InputError("the job's row is corrupt (its request is not JSON)", "submit it again")
    stored = dict(job.request)
    names = stored.pop(REGISTERED_KEY, None) or {}
    try:
        if not isinstance(names, dict):
            raise ValueError(f"{REGISTERED_KEY} is not an object")
        request = AttestationRequest.model_validate(stored)
    except ValueError as exc:
        raise InputError(
            f"the job's row is corrupt (its request does not validate: {' '.join(str(exc).split())[:300]})",
            "submit it again",
        ) from exc
    out = settings.results / job.id
    config = attest_config(request, str(out), settings.ray)
    seal = None
    if request.options.sealed or probe_signature(request.probes) is not None:
        beat.set(stage="verifying the probe set's seal")
        seal = verify_probes(request.probes, settings.trust_keys)
    result = attest(config, StoreProgress(beat, settings.results))
    beat.set(stage="signing the statement")
    model_dir = locate_model(request.model, revision=request.options.revision).path
    record = record_attestation(
        result.document, out, str(model_dir), sign=settings.key, registry=settings.registry
    )
    document = result.document
    hub = document.model.hub if document.model is not None else None
    published: dict[str, Any] = {
        "model": request.model,
        "revision": hub.revision if hub is not None else None,
        "commit": hub.commit if hub is not None else None,
        "reference": request.reference,
        "probes": request.probes,
        "comparison": document.comparison.value,
        "message": document.summary.message,
        "signer": record.statement.signer if record.statement is not None else None,
        "digest": str(record.statement.manifest.root) if record.statement is not None else None,
    }
    published["probes_seal"] = None if seal is None else seal.to_json()
    if names:
        published[REGISTERED_KEY] = {
            field_name: {
                "name": str(name),
                "source": getattr(request, field_name),
                "revision": getattr(
                    request.options, "revision" if field_name == "model" else "reference_revision"
                ),
                "digest": _digest(getattr(document, field_name)),
            }
            for field_name, name in sorted(names.items())
        }
    return JobOutcome(document.verdict.value, list(document.flagged), published)


def _digest(info: Any) -> str | None:
    """The content digest attest recorded for a model (None when it recorded none)."""
    digest = getattr(info, "digest", None)
    return None if digest is None else str(digest)


def work(settings: WorkerSettings, store: JobStore) -> None:
    """Claim and run jobs from ``store`` until the server is gone."""
    beat = Heartbeat(store, settings)
    pid = os.getpid()
    print(f"worker {settings.worker_id} (pid {pid}) ready", file=sys.stderr, flush=True)
    while True:
        job = store.claim(settings.worker_id, pid)
        if job is None:
            time.sleep(settings.poll_seconds)
            continue
        print(f"worker {settings.worker_id}: job {job.id} attempt {job.attempts}", file=sys.stderr)
        beat.begin(job.id)
        try:
            outcome = run_job(job, settings, beat)
        except LmassayError as exc:
            store.fail(job.id, exc.one_line("attest"), settings.worker_id)
            print(f"worker {settings.worker_id}: job {job.id} failed", file=sys.stderr)
        except Exception as exc:  # the worker's boundary: one job's bug must not stop the others
            reason = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            store.fail(job.id, f"attest failed: {reason}", settings.worker_id)
            print(f"worker {settings.worker_id}: job {job.id} failed: {reason}", file=sys.stderr)
        else:
            store.complete(
                job.id, settings.worker_id, outcome.verdict, outcome.flagged, outcome.published
            )
            print(f"worker {settings.worker_id}: job {job.id} done", file=sys.stderr, flush=True)
        finally:
            beat.begin(None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmassay.serve.worker")
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--ray", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--trust-key", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    settings = WorkerSettings(
        registry=args.registry,
        key=args.key,
        results=args.results,
        worker_id=args.worker_id,
        parent_pid=args.parent_pid,
        ray=args.ray,
        trust_keys=tuple(args.trust_key),
    )
    try:
        store = JobStore(settings.registry)  # first, before the heavy imports: fail fast
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        from lmassay.cli._app import quiet_libraries

        quiet_libraries()
        work(settings, store)
    except LmassayError as exc:  # an unusable registry: say so once and stop
        print(exc.one_line("serve worker"), file=sys.stderr, flush=True)
        raise SystemExit(UNUSABLE_EXIT_CODE) from None


if __name__ == "__main__":
    main()
