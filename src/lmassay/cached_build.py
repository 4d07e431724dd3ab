"""Reuse a folder when it already holds what was asked for; otherwise build it, card last.

A cached folder (a world, a reference model, a zoo variant, an interrupted repair) carries a JSON
*card* that records the *request* it was made from: every input that decides its content. The
card is written last, so a folder with a card is complete. :func:`reuse_or_build` returns the
folder as it is when its card records the same request and the files it needs are there, and
builds it otherwise: in place (the old card removed first; other files are left alone) or, with
``staged=True``, in a hidden ``.<name>.partial`` folder beside it that replaces the folder when
complete. :func:`matching_card` is the check alone, for callers that resume rather than reuse.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmassay._atomic import atomic_write_json
from lmassay.errors import InputError
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


def _check_target(folder: Path, card_name: str, staged: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(
            f"--out {str(folder)!r} is a file", "pass a folder (it is created if missing)"
        )
    if staged and folder.is_dir() and any(folder.iterdir()) and not (folder / card_name).is_file():
        raise InputError(
            f"{str(folder)!r} exists and was not made by lmassay (no {card_name})",
            "remove it or choose another folder",
        )


def _build_in_place(
    folder: Path, build: Callable[[Path], dict[str, Any]], card_name: str
) -> dict[str, Any]:
    (folder / card_name).unlink(missing_ok=True)  # a half-made folder is never reused
    folder.mkdir(parents=True, exist_ok=True)
    card = build(folder)
    atomic_write_json(folder / card_name, card)
    return card


def _build_staged(
    folder: Path, build: Callable[[Path], dict[str, Any]], card_name: str
) -> dict[str, Any]:
    partial = folder.parent / f".{folder.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    card = build(partial)
    atomic_write_json(partial / card_name, card)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return card


def reuse_or_build(
    folder: str | os.PathLike[str],
    request: Mapping[str, Any],
    build: Callable[[Path], dict[str, Any]],
    *,
    card_name: str,
    needed: Sequence[str] = (),
    staged: bool = False,
    intact: Callable[[dict[str, Any]], bool] | None = None,
    what: str = "folder",
    progress: Progress | None = None,
) -> Built:
    """Return ``folder`` as it is if its card records ``request``; else build it and write the card.

    ``build(target)`` writes the folder's files into ``target`` and returns the card, which must
    hold ``request`` under the key ``"request"``; it is written to ``target/card_name`` last.
    ``target`` is ``folder`` itself (its old card removed first), or with ``staged`` a fresh
    ``.<name>.partial`` folder beside it that then replaces ``folder`` whole; a non-empty folder
    without a card is then refused rather than replaced. ``needed`` names the files a reusable
    folder must hold besides the card, and ``intact(card)``, when given, checks them further (their
    digests, say). ``what`` names the folder in the progress lines.
    """
    root = Path(folder)
    progress = progress or NullProgress()
    _check_target(root, card_name, staged)
    card = matching_card(root, request, card_name=card_name, needed=needed)
    if card is not None and (intact is None or intact(card)):
        progress.log(f"reusing the {what} in {root}")
        return Built(root, card, reused=True)
    progress.log(f"making the {what} in {root}")
    card = (_build_staged if staged else _build_in_place)(root, build, card_name)
    if card.get("request") != dict(request):  # a programming error in ``build``
        raise RuntimeError(f"the card of {root} does not record the request it was built from")
    return Built(root, card, reused=False)
