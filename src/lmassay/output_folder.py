"""Write a command's output folder as one set: staged beside it, locked, put in place in one step.

Every command that writes a folder (``attest --out``, ``edit``, ``repair``, ``world``, ``zoo``, the
demo's cache) goes through :class:`OutputFolder`::

    with OutputFolder(out, flag="--out", owned=ATTEST_FILES) as folder:   # checked + locked here
        ...heavy work...
        with folder.writing():                    # a write error names --out, not an empty path
            write_files(folder.staging)
        folder.commit()                           # staging replaces OUT in one rename

What a user can rely on:

- **Checked before the work.** Entering checks that ``OUT`` is not a file, that its parent can be
  created and written (the staging folder is made there), and, when the caller says how much it
  will write, that roughly that much disk space is free. A folder holding files that this command
  did not write (anything outside ``owned``) is refused rather than replaced.
- **One run per folder.** An exclusive ``flock`` on a hidden ``.<name>.lock`` beside ``OUT`` is held
  from entry to exit; a second run on the same folder is refused with a message naming it, or waits
  (``wait=True``, for caches that a second run should then reuse).
- **All or nothing.** Files are written into a hidden ``.<name>.partial-*`` sibling; ``commit()``
  exchanges it with ``OUT`` in one ``renameat2(RENAME_EXCHANGE)`` (two renames where the system has
  no exchange: then a kill between them leaves no ``OUT`` and the old one in the hidden sibling).
  An error or a kill before ``commit`` leaves the earlier ``OUT`` exactly as it was.
- **Leftovers are cleaned.** Under the lock, staging folders of killed runs and the ``.*.tmp``
  files that :mod:`lmassay._atomic` left in ``OUT`` (before this module existed) are removed.

:func:`locked` is the lock alone, for commands that add one file to a finished folder (``report``,
``attest --sign``'s statement), each file written atomically.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType

from lmassay.errors import InputError

__all__ = [
    "OutputFolder",
    "check_space",
    "exchange",
    "locked",
    "needed_for_copy",
    "publish",
]

_STAGING = ".{name}.partial-"
_ATOMIC_LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # _atomic's mkstemp names


def _lock_file(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextmanager
def locked(
    out: str | os.PathLike[str],
    *,
    flag: str = "--out",
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the exclusive lock of folder ``out`` (its parent is created if missing).

    Another lmassay process holding it makes this raise :class:`InputError` naming ``flag``, or,
    with ``wait``, block until it is released (``on_wait`` is told once). The lock file is removed
    on release; a lock file replaced while we waited for it is locked again, so two holders never
    coexist.
    """
    folder = Path(out)
    _make_parent(folder, flag)
    path = _lock_file(folder)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise _unwritable(folder, flag, err) from err
        try:
            _acquire(fd, folder, flag, wait, on_wait)
        except BaseException:
            os.close(fd)
            raise
        # The holder before us may have removed the file we locked: lock the current one instead.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield folder
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(
    fd: int, folder: Path, flag: str, wait: bool, on_wait: Callable[[str], None] | None
) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
    if not wait:
        raise InputError(
            f"{flag} {folder} is being written by another lmassay run (pid {holder})",
            "wait for it to finish, or choose another folder",
        )
    if on_wait is not None:
        on_wait(f"waiting for another lmassay run (pid {holder}) to finish {folder}")
    fcntl.flock(fd, fcntl.LOCK_EX)


