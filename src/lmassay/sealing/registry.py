"""A local registry of what is known about models: every seal, verify and attest, in SQLite.

Location: ``--registry PATH``, else ``$LMASSAY_REGISTRY``, else
``platformdirs.user_data_dir("lmassay")/registry.sqlite``.  The database runs in WAL mode with a busy
timeout, and each write is one short transaction retried with back-off while another process holds
the lock, so several processes can record at once without losing rows.

One table, ``events``: time, action (``seal`` | ``verify`` | ``attest``), path, ``digest`` (the
model's one identity, the manifest root digest model_signing computes, ``sha256:<hex>``; for an
attestation, its ``model.digest``), ``tree_digest`` (only in rows written by lmassay 0.1: the legacy
tree digest attestation.json recorded then), signer key fingerprint, verdict, signature path, tool
version and a JSON ``details`` column.  :func:`history` matches a folder by both digests, so older
rows are still found.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmassay import __version__
from lmassay.attest.document import Attestation
from lmassay.digests import Digest, model_identity
from lmassay.errors import InputError
from lmassay.provenance import utc_now
from lmassay.sealing.signing import SealResult
from lmassay.sealing.verifying import VerifyResult

ENV_VAR = "LMASSAY_REGISTRY"
ACTIONS = ("seal", "verify", "attest")
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 30_000
_RETRIES = 20

_CREATE = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    path TEXT,
    digest TEXT,
    tree_digest TEXT,
    signer TEXT,
    verdict TEXT,
    signature TEXT,
    tool_version TEXT,
    details TEXT
);
CREATE INDEX IF NOT EXISTS events_digest ON events(digest);
CREATE INDEX IF NOT EXISTS events_tree_digest ON events(tree_digest);
CREATE INDEX IF NOT EXISTS events_path ON events(path);
"""


@dataclass
class RegistryEvent:
    """One recorded seal, verify or attest."""

    action: str
    path: str | None = None
    digest: str | None = None
    tree_digest: str | None = None
    signer: str | None = None
    verdict: str | None = None
    signature: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=utc_now)
    tool_version: str = __version__
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_registry_path() -> Path:
    """``$LMASSAY_REGISTRY`` if set, else ``registry.sqlite`` in the user data folder."""
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return Path(from_env)
    import platformdirs

    return Path(platformdirs.user_data_dir("lmassay")) / "registry.sqlite"


