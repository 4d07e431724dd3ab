"""Every model- or user-controlled string of an attestation (and of a repair record) is escaped in
both reports.

A real attestation (``tests/data/attestation_tampered.json``), with every optional string field the
typed reader knows filled in, has every free-text string value and every data key (category
names, library names, config keys) prefixed with a poison that tries to open HTML, a link, an
image and a code span, to break a table cell and to start a new line.  Only the fields that
``Attestation.from_json`` validates (``schema``, ``verdict``, ``comparison``) keep their value.

Both reports of the poisoned document are compared with those of the same document under a
harmless prefix: the markdown rendered to HTML (CommonMark with tables) and the HTML page must have
exactly the same elements, so no string added a tag, a link, an image, a table cell, a heading or
a list; no script element, no ``javascript:`` URL and no event-handler attribute appears; and the
poison is still there for the reader, as text.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from lmassay.attest.document import Attestation
from lmassay.attest.json_records import Record
from lmassay.report import html as report_html
from lmassay.report import render_html, render_markdown
from lmassay.report.plots import render_plots

DATA = Path(__file__).parent / "data"
# Tries raw HTML, a link, an image, a code span, a table cell and a new line.
POISON = "<script>alert(9)</script>|[x](javascript:alert(1))![i](http://e/x.png)`\n"
# Each starts a block (heading, quote, list, rule, code, comment) and tries to undo the escapes
# with its own backslashes.
BLOCK_POISONS = {
    start.strip() or "indent": f"{start}\\<script>alert(9)\\</script>\\|\\[x](javascript:alert(1))"
    "<img src=x onerror=alert(2)>&lt;b&gt;*e* _u_ ~~s~~ <http://e> www.e.com\\"
    for start in ("# ", "> ", "- ", "+ ", "1. ", "2) ", "=== ", "--- ", "    ", "<!-- ")
}
# In the HTML page, also a category name (a figure label, cut at 28 characters) that looks like
# the SVG element ids that each figure prefixes.
HTML_POISON = 'id="a" url(#b) </text>' + BLOCK_POISONS["#"] + POISON
VALIDATED = {"schema", "verdict", "comparison"}  # checked by Attestation.from_json
DATA_KEYS = {"categories", "libraries", "config"}  # objects whose keys are names from the data


# ----------------------------------------------------------------------------- the documents


def _record_class(hint: Any) -> type[Record] | None:
    """The Record class inside a field's type hint (``ModelInfo | None``, ``tuple[Evidence, ...]``)."""
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint
    for arg in typing.get_args(hint):
        found = _record_class(arg)
        if found is not None:
            return found
    return None


def _string_kind(hint: Any) -> str | None:
    """``"str"`` for a (possibly optional) string field, ``"strs"`` for a tuple of strings."""
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    if base is str or (isinstance(base, types.UnionType) and set(base.__args__) == {str, None}):
        return "str"
    if typing.get_origin(base) is tuple and typing.get_args(base) == (str, ...):
        return "strs"
    if isinstance(base, types.UnionType) and any(
        typing.get_origin(a) is tuple and typing.get_args(a) == (str, ...) for a in base.__args__
    ):
        return "strs"
    return None


def _fill(obj: dict[str, Any], cls: type[Record]) -> None:
    """Give ``obj`` every string field of ``cls`` it lacks, recursively, so that each is poisoned."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if f.name in Record._BOOKKEEPING or f.name in VALIDATED:
            continue
        kind, sub = _string_kind(hints[f.name]), _record_class(hints[f.name])
        if kind == "str" and obj.get(f.name) is None:
            obj[f.name] = f.name.replace("_", " ")
        elif kind == "strs" and not obj.get(f.name):
            obj[f.name] = [f"{f.name} one", f"{f.name} two"]
        elif sub is not None and isinstance(obj.get(f.name), dict):
            _fill(obj[f.name], sub)
        elif sub is not None and isinstance(obj.get(f.name), list):
            for item in obj[f.name]:
                _fill(item, sub)


def _poison(value: Any, prefix: str, key: str = "") -> Any:
    """``value`` with every free-text string (and data key) prefixed by ``prefix``."""
    if isinstance(value, str):
        return value if key in VALIDATED else prefix + value
    if isinstance(value, list):
        return [_poison(v, prefix) for v in value]
    if isinstance(value, dict):
        return {
            (prefix + k if key in DATA_KEYS else k): _poison(v, prefix, k) for k, v in value.items()
        }
    return value


def _attestation() -> dict[str, Any]:
    raw = json.loads((DATA / "attestation_tampered.json").read_text("utf-8"))
    _fill(raw, Attestation)
    raw["probes"]["categories"] = {c["name"]: c["n_samples"] for c in raw["categories"]}
    raw["provenance"]["config"]["probes"] = {"path": "probes/world.jsonl", "tags": ["a", "b"]}
    return raw


def _repair(att: dict[str, Any]) -> dict[str, Any]:
    """A repair record (``repair.json``) of the repaired flagged categories of ``att``."""
    flagged = list(att["flagged"])
    rows = [
        {
            "name": c["name"],
            "role": "repaired" if c["name"] in flagged else "collateral",
            "flagged_before": c["name"] in flagged,
            "flagged_after": False,
            "level_before": 0.5,
            "level_after": 0.02,
            "level_change": -0.48,
            "effect_before": 0.4,
            "effect_after": 0.01,
            "ppl_model_before": 20.0,
            "ppl_model_after": 12.0,
            "ppl_model_change": -8.0,
        }
        for c in att["categories"]
    ]
    return {
        "schema": "lmassay.repair/v1",
        "created": "2026-11-27T18:00:00+00:00",
        "mode": "fine-tune",
        "method": "kl",
        "categories": flagged,
        "attestation_before": {"path": "runs/before/attestation.json", "verdict": "tampered"},
        "training": {"steps": 100, "steps_run": 40, "stopped_early": True, "seconds": 12.5},
        "outcome": {
            "statistic": "mean_kl",
            "noise_floor": 0.05,
            "categories": rows,
            "repaired": flagged,
            "still_above_floor": flagged[:1],
            "newly_flagged": [rows[0]["name"]],
            "verdict_before": "tampered",
            "verdict_after": "consistent",
            "success": False,
            "message": "not repaired: cooking not back under the noise floor of 0.05",
        },
    }


@functools.cache
def _documents(prefix: str) -> tuple[Attestation, dict[str, Any]]:
    raw = _attestation()
    return Attestation.from_json(_poison(raw, prefix)), _poison(_repair(raw), prefix)


# ----------------------------------------------------------------------------- reading the output


class _Elements(HTMLParser):
    """The start tags (with attributes) and the text of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def _markdown_html(text: str) -> str:
    """The markdown as a CommonMark renderer with GitHub tables shows it (raw HTML passed through)."""
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def _unescaped_pipes(line: str) -> int:
    count, escaped = 0, False
    for char in line:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            count += 1
    return count


