"""Reuse a folder when it already holds what was asked for; otherwise build it, card last.

A cached folder (a world, a reference model, a zoo variant, an interrupted repair) carries a JSON
*card* that records the *request* it was made from: every input that decides its content. The
card is written last, so a folder with a card is complete. :func:`reuse_or_build` returns the
folder as it is when its card records the same request and the files it needs are there, and
builds it otherwise, as one set (:class:`~lmassay.output_folder.OutputFolder`): in a hidden
staging folder beside it that replaces the folder when complete, under a lock that makes a second
process building the same folder wait and then reuse it. :func:`matching_card` is the check alone, for callers that resume rather than reuse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_json
from lmassay.errors import InputError
from lmassay.output_folder import OutputFolder
from lmassay.progress import NullProgress, Progress

__all__ = ["Built", "matching_card", "read_json", "reuse_or_build"]


@dataclass(frozen=True)
class Built:
    """A folder :func:`reuse_or_build` returned, its card, and whether it was reused."""

    path: Path
    card: dict[str, Any]
    reused: bool


def read_json(file: Path) -> dict[str, Any] | None:
    """The JSON object in ``file``, or ``None`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def matching_card(
    folder: Path,
    request: Mapping[str, Any],
    *,
    card_name: str,
    needed: Sequence[str] = (),
    key: str | None = "request",
) -> dict[str, Any] | None:
    """The card of ``folder`` if it records ``request`` and every ``needed`` file exists.

    The request is read at ``card[key]``, or is the whole card when ``key`` is ``None``.
    """
    card = read_json(folder / card_name)
    if card is None:
        return None
    held = card if key is None else card.get(key)
    if held != dict(request):
        return None
    return card if all((folder / name).is_file() for name in needed) else None


def _check_target(folder: Path, card_name: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(
            f"--out {str(folder)!r} is a file", "pass a folder (it is created if missing)"
        )
    if folder.is_dir() and any(folder.iterdir()) and not (folder / card_name).is_file():
        raise InputError(
            f"{str(folder)!r} exists and was not made by lmassay (no {card_name})",
            "remove it or choose another folder",
        )


def reuse_or_build(
    folder: str | os.PathLike[str],
    request: Mapping[str, Any],
    build: Callable[[Path], dict[str, Any]],
    *,
    card_name: str,
    needed: Sequence[str] = (),
    intact: Callable[[dict[str, Any]], bool] | None = None,
    what: str = "folder",
    progress: Progress | None = None,
) -> Built:
    """Return ``folder`` as it is if its card records ``request``; else build it and write the card.

    ``build(target)`` writes the folder's files into ``target`` and returns the card, which must
    hold ``request`` under the key ``"request"``; it is written to ``target/card_name`` last.
    ``target`` is the staging folder of an :class:`~lmassay.output_folder.OutputFolder`, which
    replaces ``folder`` whole once the card is written; a non-empty folder without a card is
    refused rather than replaced. While another process builds the same folder, this one waits
    for it and then reuses its result if it matches. ``needed`` names the files a reusable folder
    must hold besides the card, and ``intact(card)``, when given, checks them further (their
    digests, say). ``what`` names the folder in the progress lines.
    """
    root = Path(folder)
    progress = progress or NullProgress()
    _check_target(root, card_name)

    def reusable() -> dict[str, Any] | None:
        card = matching_card(root, request, card_name=card_name, needed=needed)
        return card if card is not None and (intact is None or intact(card)) else None

    card = reusable()
    if card is None:
        with OutputFolder(root, owned=None, wait=True, on_wait=progress.log) as out:
            _check_target(root, card_name)
            card = reusable()  # another run may have built it while we waited
            if card is None:
                progress.log(f"making the {what} in {root}")
                card = build(out.staging)
                if card.get("request") != dict(request):  # a programming error in ``build``
                    raise RuntimeError(
                        f"the card of {root} does not record the request it was built from"
                    )
                with out.writing():
                    atomic_write_json(out.staging / card_name, card)
                out.commit()
                return Built(root, card, reused=False)
    progress.log(f"reusing the {what} in {root}")
    return Built(root, card, reused=True)