def _make_parent(folder: Path, flag: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {folder} is a file", "pass a folder (it is created if missing)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(folder, flag, err) from err


def _unwritable(folder: Path, flag: str, err: OSError) -> InputError:
    return InputError(
        f"{flag} {folder} cannot be written ({err.strerror or err})",
        "choose a folder you can write to",
    )


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` (both existing) in one step; False where the system can't."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC  # loaded once, on the first exchange
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def publish(staging: Path, out: Path) -> None:
    """Put the finished folder ``staging`` in place of ``out``; the old ``out`` is then removed.

    One exchange where the system has it; else two renames, the old folder kept under a hidden
    name until the new one is in place.
    """
    if out.exists() and exchange(staging, out):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old folder
        return
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old, out)  # put the previous set back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(out: Path) -> None:
    """Remove staging folders of killed runs beside ``out`` and atomic-write leftovers inside it.

    Call only while holding ``out``'s lock: then no other run is using them.
    """
    parent = out.parent
    if parent.is_dir():
        for prefix in (_STAGING.format(name=out.name), f".{out.name}.old-"):
            for stale in parent.glob(f"{glob_escape(prefix)}*"):
                shutil.rmtree(stale, ignore_errors=True)
    if out.is_dir():
        for entry in out.iterdir():
            if _ATOMIC_LEFTOVER.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


class OutputFolder:
    """The folder ``out`` written as one set (see the module docstring).

    ``owned``: the names this command writes at the top of ``out``; an existing non-empty ``out``
    holding anything else is refused (``None``: any content may be replaced, for folders that
    :mod:`lmassay.cached_build` recognises by their card). ``needs_bytes``: a rough size of what
    will be written, checked against the free space. ``wait``: wait for another run's lock
    instead of refusing.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        flag: str = "--out",
        owned: Collection[str] | None = None,
        needs_bytes: int = 0,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.out = Path(out)
        self.flag = flag
        self.owned = None if owned is None else frozenset(owned)
        self.needs_bytes = needs_bytes
        self.wait = wait
        self.on_wait = on_wait
        self._staging: Path | None = None
        self._lock: AbstractContextManager[Path] | None = None
        self.committed = False

    @property
    def staging(self) -> Path:
        """The hidden sibling folder the files are written into until :meth:`commit`."""
        if self._staging is None:
            raise RuntimeError("OutputFolder.staging used outside its with block")
        return self._staging

    def final(self, path: Path) -> Path:
        """Where ``path`` (inside :attr:`staging`) is once committed."""
        return self.out / path.relative_to(self.staging)

    def __enter__(self) -> OutputFolder:
        self._check_foreign()
        self._lock = locked(self.out, flag=self.flag, wait=self.wait, on_wait=self.on_wait)
        self._lock.__enter__()
        try:
            clean_leftovers(self.out)
            self._check_foreign()  # again: a run we waited for may have changed it
            check_space(self.out, self.needs_bytes, flag=self.flag)
            try:
                self._staging = Path(
                    tempfile.mkdtemp(
                        prefix=_STAGING.format(name=self.out.name), dir=self.out.parent
                    )
                )
            except OSError as err:
                raise _unwritable(self.out, self.flag, err) from err
        except BaseException as exc:
            self._lock.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._staging is not None and self._staging.exists():
                shutil.rmtree(self._staging, ignore_errors=True)
        finally:
            self._staging = None
            if self._lock is not None:
                self._lock.__exit__(exc_type, exc, tb)
                self._lock = None

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """Around the writes into :attr:`staging`: an OS error (a full disk, say) names ``out``."""
        try:
            yield self.staging
        except OSError as err:
            where = f" ({err.filename})" if err.filename else ""
            raise InputError(
                f"could not write {self.flag} {self.out}: {err.strerror or err}{where}; "
                "nothing was changed there",
                "free disk space or choose another folder, then run again",
            ) from err

    def commit(self) -> Path:
        """Put :attr:`staging` in place of ``out`` in one step; return ``out``."""
        with self.writing():
            _fsync_tree(self.staging)
            publish(self.staging, self.out)
        self._staging = None
        self.committed = True
        return self.out

    def _check_foreign(self) -> None:
        if self.owned is None or not self.out.is_dir():
            return
        foreign = sorted(
            entry.name
            for entry in self.out.iterdir()
            if entry.name not in self.owned and not _ATOMIC_LEFTOVER.match(entry.name)
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if foreign[3:] else ""
            )
            raise InputError(
                f"{self.flag} {self.out} holds files this command did not write ({shown}), "
                "which replacing the folder would delete",
                "choose a new or empty folder, or move those files away",
            )


def check_space(out: Path, needs_bytes: int, *, flag: str = "--out") -> None:
    """Refuse (naming ``flag``) when the disk of ``out``'s parent has less than ``needs_bytes``
    free; a rough check before heavy work, not a reservation."""
    if needs_bytes <= 0:
        return
    free = shutil.disk_usage(out.parent).free
    if free < needs_bytes:
        raise InputError(
            f"{flag} {out}: {_size(free)} free on its disk, about {_size(needs_bytes)} needed",
            "free disk space or choose a folder on another disk",
        )


def needed_for_copy(model: str | os.PathLike[str]) -> int:
    """Roughly the bytes a changed copy of the local model folder ``model`` takes (its files' total
    size, plus a margin); 0 for a hub id, whose size is not known before it is downloaded."""
    folder = Path(model)
    if not folder.is_dir():
        return 0
    total = sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())
    return total + 16 * 2**20


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves, so the rename publishes data
    that is on disk (a crash after the rename never shows empty files)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