def resolve_registry_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_registry_path()


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Registry:
    """The registry at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = resolve_registry_path(path)
        if self.path.is_dir():
            raise InputError(f"registry {self.path} is a folder", "give --registry a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            self._retry(lambda: self._initialise(conn))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; a file that is not a usable SQLite database is named (InputError)."""
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise InputError(
                f"cannot open registry {self.path} ({exc})", "check --registry"
            ) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            yield conn
        except sqlite3.DatabaseError as exc:  # "file is not a database", a malformed image, ...
            if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
                raise  # retried by _retry
            raise InputError(
                f"registry {self.path} is not a usable SQLite database ({exc})",
                f"move {self.path} aside (lmassay creates a new one), "
                f"or pass another --registry or ${ENV_VAR}",
            ) from exc
        finally:
            conn.close()

    def _retry(self, operation: Any) -> Any:
        """Run ``operation``; on "database is locked" wait (jittered back-off) and try again."""
        delay = 0.01
        for attempt in range(_RETRIES):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                if attempt == _RETRIES - 1:
                    raise InputError(
                        f"registry {self.path} stayed locked by another process ({exc})",
                        "retry when the other lmassay command has finished",
                    ) from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        return None

    def _initialise(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise InputError(
                f"registry {self.path} cannot use WAL mode ({mode})", "use a local disk"
            )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise InputError(
                f"registry {self.path} has schema version {version}", "upgrade lmassay to read it"
            )
        conn.executescript(_CREATE)
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def journal_mode(self) -> str:
        with self._connect() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    def record(self, event: RegistryEvent) -> int:
        """Insert one event (retried while the database is locked); return its row id."""
        if event.action not in ACTIONS:
            raise ValueError(f"unknown registry action {event.action!r}")
        row = (
            event.time,
            event.action,
            event.path,
            event.digest,
            event.tree_digest,
            event.signer,
            event.verdict,
            event.signature,
            event.tool_version,
            json.dumps(event.details, sort_keys=True, default=str),
        )

        def insert() -> int:
            with self._connect() as conn:
                cursor = conn.execute(
                    "INSERT INTO events (time, action, path, digest, tree_digest, signer, verdict,"
                    " signature, tool_version, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                return int(cursor.lastrowid or 0)

        rowid = int(self._retry(insert))
        event.id = rowid
        return rowid

    def events(
        self, *, digests: tuple[str, ...] = (), path: str | None = None, limit: int | None = None
    ) -> list[RegistryEvent]:
        """Events whose digest or tree digest is one of ``digests`` (a hex prefix of 8+ characters
        matches) or whose path is ``path``, oldest first; all events when neither is given."""
        clauses: list[str] = []
        params: list[Any] = []
        for digest in digests:
            value = normalise_digest(digest)
            clauses.append("(digest LIKE ? OR tree_digest LIKE ?)")
            params += [f"sha256:{value}%", f"sha256:{value}%"]
        if path is not None:
            clauses.append("path = ?")
            params.append(path)
        sql = "SELECT id, time, action, path, digest, tree_digest, signer, verdict, signature, tool_version, details FROM events"
        if clauses:
            sql += " WHERE " + " OR ".join(clauses)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def select() -> list[tuple[Any, ...]]:
            with self._connect() as conn:
                return list(conn.execute(sql, params).fetchall())

        rows = self._retry(select)
        return [
            RegistryEvent(
                id=r[0],
                time=r[1],
                action=r[2],
                path=r[3],
                digest=r[4],
                tree_digest=r[5],
                signer=r[6],
                verdict=r[7],
                signature=r[8],
                tool_version=r[9],
                details=json.loads(r[10] or "{}"),
            )
            for r in rows
        ]

    def count(self) -> int:
        def select() -> int:
            with self._connect() as conn:
                return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

        return int(self._retry(select))


def normalise_digest(text: str) -> str:
    """``sha256:ABC…`` or ``abc…`` → lower-case hex; at least 8 hex characters."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    if len(value) < 8 or any(c not in "0123456789abcdef" for c in value):
        raise InputError(
            f"{text!r} is neither an existing path nor a sha256 digest",
            "give a model folder, a file, or at least 8 hex characters of a digest",
        )
    return value


def history(
    target: str, registry: str | os.PathLike[str] | None = None
) -> tuple[list[RegistryEvent], str | None]:
    """What the registry knows about ``target`` (a folder, a file or a digest).

    For an existing path, its identity and legacy tree digest are computed in one hashing pass
    (:func:`lmassay.digests.model_identity`) and the events naming either digest or the path are
    returned, with the root.  Otherwise ``target`` is read as a digest or a prefix of one.
    """
    reg = Registry(registry)
    candidate = Path(target)
    if candidate.exists():
        identity = model_identity(candidate)
        digests = (str(identity.root), str(identity.legacy_tree))
        return reg.events(digests=digests, path=str(candidate.resolve())), str(identity.root)
    return reg.events(digests=(target,)), None


def record_event(
    event: RegistryEvent, registry: str | os.PathLike[str] | None = None
) -> tuple[int | None, str | None]:
    """Record ``event``; return (row id, None) or (None, a warning) when the registry is unusable.

    Recording is a side record of a finished command: a registry problem becomes a warning, never a
    failure of the seal, verify or attest that already happened.
    """
    try:
        return Registry(registry).record(event), None
    except InputError as exc:  # names the registry and the way out
        return None, f"not recorded in the registry: {exc}"
    except (sqlite3.Error, OSError) as exc:
        where = resolve_registry_path(registry)
        return None, f"not recorded in the registry {where} ({type(exc).__name__}: {exc})"


def seal_event(result: SealResult) -> RegistryEvent:
    """The registry row for a written seal or attestation statement."""
    return RegistryEvent(
        action="seal",
        path=str(result.path.resolve()),
        digest=str(result.manifest.root),
        signer=result.signer,
        verdict="sealed",
        signature=str(result.signature.resolve()),
        details={"kind": result.kind, "n_files": len(result.manifest.files)},
    )


def verify_event(result: VerifyResult) -> RegistryEvent:
    """The registry row for a finished verification (valid or not)."""
    details: dict[str, Any] = {"kind": result.kind, "reason": result.reason}
    if result.diff is not None:
        details["diff"] = result.diff.to_json()
    return RegistryEvent(
        action="verify",
        path=str(result.path.resolve()),
        digest=str(result.actual_root) if result.actual_root else None,
        signer=result.signer,
        verdict=result.verdict,
        signature=str(result.signature.resolve()),
        details=details,
    )


def attest_event(
    attestation: Attestation,
    model_dir: str | os.PathLike[str] | None,
    statement: SealResult | None = None,
    run_dir: str | os.PathLike[str] | None = None,
) -> RegistryEvent:
    """The registry row for a finished ``lmassay attest`` (``statement``: the signed one, if any).

    ``digest`` is attestation.json's ``model.digest`` — the model's identity, the root its
    statement signs — so no extra hashing happens here.
    """
    model = attestation.model
    recorded = model.digest if model is not None else None
    probes = attestation.probes.digest if attestation.probes is not None else None
    digest = f"sha256:{recorded.value}" if isinstance(recorded, Digest) else None
    folder = Path(model_dir) if model_dir is not None else None
    return RegistryEvent(
        action="attest",
        path=str(folder.resolve())
        if folder is not None and folder.exists()
        else (model.name if model is not None else None),
        digest=str(statement.manifest.root) if statement is not None else digest,
        signer=statement.signer if statement is not None else None,
        verdict=attestation.verdict.value,
        signature=str(statement.signature.resolve()) if statement is not None else None,
        details={
            "flagged": list(attestation.flagged),
            "comparison": attestation.comparison.value,
            "reference": attestation.reference.name if attestation.reference else None,
            "probes": probes.value if isinstance(probes, Digest) else None,
            "run": str(Path(run_dir).resolve()) if run_dir is not None else None,
        },
    )


@dataclass(frozen=True)
class AttestRecord:
    """What :func:`record_attestation` did: the signed statement (if asked for) and a registry
    warning (``None`` when the row was written)."""

    statement: SealResult | None
    warning: str | None


def record_attestation(
    attestation: Attestation,
    run_dir: str | os.PathLike[str],
    model: str,
    *,
    sign: str | os.PathLike[str] | None = None,
    registry: str | os.PathLike[str] | None = None,
    record: bool = True,
) -> AttestRecord:
    """After ``lmassay attest``: sign the statement (with ``sign``, a private key) and record the run.

    A signing problem raises :class:`InputError` (the user asked for a signature); a registry
    problem is only a warning.
    """
    from lmassay.sealing.statement import sign_attestation

    statement = sign_attestation(run_dir, model, sign) if sign is not None else None
    warning = None
    if record:
        _, warning = record_event(attest_event(attestation, model, statement, run_dir), registry)
    return AttestRecord(statement, warning)
