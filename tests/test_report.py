"""Tests of the report renderer (lmassay.report).

Golden files: the markdown summaries are compared with tests/data/golden/report_*.md.  After an
intended change of the markdown output, regenerate them and review the diff:

    LMASSAY_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_report.py -q
    git diff tests/data/golden/

The HTML page is not golden-tested byte for byte (the SVG figures depend on the matplotlib
version); its structure is checked instead.
"""

from __future__ import annotations

import copy
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from attestation_check import assert_valid_attestation
from lmassay.attest.document import Attestation, Verdict
from lmassay.errors import InputError
from lmassay.report import render_html, render_markdown, write_report
from lmassay.report.markdown import fmt_ci, fmt_num, fmt_p, fmt_prob, short_digest, show_token
from lmassay.report.plots import distribution_plot, perplexity_plot, render_plots, statistic_plot

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
REGEN = os.environ.get("LMASSAY_REGEN_GOLDEN") == "1"
EVIL_NAME = "<script>alert(1)</script>"
EVIL_TOKEN = ' &<>"x'


# ----------------------------------------------------------------------------- fixtures and variants


def _load(name: str) -> dict[str, Any]:
    return Attestation.read(DATA / f"attestation_{name}.json").to_json()  # a dict to vary


def _different_model() -> dict[str, Any]:
    """The consistent example with every category far from the reference."""
    att = copy.deepcopy(_load("consistent"))
    att["verdict"] = "different-model"
    att["flagged"] = []
    for c in att["categories"]:
        scale = 70.0
        c["mean_kl"] = round(c["mean_kl"] * scale, 4)
        c["mean_kl_ci"] = [round(v * scale, 4) for v in c["mean_kl_ci"]]
        c["tail_kl"] = round(c["tail_kl"] * scale, 4)
        c["level"] = c["mean_kl"]
        c["ppl_model"] = round(c["ppl_reference"] * 2.2, 3)
        c["top1_agreement"] = 0.41
        c["distribution"] = [round(v * scale, 4) for v in c["distribution"]]
        c["bpb_model"] = round(c["bpb_reference"] * 1.39, 4)
        c["delta_bpb"] = round(c["bpb_model"] - c["bpb_reference"], 4)
    att["summary"].update(ppl_model=20.9, bpb_model=1.091, delta_bpb=0.304)
    att["summary"]["mean_kl"] = 0.853
    att["summary"]["baseline_level"] = 0.826
    att["summary"]["message"] = (
        "The model differs from the reference in every category (mean KL 0.853 > 0.5): "
        "it is a different model, not a tampered copy."
    )
    att["model"]["name"] = "other-org/unrelated-model"
    return att


def _scored_only() -> dict[str, Any]:
    """The model scored alone: no reference, no KL, no evidence."""
    att = copy.deepcopy(_load("consistent"))
    att["verdict"] = "scored-only"
    att["flagged"] = []
    att["comparison"] = "none"
    att["reference"] = None
    att["evidence"] = []
    summary = att["summary"]
    summary["statistic"] = "bpb"
    for key in ("ppl_reference", "bpb_reference", "delta_bpb", "mean_kl"):
        summary[key] = None
    summary["baseline_level"] = 0.78
    summary["noise_floor"] = 0.05
    summary["message"] = "Model scored alone: no category stands out in bits per byte."
    for c in att["categories"]:
        for key in (
            "ppl_reference",
            "bpb_reference",
            "delta_bpb",
            "mean_kl",
            "mean_kl_ci",
            "tail_kl",
            "tail_kl_ci",
            "top1_agreement",
        ):
            c[key] = None
        c["level"] = c["bpb_model"]
        c["distribution"] = [round(c["bpb_model"] * (0.8 + 0.02 * i), 4) for i in range(21)]
    return att


def _bpb() -> dict[str, Any]:
    """The tampered example compared across different tokenizers (bits per byte, no KL)."""
    att = copy.deepcopy(_load("tampered"))
    att["comparison"] = "bpb"
    att["summary"]["statistic"] = "delta_bpb"
    att["summary"]["mean_kl"] = None
    att["summary"]["baseline_level"] = 0.0040
    att["summary"]["noise_floor"] = 0.03
    att["reference"]["tokenizer_digest"] = {"algorithm": "sha256", "value": "9d0e" * 16}
    for c in att["categories"]:
        for key in ("mean_kl", "mean_kl_ci", "tail_kl", "tail_kl_ci", "top1_agreement"):
            c[key] = None
        c["level"] = c["delta_bpb"] if c["tested"] else None
        c["distribution"] = [round(c["delta_bpb"] * (0.5 + 0.05 * i), 5) for i in range(21)]
    for entry in att["evidence"]:
        for sample in entry["samples"]:
            sample["mean_kl"] = None
            sample["max_kl"] = None
            sample["tokens"] = []
    att["summary"]["message"] = (
        "Bits per byte rise on cooking (Δ bpb +0.273 vs baseline 0.004, q = 7.2e-09)."
    )
    return att


