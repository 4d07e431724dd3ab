"""``reuse_or_build``: a folder is reused when its card records the same request, else rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmassay.cached_build import matching_card, reuse_or_build
from lmassay.errors import InputError
from lmassay.progress import NullProgress


class Lines(NullProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _builder(calls: list[Path], request: dict[str, object]):
    def build(target: Path) -> dict[str, object]:
        calls.append(target)
        (target / "data.txt").write_text(f"made for {request}")
        assert not (target / "card.json").exists()  # the card comes last
        return {"request": request, "note": len(calls)}

    return build


def test_reused_when_the_request_matches_rebuilt_when_not(tmp_path: Path) -> None:
    folder, calls, lines = tmp_path / "thing", [], Lines()
    request = {"format": "x/1", "seed": 0}
    first = reuse_or_build(
        folder, request, _builder(calls, request), card_name="card.json",
        needed=("data.txt",), what="thing", progress=lines,
    )  # fmt: skip
    assert not first.reused and first.card == {"request": request, "note": 1}
    assert json.loads((folder / "card.json").read_text()) == first.card
    again = reuse_or_build(
        folder, request, _builder(calls, request), card_name="card.json",
        needed=("data.txt",), what="thing", progress=lines,
    )  # fmt: skip
    assert again.reused and again.card == first.card and len(calls) == 1
    assert lines.lines == [f"making the thing in {folder}", f"reusing the thing in {folder}"]
    assert calls[0].parent == tmp_path and calls[0].name.startswith(".thing.partial-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]  # staged, then put in place

    other = {"format": "x/1", "seed": 1}
    rebuilt = reuse_or_build(folder, other, _builder(calls, other), card_name="card.json")
    assert not rebuilt.reused and len(calls) == 2
    assert (folder / "data.txt").read_text() == f"made for {other}"


def test_a_missing_needed_file_or_a_broken_card_means_rebuild(tmp_path: Path) -> None:
    tmp_path = tmp_path / "thing"
    request = {"seed": 0}
    calls: list[Path] = []
    reuse_or_build(tmp_path, request, _builder(calls, request), card_name="card.json")
    assert matching_card(tmp_path, request, card_name="card.json", needed=("data.txt",))
    (tmp_path / "data.txt").unlink()
    assert matching_card(tmp_path, request, card_name="card.json", needed=("data.txt",)) is None
    (tmp_path / "card.json").write_text("{not json")
    assert matching_card(tmp_path, request, card_name="card.json") is None
    (tmp_path / "card.json").write_text(json.dumps(request))
    assert matching_card(tmp_path, request, card_name="card.json", key=None) == request


def test_a_half_made_folder_is_never_reused_and_the_old_one_is_kept(tmp_path: Path) -> None:
    tmp_path = tmp_path / "thing"
    request = {"seed": 0}

    def crash(target: Path) -> dict[str, object]:
        (target / "data.txt").write_text("half")
        raise KeyboardInterrupt

    calls: list[Path] = []
    reuse_or_build(tmp_path, request, _builder(calls, request), card_name="card.json")
    with pytest.raises(KeyboardInterrupt):
        reuse_or_build(tmp_path, {"seed": 1}, crash, card_name="card.json")
    assert json.loads((tmp_path / "card.json").read_text())["request"] == request  # the old one
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == ["thing"]  # no staging left
    with pytest.raises(KeyboardInterrupt):
        reuse_or_build(tmp_path, {"seed": 1}, crash, card_name="card.json")
    assert reuse_or_build(tmp_path, request, _builder(calls, request), card_name="card.json").reused


def test_refuses_a_file_and_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        reuse_or_build(tmp_path / "file", {}, lambda t: {"request": {}}, card_name="c.json")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not made by lmassay"):
        reuse_or_build(foreign, {}, lambda t: {"request": {}}, card_name="c.json")
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_card_without_its_request_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not record the request"):
        reuse_or_build(
            tmp_path / "thing", {"seed": 0}, lambda t: {"request": {}}, card_name="c.json"
        )
