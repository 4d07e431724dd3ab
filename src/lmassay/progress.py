"""Progress reporting that the library accepts and the CLI renders.

Library functions take an optional :class:`Progress`; they call :meth:`Progress.task` for each long
stage and the returned callback with ``(done, total)``.  The CLI passes a :class:`RichProgress` that
draws bars on a terminal, a :class:`LineProgress` that prints plain lines when stderr is a log or a
pipe, and nothing with ``--quiet``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class ProgressFn(Protocol):
    """``update(done, total)``, or ``update(done, total, note)`` with a short status (a loss)."""

    def __call__(self, done: int, total: int, note: str | None = None, /) -> None: ...


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
        def update(done: int, total: int, note: str | None = None, /) -> None:
            return None

        return update

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

        def update(done: int, new_total: int, note: str | None = None, /) -> None:
            text = f"{description} ({note})" if note else description
            self._bars.update(task_id, completed=done, total=max(new_total, 1), description=text)

        return update

    def log(self, message: str) -> None:
        if self.enabled:
            self._bars.console.print(f"[dim]{message}[/dim]")


class LineProgress:
    """Plain lines on stderr for logs and pipes: every message, and each task at every 10 %."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def task(self, description: str, total: int) -> ProgressFn:
        started = time.perf_counter()
        shown = -1

        def update(done: int, new_total: int, note: str | None = None, /) -> None:
            nonlocal shown
            tenth = (10 * done) // max(new_total, 1)
            if tenth > shown:
                shown = tenth
                elapsed = time.perf_counter() - started
                left = elapsed * (new_total - done) / done if done else float("nan")
                self._print(
                    f"{description}: {done}/{new_total} ({10 * tenth}%), {elapsed:.0f} s elapsed"
                    + (f", about {left:.0f} s left" if done and done < new_total else "")
                    + (f", {note}" if note else "")
                )

        return update

    def log(self, message: str) -> None:
        self._print(message)


@contextmanager
def hidden_library_bars() -> Iterator[None]:
    """Hide transformers' own progress bars (loading, saving) for a while; lmassay reports progress.

    huggingface_hub's bars (downloads) keep their state: transformers' switch flips them too, so
    it is put back as it was."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    with _hub_bars_kept():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            with _hub_bars_kept():
                hf_logging.enable_progress_bar()


def hide_transformers_bars() -> None:
    """Turn transformers' own progress bars off for good, leaving huggingface_hub's download
    bars as they are (visible unless HF_HUB_DISABLE_PROGRESS_BARS or ``--quiet``)."""
    from transformers.utils import logging as hf_logging

    with _hub_bars_kept():
        hf_logging.disable_progress_bar()


@contextmanager
def _hub_bars_kept() -> Iterator[None]:
    """huggingface_hub's global progress-bar switch, as it was before the block."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    try:
        yield
    finally:
        if was_disabled != are_progress_bars_disabled():
            (disable_progress_bars if was_disabled else enable_progress_bars)()


@contextmanager
def cli_progress(quiet: bool) -> Iterator[Progress]:
    """The progress reporter the CLI uses: rich bars on a TTY, plain lines otherwise."""
    if quiet:
        with _hub_bars_kept():
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()  # --quiet: no download bars either
            yield NullProgress()
        return
    if not sys.stderr.isatty():
        yield LineProgress()
        return
    with RichProgress(enabled=True) as bars:
        yield bars
