"""The server's worker processes: started, watched, replaced, stopped.

Each slot runs ``python -m lmassay.serve.worker`` in its own process (outside the web process).
Every half second the supervisor thread looks at them: a worker that exited has its running job
put back in the queue (or failed once ``max_attempts`` claims were made, with the reason: its
exit code or signal) and is replaced; a running job whose cancellation was asked for has its
worker killed (the job fails as ``cancelled``, not retried).  A slot whose workers keep dying
before they claim anything, or that say the registry is unusable (exit code 2), is given up after
three in a row instead of being restarted forever.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmassay.errors import LmassayError
from lmassay.serve.store import JobStore
from lmassay.serve.worker import UNUSABLE_EXIT_CODE

log = logging.getLogger("lmassay.serve")

WATCH_SECONDS = 0.5
QUICK_EXIT_SECONDS = 10.0
QUICK_EXITS_ALLOWED = 3


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    worker_id: str = ""
    started: float = 0.0
    generation: int = 0
    quick_exits: int = 0
    given_up: bool = False


@dataclass
class SupervisorSettings:
    registry: Path
    key: Path
    results: Path
    workers: int
    max_attempts: int = 3
    ray: str | None = None
    threads: int | None = None
    trust_keys: tuple[Path, ...] = ()
    workdir: Path | None = None
    """The workers' current folder: an empty one, so that no relative name finds a file."""
    log_dir: Path | None = None
    """Each worker's stderr goes to ``worker-N.log`` here (None: the server's stderr)."""
    extra_env: dict[str, str] = field(default_factory=dict)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, store: JobStore, settings: SupervisorSettings) -> None:
        self.store = store
        self.settings = settings
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self._thread.start()

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.worker_id = f"{os.uname().nodename}:{os.getpid()}:w{slot.index}.{slot.generation}"
        command = [
            sys.executable,
            "-m",
            "lmassay.serve.worker",
            "--registry",
            str(self.settings.registry),
            "--key",
            str(self.settings.key),
            "--results",
            str(self.settings.results),
            "--worker-id",
            slot.worker_id,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.settings.ray:
            command += ["--ray", self.settings.ray]
        if self.settings.threads:
            command += ["--threads", str(self.settings.threads)]
        for trusted in self.settings.trust_keys:
            command += ["--trust-key", str(trusted)]
        stderr = None
        if self.settings.log_dir is not None:
            self.settings.log_dir.mkdir(parents=True, exist_ok=True)
            stderr = open(self.settings.log_dir / f"worker-{slot.index}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **self.settings.extra_env}
        slot.process = subprocess.Popen(
            command,
            cwd=self.settings.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        if stderr is not None:
            stderr.close()
        slot.started = time.monotonic()
        log.info("worker %s started (pid %d)", slot.worker_id, slot.process.pid)

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self._check_cancelled()
                for slot in self.slots:
                    self._check(slot)
            except LmassayError as exc:  # the registry went away or broke: say so, keep watching
                log.error("supervisor: %s", exc.one_line("serve"))

    def _check(self, slot: _Slot) -> None:
        process = slot.process
        if process is None or slot.given_up:
            return
        code = process.poll()
        if code is None:
            return
        reason = f"worker {slot.worker_id} {describe_exit(code)}"
        changed = self.store.worker_lost(slot.worker_id, reason, self.settings.max_attempts)
        log.warning("%s%s", reason, "; its job goes back to the queue or fails" if changed else "")
        quick = time.monotonic() - slot.started < QUICK_EXIT_SECONDS and not changed
        slot.quick_exits = slot.quick_exits + 1 if quick or code == UNUSABLE_EXIT_CODE else 0
        if slot.quick_exits >= QUICK_EXITS_ALLOWED:
            slot.given_up = True
            log.error(
                "worker slot %d: %d workers in a row exited without a job (%s); "
                "not restarting it (see the worker log)",
                slot.index,
                slot.quick_exits,
                reason,
            )
            return
        if not self._stop.is_set():
            self._spawn(slot)

    def _check_cancelled(self) -> None:
        ours = {slot.worker_id: slot for slot in self.slots if slot.process is not None}
        for job in self.store.cancelled_running():
            slot = ours.get(job.worker or "")
            if slot is not None and slot.process is not None and slot.process.poll() is None:
                log.info("job %s cancelled: stopping worker %s", job.id, slot.worker_id)
                slot.process.kill()

    def alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.poll() is None)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (SIGTERM, then SIGKILL); their running jobs go back to the queue
        without counting the attempt."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.terminate()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                slot.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.process.kill()
                slot.process.wait(timeout=5)
            try:
                self.store.worker_lost(
                    slot.worker_id, "the server stopped", self.settings.max_attempts, count=False
                )
            except LmassayError as exc:
                log.error("stopping: %s", exc.one_line("serve"))
