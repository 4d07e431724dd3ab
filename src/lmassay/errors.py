"""Errors that reach the user.

Every failure caused by the user's input is raised as :class:`InputError` with
two parts: *what* went wrong (naming the input) and the *fix*.  The CLI prints
them as one line, ``"<verb> failed: <what> — <fix>"``, and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class LmassayError(Exception):
    """Base class of the errors lmassay raises on purpose."""

    exit_code = 2

    def __init__(self, what: str, fix: str = "") -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} — {fix}" if fix else what)

    def one_line(self, verb: str) -> str:
        """The message as the CLI prints it."""
        text = f"{verb} failed: {self.what}"
        if self.fix:
            text += f" — {self.fix}"
        return " ".join(text.split())


class InputError(LmassayError):
    """The input (a path, a flag, a file's content) cannot be used."""


class ModelLoadError(InputError):
    """A model or tokenizer could not be loaded from the given path or hub id."""


class ProbeError(InputError):
    """The probe corpus is unusable."""


Check = tuple[bool, str, str]
"""One flag check of a configuration: (whether it holds, what is wrong, the fix)."""


def require(checks: Iterable[Check]) -> None:
    """Raise :class:`InputError` for the first check that does not hold (configs validate once)."""
    for holds, what, fix in checks:
        if not holds:
            raise InputError(what, fix)
