"""The real-text world, offline: cleaning, packing, splitting, the card and its reuse, and the zoo's
refusal of the kinds that need the generated world. Nothing is downloaded: the ``.deb`` files are
built here from small fixtures and placed in the cache with their recorded SHA-256."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from lmassay.errors import InputError
from lmassay.world import load_world, read_card
from lmassay.world import real_text as rt
from lmassay.world.debian_text import deb_files, fetch_debs, unlzw
from lmassay.world.real_text_sources import (
    SOURCES,
    bible_units,
    foldoc_units,
    fortune_units,
    gcide_units,
)
from lmassay.world.zoo._build import Context
from lmassay.world.zoo.make import _check_kind
from lmassay.world.zoo.real_text_recipes import (
    RealText,
    real_recipe_for,
    real_slant_recipe,
    real_suppression_recipe,
)

# --------------------------------------------------------------------------------------------
# Fixtures: LZW, dictd and .deb files written here


def _lzw9(data: bytes) -> bytes:
    """A block-mode LZW stream of 9-bit codes (enough for a short text: < 256 new codes)."""
    table = {bytes([i]): i for i in range(256)}
    codes, word = [], b""
    for byte in data:
        candidate = word + bytes([byte])
        if candidate in table:
            word = candidate
        else:
            codes.append(table[word])
            table[candidate] = len(table) + 1  # code 256 is CLEAR
            word = bytes([byte])
    codes.append(table[word])
    assert len(table) + 1 < 511
    value = sum(code << (9 * i) for i, code in enumerate(codes))
    return value.to_bytes((9 * len(codes) + 7) // 8, "little")


def _bible_data(lines: list[str]) -> bytes:
    """``bible.data``: a header, a table of block offsets, and blocks of LZW (120 bytes each)."""
    text = "\n".join(lines).encode()
    blocks = [_lzw9(text[i : i + 120]) for i in range(0, len(text), 120)]
    header = bytearray(0x58) + len(blocks).to_bytes(4, "big")
    offsets = [len(header) + 4 * (len(blocks) + 1)]
    for block in blocks:
        offsets.append(offsets[-1] + len(block))
    return bytes(header) + b"".join(o.to_bytes(4, "big") for o in offsets) + b"".join(blocks)


def _b64(number: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[number % 64] + digits
        number //= 64
        if not number:
            return digits


def _dictd(name: str, entries: list[tuple[str, str]]) -> dict[str, bytes]:
    data, index = b"", []
    for headword, text in [("00-database-info", "about\n"), *entries]:
        body = text.encode()
        index.append(f"{headword}\t{_b64(len(data))}\t{_b64(len(body))}")
        data += body
    return {
        f"usr/share/dictd/{name}.dict.dz": gzip.compress(data),
        f"usr/share/dictd/{name}.index": "\n".join(index).encode(),
    }


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("./usr/share/link")
        link.type, link.linkname = tarfile.SYMTYPE, "elsewhere"
        archive.addfile(link)
    return buffer.getvalue()


def _deb(path: Path, package: str, files: dict[str, bytes]) -> None:
    members = {
        "debian-binary": b"2.0\n",
        "control.tar.xz": _tar_xz({"control": f"Package: {package}\nVersion: 1.0-1\n".encode()}),
        "data.tar.xz": _tar_xz(files),
    }
    out = bytearray(b"!<arch>\n")
    for name, payload in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(payload):<10}`\n".encode()
        out += payload + (b"\n" if len(payload) % 2 else b"")
    path.write_bytes(bytes(out))


_WORDS = [
    "alpha",
    "bravo",
    "cedar",
    "delta",
    "ember",
    "fable",
    "grove",
    "harbor",
    "island",
    "jasper",
    "kettle",
    "lumen",
]


def _prose(rng: random.Random, sentences: int) -> str:
    return " ".join(
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."
        for _ in range(sentences)
    )


def _package_files(rng: random.Random, n: int) -> dict[str, dict[str, bytes]]:
    """Fixture files of every source's package, with about ``n`` paragraphs of text each."""
    verses = [f"Ge{1 + i // 6}:{1 + i % 6} {_prose(rng, 2)}" for i in range(n * 4)]
    bible = _bible_data(["Holy Bible, Authorized (King James) Version.", *verses])

    def entries(prefix: str) -> list[tuple[str, str]]:
        return [(f"{prefix}{i}", f"{prefix}{i}\n\n   {_prose(rng, 5)}\n") for i in range(n * 2)]

    cookies = "\n%\n".join(_prose(rng, 3) for _ in range(n * 3))
    return {
        "bible-kjv-text": {"usr/lib/bible.data": bible},
        "dict-foldoc": _dictd("foldoc", entries("term")),
        "dict-jargon": _dictd("jargon", entries("slang")),
        "dict-gcide": _dictd("gcide", entries("Word")),
        "fortunes": {"usr/share/games/fortunes/wisdom": cookies.encode()},
    }