def _table_blocks(text: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not previous:
            blocks.append([])
        if is_row:
            blocks[-1].append(line)
        previous = is_row
    return blocks


_URL_ATTRIBUTES = {"href", "src", "xlink:href", "action", "formaction", "data", "poster", "style"}


def _assert_safe(elements: _Elements) -> None:
    for tag, attrs in elements.tags:
        assert tag not in {"script", "img", "iframe", "object", "embed", "a", "link"}, tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            if name in _URL_ATTRIBUTES:
                assert "javascript:" not in (value or "").lower(), (tag, name, value)


def _benign(poison: str) -> str:
    """A harmless prefix as long as ``poison`` (so that the same contexts are clipped)."""
    return ("plain text " * len(poison))[: len(poison)]


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(
    "poison", [POISON, *BLOCK_POISONS.values()], ids=["inline", *BLOCK_POISONS]
)
def test_markdown_escapes_every_string(poison: str) -> None:
    doc, repair = _documents(poison)
    text = render_markdown(doc, repair)
    reference = render_markdown(*_documents(_benign(poison)))

    # every table keeps its column count on every row, and as many rows as without poison
    blocks, expected_blocks = _table_blocks(text), _table_blocks(reference)
    assert len(blocks) == len(expected_blocks) == 2  # the repair table and the category table
    for block, expected in zip(blocks, expected_blocks, strict=True):
        assert len(block) == len(expected)
        assert {_unescaped_pipes(row) for row in block} == {_unescaped_pipes(expected[0])}, block

    # rendered, it has exactly the elements of the harmless document: nothing was injected
    rendered = _markdown_html(text)
    elements = _elements(rendered)
    assert [t for t, _ in elements.tags] == [
        t for t, _ in _elements(_markdown_html(reference)).tags
    ]
    _assert_safe(elements)
    assert "<script" not in rendered.lower()

    # and the reader still sees the strings as they are (on one line)
    shown = "".join(elements.text)
    first_line = poison.split("\n")[0]
    assert shown.count(first_line) >= 15  # category names, tokens, models, repair rows, …


def test_html_escapes_every_string(monkeypatch: pytest.MonkeyPatch) -> None:
    doc, repair = _documents(HTML_POISON)
    # The figures are drawn once (the slow part) and shown on both pages, so the comparison below
    # is about the page; the figures' own labels are checked by _assert_safe and below.
    plots = render_plots(doc)
    monkeypatch.setattr(report_html, "render_plots", lambda att: plots)
    html = render_html(doc, repair)
    reference = render_html(*_documents(_benign(HTML_POISON)))

    assert "<script" not in html.lower()  # the template has no script element
    elements, expected = _elements(html), _elements(reference)
    assert [t for t, _ in elements.tags] == [t for t, _ in expected.tags]
    assert [sorted(dict(a)) for _, a in elements.tags] == [
        sorted(dict(a)) for _, a in expected.tags
    ]
    _assert_safe(elements)
    shown = "".join(elements.text)
    assert shown.count(HTML_POISON.split("\n")[0]) >= 15  # shown as text, not markup
    figures = "".join(_elements("".join(plots.values())).text)
    assert figures.count(HTML_POISON[:27] + "…") >= 2 * len(doc.categories)  # labels as written
