"""The HTML pages of ``curate train`` (cross-validation) and ``curate filter`` (what was removed),
rendered from their JSON: one self-contained page each, inline CSS, no script, no external URL,
every string escaped (jinja2 autoescaping)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import jinja2

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; max-width: 40rem; white-space: pre-wrap; }
code { font-size: 0.85em; word-break: break-all; } .chosen { font-weight: bold; }
"""

_TRAIN = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lmassay curate train</title>
<style>{{ style }}</style></head><body>
<h1>Curate classifier: cross-validation</h1>
<p>LM <code>{{ r.model.name }}</code> (digest <code>{{ r.model.digest.value }}</code>),
features: hidden state {{ r.features.layer }} of {{ r.model.n_layers }} blocks,
{{ r.features.pooling }} pooling, at most {{ r.features.max_tokens }} tokens per text.
Labelled data <code>{{ r.data.source }}</code>: {{ r.cv.n_remove }} remove, {{ r.cv.n_keep }} keep.</p>
<h2>At the default threshold ({{ num(r.threshold) }}: {{ r.threshold_rule }})</h2>
<table><tr><th>folds</th><th>AUC</th><th>precision</th><th>recall</th><th>F1</th><th>removed</th></tr>
<tr><td>{{ r.cv.folds }}</td><td>{{ num(r.cv.auc) }}</td><td>{{ num(r.cv.precision) }}</td>
<td>{{ num(r.cv.recall) }}</td><td>{{ num(r.cv.f1) }}</td><td>{{ r.cv.n_flagged }}</td></tr></table>
{% if r.per_category %}<h2>By category</h2>
<table><tr><th>category</th><th>remove</th><th>keep</th><th>recall</th><th>false positive rate</th></tr>
{% for c in r.per_category %}<tr><td class="text">{{ c.category }}</td><td>{{ c.n_remove }}</td>
<td>{{ c.n_keep }}</td><td>{{ num(c.recall) }}</td><td>{{ num(c.false_positive_rate) }}</td></tr>
{% endfor %}</table>{% endif %}
{% if r.sweep %}<h2>Every layer and pooling (cross-validated)</h2>
<table><tr><th>layer</th><th>pooling</th><th>AUC</th><th>precision</th><th>recall</th><th>F1</th></tr>
{% for s in r.sweep %}<tr{% if s.layer == r.features.layer and s.pooling == r.features.pooling %}
 class="chosen"{% endif %}><td>{{ s.layer }}</td><td>{{ s.pooling }}</td><td>{{ num(s.auc) }}</td>
<td>{{ num(s.precision) }}</td><td>{{ num(s.recall) }}</td><td>{{ num(s.f1) }}</td></tr>
{% endfor %}</table>{% endif %}
<p>Scores are out-of-fold: each example was scored by a model fitted without it.
lmassay {{ r.provenance.version }}, {{ r.provenance.created }}.</p>
</body></html>
"""

_FILTER = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lmassay curate filter</title>
<style>{{ style }}</style></head><body>
<h1>Curate filter</h1>
<p>Data <code>{{ s.input.source }}</code>: {{ s.counts.total }} items,
<b>{{ s.counts.removed }} removed</b>, {{ s.counts.kept }} kept at threshold {{ num(s.threshold.value) }}
({{ s.threshold.rule }}).</p>
<p>Classifier <code>{{ s.classifier.path }}</code> (digest <code>{{ s.classifier.digest.value }}</code>),
LM <code>{{ s.model.name }}</code> (digest <code>{{ s.model.digest.value }}</code>).</p>
{% if s.categories %}<h2>By category</h2>
<table><tr><th>category</th><th>items</th><th>removed</th><th>share removed</th></tr>
{% for c in s.categories %}<tr><td class="text">{{ c.category }}</td><td>{{ c.total }}</td>
<td>{{ c.removed }}</td><td>{{ pct(c.removed, c.total) }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Removed, just above the threshold</h2>
<table><tr><th>score</th><th>item</th><th>text</th></tr>
{% for e in s.examples.removed %}<tr><td>{{ num(e.score) }}</td><td>{{ e.where }}</td>
<td class="text">{{ e.text }}</td></tr>{% endfor %}</table>
<h2>Kept, just below the threshold</h2>
<table><tr><th>score</th><th>item</th><th>text</th></tr>
{% for e in s.examples.kept %}<tr><td>{{ num(e.score) }}</td><td>{{ e.where }}</td>
<td class="text">{{ e.text }}</td></tr>{% endfor %}</table>
<p>lmassay {{ s.provenance.version }}, {{ s.provenance.created }}.</p>
</body></html>
"""


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(num=_num, pct=_pct, style=_STYLE)
    return env


def train_report_html(report: dict[str, Any]) -> str:
    """``report.html`` of a classifier folder, from its ``report.json``."""
    return _environment().from_string(_TRAIN).render(r=report)


def filter_report_html(summary: dict[str, Any]) -> str:
    """``report.html`` of a filter's output, from its ``curate.json``."""
    return _environment().from_string(_FILTER).render(s=summary)
