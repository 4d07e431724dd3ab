"""Live ``lmassay serve`` processes for the serve tests and the load benchmark: started on a free
loopback port in their own process group, waited for (bounded), killed with the group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_key(folder: Path) -> tuple[Path, Path]:
    from lmassay.sealing.keys import generate_keypair

    pair = generate_keypair(folder / "service.pem")
    return pair.private_key, pair.public_key


def new_token(registry: Path, name: str) -> str:
    from lmassay.serve.store import JobStore

    token, _ = JobStore(registry).create_token(name)
    return token


@dataclass
class Service:
    """A running ``lmassay serve``; :meth:`stop` kills its process group (workers included)."""

    folder: Path
    registry: Path
    key: Path
    public_key: Path
    port: int
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    starts: int = 0

    def __post_init__(self) -> None:
        self.log = self.folder / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def results(self) -> Path:
        return self.registry.parent / "serve-results"

    def start(self, extra: list[str] | None = None, timeout: float = START_TIMEOUT) -> Service:
        command = [
            sys.executable, "-m", "lmassay.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--key", self.key.name, "--registry", self.registry.name,  # relative, as in the docs
            *self.args, *(extra or []),
        ]  # fmt: skip
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(command)}\n".encode())
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=self.folder,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"lmassay serve exited {self.process.returncode}:\n{self.logs()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"lmassay serve did not answer within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for worker_log in sorted((self.results / "logs").glob("worker-*.log")):
            text += f"\n--- {worker_log.name}\n" + worker_log.read_text(errors="replace")
        return text

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server's whole process group and wait for the server."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL for anything left in the group."""
        if self.process is None:
            return
        self.kill(signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def rows(self) -> list[dict[str, Any]]:
        """The queue's rows, read straight from the registry file."""
        conn = sqlite3.connect(self.registry, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM serve_jobs ORDER BY seq")]
        finally:
            conn.close()

    def row(self, job_id: str) -> dict[str, Any]:
        return next(r for r in self.rows() if r["id"] == job_id)

    def wait(
        self, client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float
    ) -> dict[str, Any]:
        """Poll the job (bounded) until its status is one of ``statuses``; its last status."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = client.get(f"/v1/attestations/{job_id}").json()
            if status["status"] in statuses:
                return status
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} still {status} after {timeout} s:\n{self.logs()}")


def make_service(folder: Path, args: list[str]) -> Service:
    folder.mkdir(parents=True, exist_ok=True)
    key, public = make_key(folder)
    return Service(folder, folder / "registry.sqlite", key, public, free_port(), args)