def _many(n: int, flagged: tuple[int, ...] = (3,)) -> dict[str, Any]:
    """``n`` categories built from the tampered example; ``flagged`` indexes are flagged."""
    att = copy.deepcopy(_load("tampered"))
    template = att["categories"][0]
    hot = next(c for c in att["categories"] if c["flagged"])
    evidence = att["evidence"][0]
    att["categories"], att["evidence"] = [], []
    for i in range(n):
        c = copy.deepcopy(hot if i in flagged else template)
        c["name"] = f"category-{i:02d}"
        att["categories"].append(c)
        if i in flagged:
            e = copy.deepcopy(evidence)
            e["category"] = c["name"]
            att["evidence"].append(e)
    att["flagged"] = [f"category-{i:02d}" for i in flagged]
    att["probes"]["categories"] = {c["name"]: c["n_samples"] for c in att["categories"]}
    return att


def _evil() -> dict[str, Any]:
    """User strings that must be escaped everywhere."""
    att = copy.deepcopy(_load("tampered"))
    att["categories"][2]["name"] = EVIL_NAME
    att["flagged"] = [EVIL_NAME]
    att["evidence"][0]["category"] = EVIL_NAME
    token = att["evidence"][0]["samples"][0]["tokens"][0]
    token["token"] = EVIL_TOKEN
    token["context_before"] = "<b>bold</b> & co"
    token["context_after"] = "</td></tr></table><img src=x onerror=alert(2)>"
    token["top_model"] = [[EVIL_TOKEN, 0.5], ["<i>", 0.25]]
    att["model"]["name"] = "<img src=http://evil.example/x.png>"
    att["warnings"] = ["category '<script>x</script>' is odd"]
    att["summary"]["message"] = "flagged <script>alert(3)</script>"
    return att


VARIANTS = {
    "tampered": lambda: _load("tampered"),
    "consistent": lambda: _load("consistent"),
    "different_model": _different_model,
    "scored_only": _scored_only,
    "bpb": _bpb,
}


# ----------------------------------------------------------------------------- HTML structure


_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}


