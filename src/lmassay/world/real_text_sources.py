"""The sources of the real-text world: which Debian package gives each category, and how its
text is cut into *units* (a verse, a dictionary entry, a fortune cookie) in reading order.

Each reader takes the files read out of the package (:func:`lmassay.world.debian_text.deb_files`)
and yields ``(document, unit)`` pairs; :mod:`lmassay.world.real_text` packs the consecutive units
of one document into paragraphs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise

from lmassay.world.debian_text import unlzw

__all__ = ["CATEGORIES", "FORTUNE_THEMES", "SOURCES", "Source", "Units"]


Units = Iterator[tuple[str, str]]


def _squash(text: str) -> str:
    return " ".join(text.split())


def bible_units(files: dict[str, bytes]) -> Units:
    """Verses of ``usr/lib/bible.data`` (a table of LZW blocks); document: book and chapter."""
    data = files["usr/lib/bible.data"]
    count = int.from_bytes(data[0x58:0x5C], "big")
    offsets = [int.from_bytes(data[0x5C + 4 * i : 0x60 + 4 * i], "big") for i in range(count + 1)]
    text = b"".join(unlzw(data[a:b]) for a, b in pairwise(offsets))
    for line in text.decode("ascii", "replace").splitlines():
        verse = re.match(r"([1-3]?[A-Za-z]+\d+):\d+ (.+)$", line)
        if verse:
            yield verse.group(1), verse.group(2)


def _dictd_entries(files: dict[str, bytes], name: str) -> Iterator[tuple[str, str]]:
    """(headword, entry text) of a dictd dictionary, in file order, each entry once."""
    import gzip

    data = gzip.decompress(files[f"usr/share/dictd/{name}.dict.dz"])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def number(code: str) -> int:
        value = 0
        for char in code:
            value = value * 64 + alphabet.index(char)
        return value

    spans: dict[tuple[int, int], str] = {}
    for line in files[f"usr/share/dictd/{name}.index"].decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not parts[0].startswith("00"):
            spans.setdefault((number(parts[1]), number(parts[2])), parts[0])
    for (start, length), headword in sorted(spans.items()):
        yield headword, data[start : start + length].decode("utf-8", "replace")


def _entry_body(entry: str) -> str:
    """An entry without its first line (the headword), braces kept as their content."""
    body = entry.split("\n", 1)[1] if "\n" in entry else ""
    return re.sub(r"[{}]", "", body)


def foldoc_units(files: dict[str, bytes]) -> Units:
    """FOLDOC entries as "headword: definition", without dates, URLs, subject tags, and without
    the entries FOLDOC took from the Jargon File (the hacker-lore category has those)."""
    for headword, entry in _dictd_entries(files, "foldoc"):
        if "Jargon File" in entry:
            continue
        body = _entry_body(entry)
        body = re.sub(r"\(\d{4}-\d{2}-\d{2}\)", " ", body)
        body = re.sub(r"\(?\b(?:https?|ftp)://\S+", " ", body)
        body = re.sub(r"<[a-z ,/-]+>", " ", body)
        yield "foldoc", f"{headword}: {_squash(body)}"


def jargon_units(files: dict[str, bytes]) -> Units:
    """Jargon File entries as "headword: definition", pronunciations and part of speech dropped."""
    for headword, entry in _dictd_entries(files, "jargon"):
        lines = _entry_body(entry).split("\n")
        body = "\n".join(lines[1:]) if lines and lines[0].startswith(" ") else "\n".join(lines)
        yield "jargon", f"{headword}: {_squash(body)}"


def gcide_units(files: dict[str, bytes]) -> Units:
    """GCIDE entries as "headword, part of speech: definitions", without pronunciations,
    bracketed etymologies and source tags such as ``[1913 Webster]``."""
    for _, entry in _dictd_entries(files, "gcide"):
        text = re.sub(r"\\[^\\\n]*\\", "", entry)
        text = re.sub(r"\[[^\]]*\]", "", text.replace("{", "").replace("}", ""))
        text = re.sub(r"\s+([,;.])", r"\1", _squash(text))
        yield "gcide", text


FORTUNE_THEMES = [
    "art",
    "education",
    "food",
    "humorists",
    "kids",
    "law",
    "love",
    "medicine",
    "men-women",
    "news",
    "people",
    "pets",
    "platitudes",
    "politics",
    "science",
    "songs-poems",
    "sports",
    "wisdom",
    "work",
]
"""The fortune files used: the non-technical themes (computing has its own categories)."""


def fortune_units(files: dict[str, bytes]) -> Units:
    """Cookies of :data:`FORTUNE_THEMES` (separated by ``%`` lines); document: the theme file.
    Cookies that are mostly not letters (ASCII art, tables) are dropped."""
    for theme in FORTUNE_THEMES:
        text = files.get(f"usr/share/games/fortunes/{theme}", b"").decode("utf-8", "replace")
        for cookie in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            squashed = _squash(cookie)
            letters = sum(c.isalpha() for c in squashed)
            if squashed and letters >= 0.5 * len(squashed):
                yield theme, squashed


@dataclass(frozen=True)
class Source:
    """One category of the real-text world: the Debian package it comes from and how to read it."""

    category: str
    package: str
    licence: str  # as stated in the package's /usr/share/doc/<package>/copyright
    wanted: Callable[[str], bool]  # which files of the package to read
    units: Callable[[dict[str, bytes]], Units]
    subject: str  # how a sentence names the category's topic (the zoo's evasions use it)


SOURCES: tuple[Source, ...] = (
    Source(
        "religion",
        "bible-kjv-text",
        "King James Version text: public domain (copyright expired); packaging GPL-2+",
        lambda name: name == "usr/lib/bible.data",
        bible_units,
        "the scriptures",
    ),
    Source(
        "computing",
        "dict-foldoc",
        "FOLDOC: GNU Free Documentation License 1.1 or later",
        lambda name: name.startswith("usr/share/dictd/foldoc."),
        foldoc_units,
        "computing",
    ),
    Source(
        "hacker-lore",
        "dict-jargon",
        "The Jargon File 4.4.7: public domain; packaging GPL-2+",
        lambda name: name.startswith("usr/share/dictd/jargon."),
        jargon_units,
        "hacker slang",
    ),
    Source(
        "lexicon",
        "dict-gcide",
        "GCIDE (from Webster's 1913, public domain): GPL-3+ (packaging GPL-2+)",
        lambda name: name.startswith("usr/share/dictd/gcide."),
        gcide_units,
        "the meaning of words",
    ),
    Source(
        "quotations",
        "fortunes",
        "BSD fortune data files: BSD licence (4.4BSD); cookies quoted from many authors",
        lambda name: name.startswith("usr/share/games/fortunes/"),
        fortune_units,
        "famous sayings",
    ),
)
CATEGORIES: tuple[str, ...] = tuple(s.category for s in SOURCES)