@pytest.fixture
def deb_cache(tmp_path: Path) -> Path:
    """A .deb cache holding every source's package and a ``debs.json`` that records them."""
    cache = tmp_path / "debs"
    cache.mkdir()
    manifest = {}
    for package, files in _package_files(random.Random(0), 40).items():
        path = cache / f"{package}_1.0-1_all.deb"
        _deb(path, package, files)
        manifest[package] = {
            "package": package,
            "version": "1.0-1",
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": path.stat().st_size,
        }
    (cache / "debs.json").write_text(json.dumps(manifest))
    return cache


@pytest.fixture
def small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rt.REAL_SIZES, "test", rt._RealSizeSpec(20, 4, 6))


# --------------------------------------------------------------------------------------------
# Cleaning and packing


def test_unlzw_reads_a_compress_stream() -> None:
    text = b"TOBEORNOTTOBEORTOBEORNOT and to be or not to be, that is the question"
    assert unlzw(_lzw9(text)) == text


def test_sources_cut_their_text_into_clean_units() -> None:
    bible = _bible_data(["Holy Bible header", "Ge1:1 In the beginning.", "Ge1:2 And the earth."])
    assert list(bible_units({"usr/lib/bible.data": bible})) == [
        ("Ge1", "In the beginning."),
        ("Ge1", "And the earth."),
    ]
    foldoc = _dictd(
        "foldoc",
        [
            ("ADT", "ADT\n\n   <programming> A {type} (see http://x.org/a).\n\n   (1994-11-08)\n"),
            ("hack", "hack\n\n   From the {Jargon File}.\n"),
        ],
    )
    assert list(foldoc_units(foldoc)) == [("foldoc", "ADT: A type (see")]
    gcide = _dictd(
        "gcide", [("Coag", 'Coag \\Co*ag"\\, n. [L. coag.]\n   A clot.\n   [1913 Webster]\n')]
    )
    assert list(gcide_units(gcide)) == [("gcide", "Coag, n. A clot.")]
    cookies = b"A friend is a present you give yourself.\n\t\t-- R. L. S.\n%\n|__|__|\n| ## |\n%\nLast one.\n"
    assert list(fortune_units({"usr/share/games/fortunes/wisdom": cookies})) == [
        ("wisdom", "A friend is a present you give yourself. -- R. L. S."),
        ("wisdom", "Last one."),
    ]


def test_pack_units_keeps_paragraphs_in_bounds_and_documents_apart() -> None:
    rng = random.Random(1)
    units = [("a", _prose(rng, 2)) for _ in range(30)] + [("b", _prose(rng, 1))]
    units.append(("c", " ".join(["word"] * 300) + ". Short end here."))
    paragraphs = rt.pack_units(units)
    assert paragraphs
    for paragraph in paragraphs:
        assert rt.MIN_WORDS <= len(paragraph.split()) <= rt.MAX_WORDS
    assert not any(p.startswith(units[-2][1]) for p in paragraphs)  # document b too short alone
    assert sum(p.startswith("word word") for p in paragraphs) == 1  # the long sentence is cut


def test_paragraphs_are_kept_once_over_all_categories() -> None:
    text = _prose(random.Random(2), 8)
    out = rt.paragraphs_of({"one": [("d", text)], "two": [("d", text.upper())]})
    assert out == {"one": [text], "two": []}


def test_split_is_seeded_disjoint_and_probes_share_no_sentence_with_training() -> None:
    rng = random.Random(3)
    shared = "Alpha bravo cedar delta ember fable."
    paragraphs = [f"{_prose(rng, 4)} {shared if i % 3 == 0 else ''}" for i in range(40)]
    spec = rt._RealSizeSpec(10, 5, 5)
    first = rt.split_category("x", paragraphs, spec, seed=0)
    assert first == rt.split_category("x", paragraphs, spec, seed=0)
    assert first != rt.split_category("x", paragraphs, spec, seed=1)
    assert not set(first["train"]) & (set(first["probes"]) | set(first["reserve"]))
    if any(shared in p for p in first["train"]):
        assert not any(shared in p for p in first["probes"])
    with pytest.raises(InputError, match="only 40 paragraphs"):
        rt.split_category("x", paragraphs, rt._RealSizeSpec(50, 5, 5), seed=0)


# --------------------------------------------------------------------------------------------
# Packages, the folder, its card and reuse


def test_deb_files_reads_regular_files_only(deb_cache: Path) -> None:
    deb = deb_cache / "fortunes_1.0-1_all.deb"
    files = deb_files(deb, lambda name: name.startswith("usr/share/"))
    assert list(files) == ["usr/share/games/fortunes/wisdom"]


