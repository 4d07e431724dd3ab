"""Frozen dataclasses that read and write JSON objects exactly, with one error for a bad document.

A :class:`Record` subclass declares its JSON keys as ``kw_only`` dataclass fields whose type is
``Annotated[<type>, <parser>]``; a field without a default is required.  :meth:`Record.parse`
checks every field and collects every problem (``"categories[2].p_value is "x", not a number"``)
so that the caller raises once; :meth:`Record.to_json` writes the object back with its keys in
the order read, unknown keys (``extra``) kept, and numbers as read.

A parser is a function ``(value, path, problems) -> typed value``: when the value is wrong it
appends ``"<path> <what is wrong>"`` to ``problems`` (and returns anything).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar, get_type_hints

from lmassay.digests import Digest

Parser = Callable[[Any, str, list[str]], Any]
R = TypeVar("R", bound="Record")
E = TypeVar("E", bound=Enum)


@dataclass(frozen=True)
class Record:
    """A JSON object: known fields, unknown ones (``extra``) and the key order it was read in.

    ``keys`` is empty for a record built in code: :meth:`to_json` then writes every known field in
    declaration order, then the extras.  A record read from JSON writes its keys in the order read;
    a known field it did not hold is written only if it has been given a non-default value since.
    """

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    keys: tuple[str, ...] = field(default=(), kw_only=True, repr=False, compare=False)

    _BOOKKEEPING: ClassVar[frozenset[str]] = frozenset({"extra", "keys"})

    @classmethod
    def parse(cls: type[R], raw: Any, path: str, problems: list[str]) -> R | None:
        """The record from ``raw``, or None after appending what is wrong to ``problems``."""
        if not isinstance(raw, Mapping):
            wrong(problems, path or "the document", raw, "an object")
            return None
        before = len(problems)
        specs = _specs(cls)
        missing = [name for name, (_, required) in specs.items() if required and name not in raw]
        if missing:
            where = path or "the document"
            problems.append(f"{where} lacks required key(s) {', '.join(sorted(missing))}")
        values = {
            name: parse(raw[name], f"{path}.{name}" if path else name, problems)
            for name, (parse, _) in specs.items()
            if name in raw
        }
        if len(problems) > before:
            return None
        extra = {key: value for key, value in raw.items() if key not in specs}
        return cls(**values, extra=extra, keys=tuple(raw))

    def holds(self, name: str) -> bool:
        """Whether the JSON object holds the key ``name`` (one built in code holds all it knows)."""
        return not self.keys or name in self.keys

    def to_json(self) -> dict[str, Any]:
        """The JSON object, exactly as read (see the class docstring)."""
        defaults = _defaults(type(self))
        out: dict[str, Any] = {}
        for key in self.keys:
            if key in defaults:
                out[key] = dump(getattr(self, key))
            elif key in self.extra:
                out[key] = dump(self.extra[key])
        for name, default in defaults.items():
            value = getattr(self, name)
            if name not in out and (not self.keys or value != default):
                out[name] = dump(value)
        for key, value in self.extra.items():
            out.setdefault(key, dump(value))
        return out


_SPECS: dict[type, dict[str, tuple[Parser, bool]]] = {}
_DEFAULTS: dict[type, dict[str, Any]] = {}


def _specs(cls: type) -> dict[str, tuple[Parser, bool]]:
    """JSON key -> (parser, required), in declaration order (worked out once per class)."""
    if cls in _SPECS:
        return _SPECS[cls]
    hints = get_type_hints(cls, include_extras=True)
    out = {}
    for f in fields(cls):
        if f.name not in Record._BOOKKEEPING:
            required = f.default is MISSING and f.default_factory is MISSING
            out[f.name] = (hints[f.name].__metadata__[0], required)
    _SPECS[cls] = out
    return out


def _defaults(cls: type) -> dict[str, Any]:
    """JSON key -> default value (``MISSING`` for a required field), in declaration order."""
    if cls in _DEFAULTS:
        return _DEFAULTS[cls]
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in Record._BOOKKEEPING:
            factory = f.default_factory
            out[f.name] = factory() if factory is not MISSING else f.default
    _DEFAULTS[cls] = out
    return out


def dump(value: Any) -> Any:
    """A typed value as plain JSON values (records, enums, digests, tuples, mappings)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Digest):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [dump(item) for item in value]
    if isinstance(value, Mapping):
        return {key: dump(item) for key, item in value.items()}
    return value


# ---------------------------------------------------------------------------------------- parsers


def wrong(problems: list[str], path: str, value: Any, expected: str) -> None:
    """Record that ``path`` holds ``value`` where ``expected`` was wanted."""
    shown = json.dumps(value, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    problems.append(f"{path} is {shown}, not {expected}")


def text(value: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, str):
        wrong(problems, path, value, "a string")
    return value


def truth(value: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, bool):
        wrong(problems, path, value, "true or false")
    return value


def integer(value: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        wrong(problems, path, value, "an integer")
    return value


def number(value: Any, path: str, problems: list[str]) -> Any:
    """A JSON number, kept as read (an int stays an int, so it is written back the same)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        wrong(problems, path, value, "a number")
    return value


def anything(value: Any, path: str, problems: list[str]) -> Any:
    return value


def optional(parse: Parser) -> Parser:
    """``parse``, with JSON null allowed (None)."""
    return lambda value, path, problems: None if value is None else parse(value, path, problems)


def items(parse: Parser) -> Parser:
    """A JSON list whose items ``parse`` accepts, as a tuple."""

    def read(value: Any, path: str, problems: list[str]) -> Any:
        if not isinstance(value, list):
            wrong(problems, path, value, "a list")
            return ()
        return tuple(parse(item, f"{path}[{i}]", problems) for i, item in enumerate(value))

    return read


def fixed(*parsers: Parser, what: str) -> Parser:
    """A JSON list of exactly ``len(parsers)`` items, each read by its parser, as a tuple."""

    def read(value: Any, path: str, problems: list[str]) -> Any:
        if not isinstance(value, list) or len(value) != len(parsers):
            wrong(problems, path, value, what)
            return None
        return tuple(
            p(v, f"{path}[{i}]", problems)
            for i, (p, v) in enumerate(zip(parsers, value, strict=True))
        )

    return read


def mapping(parse: Parser) -> Parser:
    """A JSON object whose values ``parse`` accepts, as a dict in the order read."""

    def read(value: Any, path: str, problems: list[str]) -> Any:
        if not isinstance(value, dict):
            wrong(problems, path, value, "an object")
            return {}
        return {key: parse(item, f"{path}.{key}", problems) for key, item in value.items()}

    return read


def enum_of(kind: type[E]) -> Parser:
    """One of the values of the enum ``kind``."""
    allowed = [member.value for member in kind]

    def read(value: Any, path: str, problems: list[str]) -> Any:
        if value not in allowed:
            problems.append(f"{path} {value!r} is not one of {', '.join(map(str, allowed))}")
            return None
        return kind(value)

    return read


def record(kind: type[Record]) -> Parser:
    """A nested JSON object read as the record ``kind``."""
    return lambda value, path, problems: kind.parse(value, path, problems)


def digest(value: Any, path: str, problems: list[str]) -> Digest | str | None:
    """A ``{"algorithm", "value"}`` object as a :class:`Digest` (or a plain string, kept as is)."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, Mapping)
        and list(value) == ["algorithm", "value"]
        and all(isinstance(v, str) for v in value.values())
    ):
        return Digest(value["algorithm"], value["value"])
    wrong(problems, path, value, 'a digest {"algorithm": "…", "value": "…"}')
    return None
