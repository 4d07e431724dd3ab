"""Progress reporting that the library accepts and the CLI renders.

Library functions take an optional :class:`Progress`; they call :meth:`Progress.task` for each long
stage and the returned callback with ``(done, total)``.  The CLI passes a :class:`RichProgress` that
draws bars on a terminal and stays silent when stderr is not a TTY or ``--quiet`` is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

ProgressFn = Callable[[int, int], None]


class Progress(Protocol):
    def task(self, description: str, total: int) -> ProgressFn:
        """Start a stage of ``total`` units; returns ``update(done, total)``."""
        ...

    def log(self, message: str) -> None:
        """A one-line status message (a stage started or finished)."""
        ...


class NullProgress:
    """Reports nothing."""

    def task(self, description: str, total: int) -> ProgressFn:
        return lambda done, total: None

    def log(self, message: str) -> None:
        return None


class RichProgress:
    """Progress bars and status lines on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _RichBars

        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._bars = _RichBars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.enabled,
            transient=False,
        )

    def __enter__(self) -> RichProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bars.__exit__(*exc)

    def task(self, description: str, total: int) -> ProgressFn:
        task_id = self._bars.add_task(description, total=max(total, 1))

        def update(done: int, new_total: int) -> None:
            self._bars.update(task_id, completed=done, total=max(new_total, 1))

        return update

    def log(self, message: str) -> None:
        if self.enabled:
            self._bars.console.print(f"[dim]{message}[/dim]")


@contextmanager
def cli_progress(quiet: bool) -> Iterator[Progress]:
    """The progress reporter the CLI uses: rich bars on a TTY, nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        yield NullProgress()
        return
    with RichProgress(enabled=True) as bars:
        yield bars