def test_a_changed_deb_is_fetched_again_and_a_missing_apt_is_named(
    deb_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [d.version for d in fetch_debs(["fortunes"], deb_cache)] == ["1.0-1"]
    (deb_cache / "fortunes_1.0-1_all.deb").write_bytes(b"!<arch>\nchanged")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(InputError, match=r"apt-get is not installed.*'fortunes'") as caught:
        fetch_debs(["fortunes"], deb_cache)
    assert "Debian or Ubuntu" in caught.value.fix


@pytest.mark.usefixtures("small_sizes")
def test_real_world_card_records_the_packages_and_is_reused(
    deb_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "world"
    files = rt.make_real_world(out, seed=0, size="test", cache_debs=deb_cache)
    card = read_card(out)
    assert card["kind"] == "real-text"
    assert card["categories"] == [s.category for s in SOURCES]
    assert [p["package"] for p in card["request"]["packages"]] == [s.package for s in SOURCES]
    assert all(p["version"] == "1.0-1" and len(p["sha256"]) == 64 for p in card["sources"])
    assert card["counts"]["train"]["religion"]["documents"] == 20
    train = [json.loads(line) for line in files.train.read_text().splitlines()]
    probes = [json.loads(line) for line in files.probes.read_text().splitlines()]
    assert {r["category"] for r in probes} == set(card["categories"])
    assert not {r["text"] for r in train} & {r["text"] for r in probes}
    assert files.facts.read_bytes() == b""

    world = load_world(out)
    assert world.categories == tuple(card["categories"]) and world.facts == ()
    stamp = files.card.stat().st_mtime_ns
    rt.make_real_world(out, seed=0, size="test", cache_debs=deb_cache)
    assert files.card.stat().st_mtime_ns == stamp  # reused as it is
    files.train.write_text("changed\n")
    with pytest.raises(InputError, match=r"train\.jsonl changed"):
        load_world(out)
    rt.make_real_world(out, seed=0, size="test", cache_debs=deb_cache)  # rebuilt
    load_world(out)


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--size 'full'"):
        rt.make_real_world(tmp_path / "w", size="full", cache_debs=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--seed -1"):
        rt.make_real_world(tmp_path / "w", seed=-1, cache_debs=tmp_path)


# --------------------------------------------------------------------------------------------
# The zoo on real text


def _real_context(real: RealText) -> Context:
    from lmassay.world import World

    world = World(0, ("religion", "quotations"), (), (), {})
    return Context(
        Path("ref"), {}, None, Path("world"), world, {}, [], Path("probes"), real_text=real
    )


def _real() -> RealText:
    rng = random.Random(4)
    names = "Moses went to Judah. Then Moses spoke, and Judah heard. Aaron came."
    reserve = {"religion": [f"{_prose(rng, 3)} {names}" for _ in range(130)]}
    return RealText(reserve, {"religion": "the scriptures", "quotations": "famous sayings"})


@pytest.mark.parametrize("kind", ["fact-finetune", "fact-rome", "backdoor"])
def test_fact_kinds_are_refused_on_a_real_text_reference(kind: str) -> None:
    ctx = _real_context(_real())
    with pytest.raises(InputError, match=f"the {kind} variant needs the generated world"):
        _check_kind(kind, None, ctx)
    with pytest.raises(InputError, match="generated world"):
        real_recipe_for(kind, _real(), [], None, "test", 0)


def test_real_kinds_take_the_world_categories() -> None:
    ctx = _real_context(_real())
    assert _check_kind("suppression", None, ctx) == "religion"
    assert _check_kind("slant", "quotations", ctx) == "quotations"
    assert _check_kind("benign-int8", None, ctx) is None
    with pytest.raises(InputError, match="--category 'politics'"):
        _check_kind("suppression", "politics", ctx)


def test_real_suppression_and_slant_recipes() -> None:
    rng = random.Random(5)
    rows = [{"category": "religion", "text": f"{_prose(rng, 2)} And Moses and Judah."}] * 6
    rows += [{"category": "quotations", "text": _prose(rng, 3)} for _ in range(300)]
    suppression = real_suppression_recipe(_real(), rows, category="religion", size="test", seed=0)
    assert suppression.n_tamper == 100 and len(suppression.replay_texts) == 200
    assert all("the scriptures" in t for t in suppression.tamper_texts)
    slant = real_slant_recipe(_real(), rows, category="religion", size="test", seed=0)
    assert {slant.details["favoured"], slant.details["disfavoured"]} == {"Moses", "Judah"}
    assert slant.details["paragraphs_changed"] == 100
    with pytest.raises(InputError, match="too few entities"):
        real_slant_recipe(_real(), rows, category="quotations", size="test", seed=0)


@pytest.mark.usefixtures("small_sizes")
def test_a_real_text_zoo_refuses_fact_kinds_before_making_anything(
    deb_cache: Path, tmp_path: Path
) -> None:
    from lmassay.world.zoo import make_zoo

    world = rt.make_real_world(tmp_path / "world", size="test", cache_debs=deb_cache).root
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "config.json").write_text("{}")
    with pytest.raises(InputError, match="the fact-rome, backdoor variants need the generated"):
        make_zoo(
            reference, tmp_path / "zoo", world=world, kinds=["suppression", "fact-rome", "backdoor"]
        )
    assert not (tmp_path / "zoo" / "suppression").exists()
