"""The service's job queue and API tokens, in the registry's SQLite file (WAL; two more tables).

``serve_jobs``: one row per submitted attestation. ``status`` moves ``queued`` → ``running`` →
``done`` | ``failed``; a worker takes a row in one ``BEGIN IMMEDIATE`` transaction
(:meth:`JobStore.claim`), so two workers never take the same job; ``attempts`` counts the claims,
``completions`` the finished runs (one for every done job: the load and fault tests check it).
A running row names its worker (``worker``, ``pid``) and is refreshed by its heartbeat; a row whose
worker died goes back to the queue until ``max_attempts`` claims were made, then fails with the
reason (:meth:`JobStore.worker_lost`, :meth:`JobStore.recover`).

``serve_tokens``: API tokens by name; only the SHA-256 of a token is stored (a token is 32 random
bytes, so a fast hash is enough: there is nothing to guess).

Everything the queue writes is a short transaction, retried while another process holds the lock
(the registry's own connection handling, :class:`~lmassay.sealing.registry.Registry`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lmassay.errors import InputError
from lmassay.provenance import utc_now
from lmassay.sealing.registry import Registry

__all__ = ["Job", "JobStore", "RegisteredModel", "TokenInfo", "hash_token"]

STATUSES = ("queued", "running", "done", "failed")
CANCELLED = "cancelled"
TOKEN_PREFIX = "lma_"
_T = TypeVar("_T")

_TABLES = """
CREATE TABLE IF NOT EXISTS serve_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    token TEXT,
    created TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    completions INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    pid INTEGER,
    heartbeat REAL,
    progress TEXT,
    verdict TEXT,
    flagged TEXT,
    error TEXT,
    started TEXT,
    finished TEXT,
    cancel INTEGER NOT NULL DEFAULT 0,
    published TEXT
);
CREATE INDEX IF NOT EXISTS serve_jobs_status ON serve_jobs(status, seq);
CREATE TABLE IF NOT EXISTS serve_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    hash TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE TABLE IF NOT EXISTS serve_models (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    revision TEXT,
    created TEXT NOT NULL
);
"""

_JOB_COLUMNS = (
    "id, token, created, request, status, attempts, completions, worker, pid, heartbeat, "
    "progress, verdict, flagged, error, started, finished, cancel, published"
)


@dataclass(frozen=True)
class Job:
    """One row of ``serve_jobs`` as read. ``corrupt`` names the columns that could not be read
    (a damaged row is reported as failed, never crashes a reader)."""

    id: str
    token: str | None
    created: str
    request: dict[str, Any] | None
    status: str
    attempts: int
    completions: int
    worker: str | None
    pid: int | None
    heartbeat: float | None
    progress: dict[str, Any]
    verdict: str | None
    flagged: list[str]
    error: str | None
    started: str | None
    finished: str | None
    cancel: bool
    published: dict[str, Any]
    corrupt: tuple[str, ...] = field(default=())

    def public_status(self) -> dict[str, Any]:
        """``GET /v1/attestations/{id}``: the contract's fields and a few more."""
        status = self.status if self.status in STATUSES else "failed"
        error = self.error
        if self.corrupt:
            status = "failed" if status != "done" else status
            error = error or f"the job's row is corrupt ({', '.join(self.corrupt)} unreadable)"
        elif status != self.status:
            error = error or f"the job's row has an unknown status {self.status!r}"
        done, total = self.progress.get("done"), self.progress.get("total")
        fraction = 1.0 if status == "done" else None
        if fraction is None and isinstance(done, int) and isinstance(total, int) and total > 0:
            fraction = round(min(done / total, 1.0), 4)
        return {
            "id": self.id,
            "status": status,
            "progress": fraction,
            "stage": self.progress.get("stage"),
            "verdict": self.verdict,
            "flagged": self.flagged,
            "error": error,
            "attempts": self.attempts,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


@dataclass(frozen=True)
class TokenInfo:
    """An API token's row (its hash only)."""

    id: int
    name: str
    created: str
    revoked: str | None


@dataclass(frozen=True)
class RegisteredModel:
    """A model the operator registered: requests name it ``registered:NAME``; ``source`` is an
    absolute local folder or a hub id (with ``revision``), never shown to the client as a path
    it could name itself."""

    name: str
    source: str
    revision: str | None
    created: str

    @property
    def local(self) -> bool:
        return self.source.startswith("/")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _loads(text: str | None, default: Any, name: str, bad: list[str]) -> Any:
    if text is None:
        return default
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        bad.append(name)
        return default
    if not isinstance(value, type(default)):
        bad.append(name)
        return default
    return value


def _job(row: tuple[Any, ...]) -> Job:
    bad: list[str] = []
    request = _loads(row[3], {}, "request", bad)
    flagged = _loads(row[12], [], "flagged", bad)
    return Job(
        id=str(row[0]),
        token=row[1],
        created=str(row[2]),
        request=None if "request" in bad else request,
        status=str(row[4]),
        attempts=int(row[5] or 0),
        completions=int(row[6] or 0),
        worker=row[7],
        pid=row[8],
        heartbeat=row[9],
        progress=_loads(row[10], {}, "progress", bad),
        verdict=row[11],
        flagged=[str(f) for f in flagged],
        error=row[13],
        started=row[14],
        finished=row[15],
        cancel=bool(row[16]),
        published=_loads(row[17], {}, "published", bad),
        corrupt=tuple(bad),
    )


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone)."""
    if not pid or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore(Registry):
    """The registry file with the service's tables (created on first use)."""

    def _initialise(self, conn: sqlite3.Connection) -> None:
        super()._initialise(conn)
        conn.executescript(_TABLES)

    # -- plumbing ---------------------------------------------------------------------------
    def _run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """``operation(conn)`` on a fresh connection, retried while the file is locked."""

        def once() -> _T:
            with self._connect() as conn:
                return operation(conn)

        return self._retry(once)

    def _transaction(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """``operation(conn)`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (all or nothing)."""

        def run(conn: sqlite3.Connection) -> _T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = operation(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return value

        return self._run(run)

    # -- tokens -----------------------------------------------------------------------------
    def create_token(self, name: str | None = None) -> tuple[str, TokenInfo]:
        """A new API token (returned once, never stored) and its row."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)

        def insert(conn: sqlite3.Connection) -> TokenInfo:
            chosen = name or _next_token_name(conn)
            try:
                cursor = conn.execute(
                    "INSERT INTO serve_tokens (name, hash, created) VALUES (?, ?, ?)",
                    (chosen, digest, utc_now()),
                )
            except sqlite3.IntegrityError as exc:
                raise InputError(
                    f"a token named {chosen!r} already exists in {self.path}",
                    "choose another --name (or revoke that token first and pick a new name)",
                ) from exc
            return TokenInfo(int(cursor.lastrowid or 0), chosen, utc_now(), None)

        return token, self._transaction(insert)

    def revoke_token(self, name: str) -> TokenInfo:
        def revoke(conn: sqlite3.Connection) -> TokenInfo:
            row = conn.execute(
                "SELECT id, name, created, revoked FROM serve_tokens WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise InputError(
                    f"no token named {name!r} in {self.path}",
                    "list them with: lmassay serve token list --registry PATH",
                )
            revoked = row[3] or utc_now()
            conn.execute("UPDATE serve_tokens SET revoked = ? WHERE id = ?", (revoked, row[0]))
            return TokenInfo(int(row[0]), str(row[1]), str(row[2]), revoked)

        return self._transaction(revoke)

    def tokens(self) -> list[TokenInfo]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT id, name, created, revoked FROM serve_tokens ORDER BY id"
            ).fetchall()
        )
        return [TokenInfo(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]

    def token_by_hash(self, digest: str) -> TokenInfo | None:
        row = self._run(
            lambda conn: conn.execute(
                "SELECT id, name, created, revoked FROM serve_tokens WHERE hash = ?", (digest,)
            ).fetchone()
        )
        return None if row is None else TokenInfo(int(row[0]), str(row[1]), str(row[2]), row[3])

    # -- registered models -------------------------------------------------------------------
    def add_model(self, model: RegisteredModel) -> RegisteredModel:
        """Register ``model`` (its name must be new; remove the old one first to change it)."""

        def insert(conn: sqlite3.Connection) -> RegisteredModel:
            try:
                conn.execute(
                    "INSERT INTO serve_models (name, source, revision, created) VALUES (?, ?, ?, ?)",
                    (model.name, model.source, model.revision, model.created),
                )
            except sqlite3.IntegrityError as exc:
                raise InputError(
                    f"a model named {model.name!r} is already registered in {self.path}",
                    f"remove it first: lmassay serve model remove {model.name} --registry PATH",
                ) from exc
            return model

        return self._transaction(insert)

    def remove_model(self, name: str) -> RegisteredModel:
        def delete(conn: sqlite3.Connection) -> RegisteredModel:
            row = conn.execute(
                "SELECT name, source, revision, created FROM serve_models WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise InputError(
                    f"no model named {name!r} is registered in {self.path}",
                    "list them with: lmassay serve model list --registry PATH",
                )
            conn.execute("DELETE FROM serve_models WHERE name = ?", (name,))
            return RegisteredModel(*row)

        return self._transaction(delete)

    def models(self) -> list[RegisteredModel]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT name, source, revision, created FROM serve_models ORDER BY name"
            ).fetchall()
        )
        return [RegisteredModel(*row) for row in rows]

    def model(self, name: str) -> RegisteredModel | None:
        row = self._run(
            lambda conn: conn.execute(
                "SELECT name, source, revision, created FROM serve_models WHERE name = ?", (name,)
            ).fetchone()
        )
        return None if row is None else RegisteredModel(*row)

    # -- submitting and reading --------------------------------------------------------------
    def submit(self, request: dict[str, Any], token: str, queue_cap: int) -> str | None:
        """Queue a job; its id, or None when ``queue_cap`` jobs are already queued or running."""
        job_id = uuid.uuid4().hex
        text = json.dumps(request, sort_keys=True)

        def insert(conn: sqlite3.Connection) -> str | None:
            waiting = conn.execute(
                "SELECT COUNT(*) FROM serve_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()[0]
            if waiting >= queue_cap:
                return None
            conn.execute(
                "INSERT INTO serve_jobs (id, token, created, request, status) "
                "VALUES (?, ?, ?, ?, 'queued')",
                (job_id, token, utc_now(), text),
            )
            return job_id

        return self._transaction(insert)

    def job(self, job_id: str) -> Job | None:
        row = self._run(
            lambda conn: conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM serve_jobs WHERE id = ?", (job_id,)
            ).fetchone()
        )
        return None if row is None else _job(row)

    def jobs(
        self, *, status: str | None = None, limit: int = 100, offset: int = 0, newest: bool = True
    ) -> list[Job]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        order = "DESC" if newest else "ASC"
        sql = f"SELECT {_JOB_COLUMNS} FROM serve_jobs {where} ORDER BY seq {order} LIMIT ? OFFSET ?"
        rows = self._run(lambda conn: conn.execute(sql, [*params, limit, offset]).fetchall())
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT status, COUNT(*) FROM serve_jobs GROUP BY status"
            ).fetchall()
        )
        return {str(status): int(n) for status, n in rows}

    # -- the worker's side --------------------------------------------------------------------
    def claim(self, worker: str, pid: int) -> Job | None:
        """Take the oldest queued job (atomically) for ``worker``; None when the queue is empty."""

        def take(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                "SELECT id FROM serve_jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE serve_jobs SET status = 'running', attempts = attempts + 1, worker = ?, "
                "pid = ?, heartbeat = ?, started = ?, progress = NULL, error = NULL WHERE id = ?",
                (worker, pid, time.time(), utc_now(), row[0]),
            )
            found = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM serve_jobs WHERE id = ?", (row[0],)
            ).fetchone()
            return _job(found)

        return self._transaction(take)

    def heartbeat(self, job_id: str, worker: str, progress: dict[str, Any] | None = None) -> bool:
        """Refresh a running job's heartbeat (and progress); False when it is no longer ours."""
        sets, params = "heartbeat = ?", list[Any]([time.time()])
        if progress is not None:
            sets += ", progress = ?"
            params.append(json.dumps(progress))

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE serve_jobs SET {sets} WHERE id = ? AND worker = ? AND status = 'running'",
                (*params, job_id, worker),
            )
            return cursor.rowcount == 1

        return self._run(update)

    def complete(
        self, job_id: str, worker: str, verdict: str, flagged: list[str], published: dict[str, Any]
    ) -> bool:
        """Mark a job done (only by the worker that holds it); False when it was not ours."""

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE serve_jobs SET status = 'done', completions = completions + 1, "
                "verdict = ?, flagged = ?, published = ?, finished = ?, error = NULL, "
                "progress = ? WHERE id = ? AND worker = ? AND status = 'running'",
                (
                    verdict,
                    json.dumps(flagged),
                    json.dumps(published, sort_keys=True),
                    utc_now(),
                    json.dumps({"stage": "done"}),
                    job_id,
                    worker,
                ),
            )
            return cursor.rowcount == 1

        return self._transaction(update)

    def fail(self, job_id: str, reason: str, worker: str | None = None) -> bool:
        """Mark a job failed with ``reason`` (by its worker, or any queued/running one)."""
        clause, params = ("AND worker = ?", [worker]) if worker else ("", [])

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE serve_jobs SET status = 'failed', error = ?, finished = ? "
                f"WHERE id = ? AND status IN ('queued', 'running') {clause}",
                (reason[:2000], utc_now(), job_id, *params),
            )
            return cursor.rowcount == 1

        return self._transaction(update)

    def request_cancel(self, job_id: str) -> str | None:
        """Cancel a job: a queued one fails at once, a running one is marked for its worker's
        supervisor to stop. Returns the status the job had (None: no such job)."""

        def cancel(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM serve_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] == "queued":
                conn.execute(
                    "UPDATE serve_jobs SET status = 'failed', cancel = 1, error = ?, finished = ? "
                    "WHERE id = ?",
                    (CANCELLED, utc_now(), job_id),
                )
            elif row[0] == "running":
                conn.execute("UPDATE serve_jobs SET cancel = 1 WHERE id = ?", (job_id,))
            return str(row[0])

        return self._transaction(cancel)

    def cancelled_running(self) -> list[Job]:
        rows = self._run(
            lambda conn: conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM serve_jobs WHERE status = 'running' AND cancel = 1"
            ).fetchall()
        )
        return [_job(r) for r in rows]

    def worker_lost(
        self, worker: str, reason: str, max_attempts: int, *, count: bool = True
    ) -> int:
        """The job ``worker`` was running when it stopped: back to the queue while it has
        attempts left, else failed with ``reason``; a cancelled one fails as cancelled.
        ``count=False`` (a graceful shutdown) gives the attempt back. Returns rows changed."""

        def update(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, attempts, cancel FROM serve_jobs WHERE worker = ? AND status = 'running'",
                (worker,),
            ).fetchall()
            for job_id, attempts, cancel in rows:
                _requeue_or_fail(conn, job_id, attempts, cancel, reason, max_attempts, count)
            return len(rows)

        return self._transaction(update)

    def recover(self, max_attempts: int, lease_seconds: float) -> int:
        """At start-up: running jobs whose worker is gone (its process does not exist, or its
        heartbeat is older than ``lease_seconds``) go back to the queue or fail. Returns how many."""

        def update(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, attempts, cancel, pid, heartbeat, worker FROM serve_jobs "
                "WHERE status = 'running'"
            ).fetchall()
            now, changed = time.time(), 0
            for job_id, attempts, cancel, pid, heartbeat, worker in rows:
                stale = heartbeat is None or now - float(heartbeat) > lease_seconds
                if pid_alive(pid) and not stale:
                    continue
                reason = f"its worker {worker} stopped (found at start-up)"
                _requeue_or_fail(conn, job_id, attempts, cancel, reason, max_attempts, True)
                changed += 1
            return changed

        return self._transaction(update)


def _requeue_or_fail(
    conn: sqlite3.Connection,
    job_id: str,
    attempts: int,
    cancel: int,
    reason: str,
    max_attempts: int,
    count: bool,
) -> None:
    if cancel:
        conn.execute(
            "UPDATE serve_jobs SET status = 'failed', error = ?, finished = ? WHERE id = ?",
            (CANCELLED, utc_now(), job_id),
        )
    elif not count or attempts < max_attempts:
        conn.execute(
            "UPDATE serve_jobs SET status = 'queued', worker = NULL, pid = NULL, "
            "attempts = attempts - ?, error = ? WHERE id = ?",
            (0 if count else 1, f"retrying: {reason}", job_id),
        )
    else:
        conn.execute(
            "UPDATE serve_jobs SET status = 'failed', error = ?, finished = ? WHERE id = ?",
            (f"{reason}; gave up after {attempts} attempts", utc_now(), job_id),
        )


def _next_token_name(conn: sqlite3.Connection) -> str:
    n = conn.execute("SELECT COALESCE(MAX(id), 0) FROM serve_tokens").fetchone()[0]
    return f"token-{int(n) + 1}"
