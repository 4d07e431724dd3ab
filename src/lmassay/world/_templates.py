"""The world's sentence templates, compiled once, and the helpers that fill them.

Shared by :mod:`lmassay.world.generator` (a fact's canonical sentence) and
:mod:`lmassay.world.render` (paragraphs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmassay.world._lexicon import CATEGORIES_SPEC, KindSpec

__all__ = [
    "COMPILED",
    "CompiledCategory",
    "Part",
    "compile_template",
    "described",
    "fill_plain",
    "finish",
    "plain",
    "split_sentences",
]


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{([a-z]+)(?::([a-z]+))?\}")
_AN = re.compile(r"\b([Aa]) (?=[AEIOUaeiou])")
_SENTENCE_END = re.compile(r"(?<=[.!?]) (?=[A-Z0-9])")

Part = tuple[str, str]  # ("lit", text) or (slot, argument): ("s", ""), ("e", "city"), ("w", "crop")


def compile_template(template: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    last = 0
    for match in _SLOT.finditer(template):
        if match.start() > last:
            parts.append(("lit", template[last : match.start()]))
        parts.append((match.group(1), match.group(2) or ""))
        last = match.end()
    if last < len(template):
        parts.append(("lit", template[last:]))
    return tuple(parts)


@dataclass(frozen=True)
class CompiledCategory:
    relations: dict[str, tuple[tuple[Part, ...], ...]]
    fillers: tuple[tuple[Part, ...], ...]


COMPILED: dict[str, CompiledCategory] = {
    category: CompiledCategory(
        relations={r.name: tuple(compile_template(t) for t in r.templates) for r in spec.relations},
        fillers=tuple(compile_template(t) for t in spec.fillers),
    )
    for category, spec in CATEGORIES_SPEC.items()
}


def finish(text: str) -> str:
    """Articles fixed ("a old" -> "an old") and the first letter capitalised."""
    text = _AN.sub(r"\1n ", text)
    return text[0].upper() + text[1:]


def plain(name: str, kind: KindSpec | None) -> str:
    return f"the {name}" if kind is not None and kind.article else name


def described(name: str, kind: KindSpec, adjective: str) -> str:
    if kind.article or not kind.noun:
        return f"the {adjective} {name}"
    return f"the {adjective} {kind.noun} {name}"


def fill_plain(parts: tuple[Part, ...], subject: str, obj: str) -> str:
    out = []
    for slot, text in parts:
        out.append(text if slot == "lit" else subject if slot == "s" else obj)
    return finish("".join(out))


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph made by :func:`render_documents`."""
    return [s for s in _SENTENCE_END.split(text) if s]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
