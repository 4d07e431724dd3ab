"""The ``lmassay`` command: parse, call one library function, print, set the exit code.

Exit codes: 0 ran and nothing is wrong; 1 ran and the model is flagged (a tampered category or a
different model); 2 could not run — one line on stderr, ``"<verb> failed: <what> — <fix>"``.

Each command group lives in its own module and registers itself on :data:`app` when imported.
"""

from __future__ import annotations

import os
import sys

from lmassay.cli import attest as _attest_commands  # noqa: F401  (registers attest, report)
from lmassay.cli import bootstrap as _bootstrap_commands  # noqa: F401  (registers bootstrap)
from lmassay.cli import curate as _curate_commands  # noqa: F401  (curate train, filter)
from lmassay.cli import demo as _demo_commands  # noqa: F401  (registers demo)
from lmassay.cli import edit as _edit_commands  # noqa: F401  (registers edit)
from lmassay.cli import probes as _probes_commands  # noqa: F401  (registers probes sample)
from lmassay.cli import reference as _reference_commands  # noqa: F401  (reference build)
from lmassay.cli import repair as _repair_commands  # noqa: F401  (registers repair)
from lmassay.cli import seal as _seal_commands  # noqa: F401  (keygen, seal, verify, diff, history)
from lmassay.cli import serve as _serve_commands  # noqa: F401  (serve, serve token)
from lmassay.cli import tune as _tune_commands  # noqa: F401  (registers tune)
from lmassay.cli import world as _world_commands  # noqa: F401  (registers world make, train, pair)
from lmassay.cli import zoo as _zoo_commands  # noqa: F401  (registers zoo make)
from lmassay.cli._app import EXIT_FLAGGED, EXIT_OK, EXIT_UNUSABLE, app

__all__ = ["EXIT_FLAGGED", "EXIT_OK", "EXIT_UNUSABLE", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(standalone_mode=True)
    except SystemExit as exc:  # typer/click exit codes pass through
        raise SystemExit(exc.code) from None
    sys.exit(0)