class _Structure(HTMLParser):
    """Collects tags, attributes and text, and records mismatched or unclosed tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Structure:
    parser = _Structure()
    parser.feed(html)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def _assert_self_contained(html: str, parsed: _Structure) -> None:
    assert "<script" not in html.lower()
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "xlink:href", "action", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, name, value)
        assert tag not in ("link", "script", "iframe", "object", "embed", "img"), tag
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", html, re.IGNORECASE)
    assert "@import" not in html


# ----------------------------------------------------------------------------- Attestation.read


def test_load_from_folder_and_file(tmp_path: Path) -> None:
    source = DATA / "attestation_tampered.json"
    (tmp_path / "attestation.json").write_text(source.read_text("utf-8"), "utf-8")
    from_folder = Attestation.read(tmp_path)
    from_file = Attestation.read(str(source))
    assert from_folder == from_file
    assert from_file.verdict is Verdict.TAMPERED


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema": "lmassay.attestation/v0"}', "lmassay.attestation/v0"),
        ('{"verdict": "consistent"}', "no 'schema' key"),
        ('{"schema": "lmassay.attestation/v1", "verdict": "consistent"}', "flagged"),
    ],
    ids=["missing", "bad-json", "not-object", "wrong-schema", "no-schema", "missing-key"],
)
def test_load_errors_name_the_path(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "run" / "attestation.json"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content, "utf-8")
    with pytest.raises(InputError) as info:
        Attestation.read(path)
    assert str(path) in info.value.what
    assert expected in info.value.what
    assert info.value.fix


def test_load_folder_without_attestation(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        Attestation.read(tmp_path)
    assert str(tmp_path) in info.value.what
    assert "attestation.json" in info.value.what


def test_load_missing_keys_are_all_listed(tmp_path: Path) -> None:
    att = _load("consistent")
    del att["categories"], att["summary"]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(att), "utf-8")
    with pytest.raises(InputError, match="categories, summary") as info:
        Attestation.read(path)
    assert str(path) in str(info.value)


def test_load_rejects_wrong_types(tmp_path: Path) -> None:
    att = _load("consistent")
    att["verdict"] = "fine"
    att["categories"] = [{"n_samples": 3}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(att), "utf-8")
    with pytest.raises(InputError) as info:
        Attestation.read(path)
    assert str(path) in info.value.what
    assert "verdict 'fine'" in info.value.what
    assert "categories[0] lacks required key(s) name" in info.value.what


# ----------------------------------------------------------------------------- markdown


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_follow_the_schema(name: str) -> None:
    assert_valid_attestation(VARIANTS[name]())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_markdown_golden(name: str) -> None:
    text = render_markdown(VARIANTS[name]())
    path = GOLDEN / f"report_{name}.md"
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    assert path.exists(), f"{path} is missing: run with LMASSAY_REGEN_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), (
        f"markdown differs from {path}; if intended, regenerate with LMASSAY_REGEN_GOLDEN=1"
    )


def test_markdown_content_tampered() -> None:
    text = render_markdown(_load("tampered"))
    first = text.splitlines()[0]
    assert "TAMPERED" in first and "cooking" in first
    assert "KL(reference || model)" in text
    assert "sha256:3f9a3f9a3f9a" in text and "sha256:b04db04db04d" in text
    assert "0.823 [0.675, 0.996]" in text
    assert "7.2e-09" in text
    assert "⟦ salt⟧" in text and "␣salt" in text
    assert "category 'tiny' has 3 samples" in text
    for c in _load("tampered")["categories"]:
        assert f"| {c['name']} " in text


def test_markdown_is_short_for_ten_categories() -> None:
    text = render_markdown(_many(10, flagged=(2, 7)))
    assert len(text.splitlines()) <= 40
    assert render_markdown(_many(10, flagged=(2, 7))) == text  # deterministic


def _all_null() -> dict[str, Any]:
    """The tampered example with every optional number of one category null."""
    att = _load("tampered")
    c = att["categories"][0]
    for key in list(c):
        if key not in ("name", "tested", "flagged", "note"):
            c[key] = None
    for key in ("ppl_model", "ppl_reference", "mean_kl", "alpha", "noise_floor"):
        att["summary"][key] = None
    att["evidence"][0]["samples"][0]["tokens"][0].update(
        kl=None, logprob_model=None, top_model=None, context_before=None
    )
    return att


def test_markdown_nulls_render_as_dash() -> None:
    text = render_markdown(_all_null())
    assert "None" not in text and "nan" not in text.lower()
    assert "| arithmetic |       — |      — |" in text
    assert "ppl — model vs — reference" in text
    scored = render_markdown(_scored_only())
    assert "SCORED ONLY" in scored and "None" not in scored
    assert "- reference:" not in scored  # no reference line when scored alone


def test_markdown_escapes_tables_and_html() -> None:
    text = render_markdown(_evil())
    assert EVIL_NAME not in text
    assert "\\<script>alert(1)\\</script>" in text
    att = _load("consistent")
    att["categories"][0]["name"] = "a|b"
    assert "| a\\|b " in render_markdown(att)


# ----------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_html_structure(name: str) -> None:
    att = VARIANTS[name]()
    html = render_html(att)
    parsed = _parse(html)
    _assert_self_contained(html, parsed)
    text = " ".join(parsed.text)
    assert html.startswith("<!DOCTYPE html>")
    for c in att["categories"]:
        assert c["name"] in text
    assert att["summary"]["message"] in text
    assert "None" not in text and "nan" not in text.split()
    assert "How to read this report" in text
    assert "<details" in html and "Provenance" in text
    assert "2.13.0" in text  # library versions in the provenance
    assert html.count("<svg") == len(render_plots(att)) >= 2


def test_html_tampered_pieces() -> None:
    html = render_html(_load("tampered"))
    parsed = _parse(html)
    text = " ".join(parsed.text)
    assert 'class="banner verdict-tampered"' in html
    assert "TAMPERED" in text
    assert '<mark title="position 17"> salt</mark>' in html
    assert "␣salt" in text and "␣sugar" in text and "83%" in text
    assert "cooking-0003" in text
    assert "sha256:3f9a" + "3f9a" * 15 in text  # full model digest
    assert "category 'tiny' has 3 samples" in text
    assert "Mann–Whitney" in text and "Benjamini–Hochberg" in text
    assert "KL(reference || model)" in text
    assert html.count("<svg") == 3


def test_html_nulls_render_as_dash() -> None:
    html = render_html(_all_null())
    parsed = _parse(html)
    text = " ".join(parsed.text)
    assert "None" not in text and "nan" not in text.split()
    row = re.search(r'<td class="name">arithmetic</td>(.*?)</tr>', html)
    assert row is not None and row.group(1).count("—") >= 10


def test_html_variants() -> None:
    assert "verdict-consistent" in render_html(_load("consistent"))
    assert "verdict-different-model" in render_html(_different_model())
    scored = render_html(_scored_only())
    assert "verdict-scored-only" in scored and "weak evidence" in scored
    assert "Perplexity per category (model only)" in scored
    bpb = render_html(_bpb())
    assert "Δ bits per byte" in bpb
    assert "token-level KL needs a shared tokenizer" in bpb


def test_html_escapes_user_strings() -> None:
    html = render_html(_evil())
    parsed = _parse(html)
    _assert_self_contained(html, parsed)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "<b>bold" not in html and "<i>" not in html
    assert "␣&amp;&lt;&gt;&#34;x" in html  # the token, in the prediction list
    assert '<mark title="position 17"> &amp;&lt;&gt;&#34;x</mark>' in html
    text = " ".join(parsed.text)
    assert EVIL_NAME in text  # shown to the reader as text
    assert "</td></tr></table><img src=x onerror=alert(2)>" in text


def test_plot_labels_are_not_mathtext() -> None:
    att = _load("consistent")
    att["categories"][0]["name"] = "costs $5 and $x^2$ or $"
    svg = statistic_plot(att)
    assert svg is not None and "costs $5 and $x^2$ or $" in svg


def test_html_is_deterministic() -> None:
    att = _load("tampered")
    assert render_html(att) == render_html(att)


def test_twenty_categories_small() -> None:
    """Size only: render time is a benchmark's business (benchmarks/, never a timed unit test)."""
    att = _many(20, flagged=(4, 11))
    html = render_html(att)
    text = render_markdown(att)
    svg_bytes = sum(len(svg.encode()) for svg in render_plots(att).values())
    assert svg_bytes < 300_000, svg_bytes
    assert len(html.encode()) < 500_000
    _parse(html)
    assert "category-19" in html and "category-19" in text


