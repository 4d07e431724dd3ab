"""Rebuild ``offline.jsonl``, the shipped public-domain suite, from Debian text packages.

Maintainers only; lmassay reads the shipped file. Run::

    python -m lmassay.suites._build_offline DEBS_DIR      # prints the digest, writes offline.jsonl

``DEBS_DIR`` holds the ``.deb`` files of :data:`PACKAGES` (``apt-get download bible-kjv-text
dict-jargon dict-devil dict-gcide``). Only public-domain text is used:

=====================  ==============  =========================================================
category               package         text (licence as in the package's copyright file)
=====================  ==============  =========================================================
scripture-law          bible-kjv-text  King James Bible, Genesis-Deuteronomy (public domain)
scripture-history      bible-kjv-text  Joshua-Esther
scripture-poetry       bible-kjv-text  Job-Song of Solomon
scripture-prophets     bible-kjv-text  Isaiah-Malachi
scripture-gospels      bible-kjv-text  Matthew-Acts
scripture-epistles     bible-kjv-text  Romans-Revelation
hacker-lore            dict-jargon     The Jargon File 4.4.7 (public domain)
satire                 dict-devil      Ambrose Bierce, The Devil's Dictionary, 1911 (public domain)
lexicon-1913           dict-gcide      GCIDE entries whose every source tag is [1913 Webster]
                                       (Webster's 1913, public domain; GCIDE's own additions,
                                       which are GPL, are left out)
=====================  ==============  =========================================================

Consecutive units (verses of one chapter, dictionary entries) are packed into paragraphs of 40-110
words (:func:`lmassay.world.real_text.pack_units`); each category's paragraphs are shuffled with
``random.Random(f"{SEED}:{category}")`` and the first :data:`PER_CATEGORY` kept.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from lmassay.attest.probes import ProbeSample, probes_digest, write_probes_jsonl
from lmassay.world.debian_text import deb_files
from lmassay.world.real_text import pack_units
from lmassay.world.real_text_sources import _dictd_entries, _entry_body, _squash, bible_units

PER_CATEGORY = 40
SEED = 0
PACKAGES = ("bible-kjv-text", "dict-jargon", "dict-devil", "dict-gcide")
_BOOK_GROUPS = {
    "scripture-law": ("Ge", "Deu"),
    "scripture-history": ("Josh", "Est"),
    "scripture-poetry": ("Job", "SSol"),
    "scripture-prophets": ("Isa", "Mal"),
    "scripture-gospels": ("Mat", "Acts"),
    "scripture-epistles": ("Rom", "Rev"),
}

Units = Iterator[tuple[str, str]]


def _scripture(files: dict[str, bytes]) -> dict[str, list[tuple[str, str]]]:
    by_group: dict[str, list[tuple[str, str]]] = {g: [] for g in _BOOK_GROUPS}
    books: list[str] = []
    verses = list(bible_units(files))
    for doc, _ in verses:
        book = re.match(r"[1-3]?[A-Za-z]+", doc)
        if book and (not books or books[-1] != book.group(0)):
            books.append(book.group(0))
    group_of: dict[str, str] = {}
    for group, (first, last) in _BOOK_GROUPS.items():
        for name in books[books.index(first) : books.index(last) + 1]:
            group_of[name] = group
    for doc, verse in verses:
        found = re.match(r"[1-3]?[A-Za-z]+", doc)
        if found:
            by_group[group_of[found.group(0)]].append((doc, verse))
    return by_group


def _jargon(files: dict[str, bytes]) -> Units:
    for headword, entry in _dictd_entries(files, "jargon"):
        lines = _entry_body(entry).split("\n")
        body = "\n".join(lines[1:]) if lines and lines[0].startswith(" ") else "\n".join(lines)
        yield "jargon", f"{headword}: {_squash(body)}"


def _devil(files: dict[str, bytes]) -> Units:
    for _, entry in _dictd_entries(files, "devil"):
        text = _squash(entry)
        if len(text.split()) >= 4:
            yield "devil", text


def _webster(files: dict[str, bytes]) -> Units:
    for _, entry in _dictd_entries(files, "gcide"):
        tags = re.findall(r"\[([^\]]*)\]", entry)
        sources = [t for t in tags if re.fullmatch(r"1913 Webster|[A-Z][A-Za-z]+ ?\w*", t)]
        if "1913 Webster" not in tags or any(t != "1913 Webster" for t in sources):
            continue
        text = re.sub(r"\\[^\\\n]*\\", "", entry)
        text = re.sub(r"\[[^\]]*\]", "", text.replace("{", "").replace("}", ""))
        yield "gcide", re.sub(r"\s+([,;.])", r"\1", _squash(text))


_DICTIONARIES: dict[str, tuple[str, str, Callable[[dict[str, bytes]], Units]]] = {
    "hacker-lore": ("dict-jargon", "usr/share/dictd/jargon.", _jargon),
    "satire": ("dict-devil", "usr/share/dictd/devil.", _devil),
    "lexicon-1913": ("dict-gcide", "usr/share/dictd/gcide.", _webster),
}


def _starts_with(prefix: str) -> Callable[[str], bool]:
    return lambda name: name.startswith(prefix)


def _deb(debs: Path, package: str) -> Path:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise SystemExit(f"no {package}_*.deb in {debs} (apt-get download {package})")
    return found[-1]


def build(debs: Path) -> list[ProbeSample]:
    """The offline suite's samples from the packages in ``debs``."""
    units: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    bible = deb_files(_deb(debs, "bible-kjv-text"), lambda n: n == "usr/lib/bible.data")
    for group, verses in _scripture(bible).items():
        units[group] = ("bible-kjv-text", verses)
    for category, (package, prefix, reader) in _DICTIONARIES.items():
        files = deb_files(_deb(debs, package), _starts_with(prefix))
        units[category] = (package, list(reader(files)))
    samples = []
    for category, (package, pairs) in sorted(units.items()):
        paragraphs = pack_units(pairs)
        random.Random(f"{SEED}:{category}").shuffle(paragraphs)
        for number, text in enumerate(paragraphs[:PER_CATEGORY]):
            samples.append(ProbeSample(f"{category}-{number:03d}", category, text, package))
    return samples


def main(argv: list[str]) -> None:
    samples = build(Path(argv[0]))
    out = Path(__file__).with_name("offline.jsonl")
    write_probes_jsonl(samples, out)
    print(f"{out}: {len(samples)} samples, {out.stat().st_size:,} bytes, {probes_digest(samples)}")


if __name__ == "__main__":
    main(sys.argv[1:])
