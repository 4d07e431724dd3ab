"""The ``lmassay`` Typer app and the helpers every command shares.

Exit codes: 0 ran and nothing is wrong; 1 ran and the model is flagged (a tampered category or a
different model); 2 could not run — one line on stderr, ``"<verb> failed: <what> — <fix>"``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from lmassay import __version__
from lmassay.errors import LmassayError


class OneLineUsageErrors(TyperGroup):
    """The top-level group: a usage error (a missing option, an unknown one, a value outside the
    choices) is one line on stderr, ``"<verb> failed: <what> — see `lmassay <verb> -h`"``, exit 2,
    like every other input error; help, ``--version`` and the commands' own exits pass through."""

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            raise SystemExit(1) from None
        except typer.TyperException as exc:  # click's errors, as typer ships them
            raise SystemExit(_show_error(exc)) from None
        raise SystemExit(code if isinstance(code, int) else 0)


def _show_error(exc: typer.TyperException) -> int:
    """Show a click error; a usage error as one line naming the command; return the exit code."""
    code = int(getattr(exc, "exit_code", EXIT_UNUSABLE))
    ctx = getattr(exc, "ctx", None)
    if code != EXIT_UNUSABLE or ctx is None or type(exc).__name__ == "NoArgsIsHelpError":
        # the help of a bare group, or another click error, as click shows it
        exc.show()  # type: ignore[attr-defined]
        return code
    verb = " ".join(ctx.command_path.split()[1:]) or "lmassay"
    command = "lmassay" if verb == "lmassay" else f"lmassay {verb}"
    message = " ".join(exc.format_message().split())
    typer.echo(f"{verb} failed: {message} — see `{command} -h`", err=True)
    return code


app = typer.Typer(
    cls=OneLineUsageErrors,
    name="lmassay",
    help="Check whether an open language model has been tampered with, and where.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)

EXIT_OK, EXIT_FLAGGED, EXIT_UNUSABLE = 0, 1, 2


def fail(verb: str, message: str) -> NoReturn:
    typer.echo(
        message if message.startswith(f"{verb} failed") else f"{verb} failed: {message}", err=True
    )
    raise typer.Exit(EXIT_UNUSABLE)


def quiet_libraries() -> None:
    """Silence transformers' own progress bars and advisory warnings: lmassay reports progress.
    huggingface_hub's download bars stay visible (a first download can take minutes)."""
    from transformers.utils import logging as hf_logging

    from lmassay.progress import hide_transformers_bars

    hf_logging.set_verbosity_error()
    hide_transformers_bars()


def run_command(verb: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; turn every known error into one line on stderr and exit code 2."""
    quiet_libraries()
    try:
        return func(*args, **kwargs)
    except LmassayError as exc:
        fail(verb, exc.one_line(verb))
    except KeyboardInterrupt:
        typer.echo(f"{verb} interrupted — no output was written for the unfinished step", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:  # a path that cannot be written or read (permissions, full disk, ...)
        where = f": {exc.filename}" if exc.filename else ""
        fail(
            verb,
            f"{exc.strerror or exc}{where} — check the path, its permissions and free disk space",
        )
    except MemoryError:
        fail(
            verb,
            "ran out of memory — lower --token-budget, use --dtype bfloat16 or a smaller --per-category",
        )
    except Exception as exc:  # the CLI boundary: never a traceback unless asked for
        if os.environ.get("LMASSAY_DEBUG"):
            raise
        if "out of memory" in str(exc).lower():
            fail(verb, "ran out of memory — lower --token-budget or use --dtype bfloat16")
        fail(
            verb,
            f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} — "
            "set LMASSAY_DEBUG=1 for the traceback and report it",
        )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lmassay {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """lmassay: has this model been tampered with, where, and can we undo it?"""