def test_plots_without_data_are_left_out() -> None:
    att = _scored_only()
    for c in att["categories"]:
        c["ppl_model"] = c["bpb_model"] = c["distribution"] = None
    assert statistic_plot(att) is None
    assert perplexity_plot(att) is None
    assert distribution_plot(att) is None
    html = render_html(att)
    assert "<svg" not in html
    _parse(html)


def test_svg_ids_do_not_collide() -> None:
    html = render_html(_load("tampered"))
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------------------------- write_report


def test_write_report(tmp_path: Path) -> None:
    att = _load("tampered")
    out = tmp_path / "run"
    (out).mkdir()
    (out / "report.md").write_text("old", "utf-8")
    paths = write_report(out, att)
    assert paths == {"html": out / "report.html", "markdown": out / "report.md"}
    assert paths["markdown"].read_text("utf-8") == render_markdown(att)
    assert paths["html"].read_text("utf-8") == render_html(att)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]


def test_write_report_creates_the_folder(tmp_path: Path) -> None:
    paths = write_report(str(tmp_path / "new" / "dir"), _scored_only())
    assert paths["html"].is_file() and paths["markdown"].is_file()
    assert sorted(p.name for p in paths["html"].parent.iterdir()) == ["report.html", "report.md"]


# ----------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.8, "0.800"),
        (0.0123456, "0.0123"),
        (12.3, "12.3"),
        (9.996, "10.0"),
        (1234.5, "1,234"),
        (21000, "21,000"),
        (1e-6, "1.00e-06"),
        (0.0, "0"),
        (None, "—"),
        (float("nan"), "—"),
        (True, "—"),
    ],
)
def test_fmt_num(value: Any, expected: str) -> None:
    assert fmt_num(value) == expected


def test_other_formats() -> None:
    assert fmt_num(0.273, signed=True) == "+0.273"
    assert fmt_num(-0.0019, signed=True) == "-0.00190"
    assert fmt_p(7.2e-9) == "7.2e-09" and fmt_p(0.54) == "0.54" and fmt_p(None) == "—"
    assert fmt_prob(0.41) == "41%" and fmt_prob(0.0038) == "0.38%"
    assert fmt_ci([0.7, 0.9]) == "[0.700, 0.900]" and fmt_ci(None) == ""
    assert short_digest({"algorithm": "sha256", "value": "ab" * 32}) == "sha256:abababababab"
    assert short_digest(None) == "—"
    assert show_token(" a\nb") == "␣a↵b" and show_token("") == "∅"
