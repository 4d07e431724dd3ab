"""What ``lmassay serve`` is asked to run: :class:`ServeConfig`, checked once by ``validate``."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from lmassay.errors import Check, InputError, require

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    """The service's settings; :meth:`validate` names the offending flag."""

    key: Path
    """The service's private key (PEM, from ``lmassay keygen``): every result is signed with it."""
    host: str = "127.0.0.1"
    port: int = 8000
    registry: Path | None = None
    """The registry file that also holds the job queue and the tokens (default: the registry's
    own default, ``$LMASSAY_REGISTRY`` or the user data folder)."""
    results: Path | None = None
    """Where each job's attestation folder goes (default: ``serve-results`` beside the registry)."""
    workers: int = 1
    """Worker processes running jobs (0: accept and queue only)."""
    ray: str | None = None
    """``local`` or a Ray address: each job's scoring is sharded on Ray (``attest --ray``)."""
    allow_local_root: tuple[Path, ...] = ()
    """Folders under which jobs may name local model folders and probe files."""
    trust_keys: tuple[Path, ...] = ()
    """Public keys whose seals on probe sets the workers accept (``--trust-key``)."""
    rate_limit: int = 30
    """Submissions per minute per token."""
    queue_cap: int = 100
    """Most jobs queued or running at once; more are answered 429."""
    max_body: int = 64 * 1024
    """Largest request body in bytes (413 beyond)."""
    max_attempts: int = 3
    """Claims of a job (a worker that dies mid-job is one) before it is marked failed."""
    lease_seconds: float = 60.0
    """A running job whose heartbeat is older than this is taken back at start-up."""
    threads: int | None = None
    """Torch threads per worker (default: torch's own choice)."""
    public_url: str | None = None
    """The address clients use, for the verify commands shown (default: http://HOST:PORT)."""
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def registry_path(self) -> Path:
        from lmassay.sealing.registry import resolve_registry_path

        return resolve_registry_path(self.registry)

    def results_path(self) -> Path:
        if self.results is not None:
            return self.results
        return self.registry_path().parent / "serve-results"

    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(root).resolve() for root in self.allow_local_root)

    def validate(self) -> None:
        require(self._checks())
        for root in self.allow_local_root:
            if not Path(root).is_dir():
                raise InputError(
                    f"--allow-local-root {root} is not a folder", "give an existing folder"
                )
        if self.ray is not None:
            from lmassay.attest.config import AttestConfig

            if "ray" not in {f.name for f in dataclasses.fields(AttestConfig)}:
                raise InputError(
                    "--ray: this lmassay has no Ray scoring (AttestConfig.ray)",
                    "use --workers N instead",
                )
        from lmassay.sealing.keys import load_private_key, load_public_key

        load_private_key(self.key)
        for trusted in self.trust_keys:
            if not Path(trusted).is_file():
                raise InputError(
                    f"--trust-key {trusted} does not exist", "give a .pub file (lmassay keygen)"
                )
            load_public_key(trusted)

    def _checks(self) -> list[Check]:
        return [
            (1 <= self.port <= 65535, f"--port {self.port} is not a port", "use 1-65535"),
            (_is_host(self.host), f"--host {self.host!r} is not an address", "use e.g. 127.0.0.1"),
            (0 <= self.workers <= 64, f"--workers {self.workers} is outside 0-64", "use e.g. 2"),
            (
                self.ray is None or self.workers >= 1,
                "--ray needs at least one worker to drive the jobs",
                "drop --workers 0",
            ),
            (self.rate_limit >= 1, f"--rate-limit {self.rate_limit} is below 1", "use e.g. 30"),
            (self.queue_cap >= 1, f"--queue-cap {self.queue_cap} is below 1", "use e.g. 100"),
            (
                1024 <= self.max_body <= 2**24,
                f"--max-body {self.max_body} is outside 1 KiB-16 MiB",
                "use e.g. 65536",
            ),
            (
                1 <= self.max_attempts <= 20,
                f"--max-attempts {self.max_attempts} is outside 1-20",
                "use e.g. 3",
            ),
            (
                self.threads is None or self.threads >= 1,
                f"--threads {self.threads} is below 1",
                "use 1 or more",
            ),
            (
                self.key.is_file(),
                f"--key {self.key} does not exist",
                "create one: lmassay keygen --out service.pem",
            ),
        ]


def _is_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
