"""The results page (``GET /``) and the API page (``GET /docs``): plain HTML, no external assets,
every value escaped (Jinja2 autoescape)."""

from __future__ import annotations

import shlex
from typing import Any

from jinja2 import Environment

from lmassay.serve.store import Job

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.4em .5em;
text-align:left;vertical-align:top}code,pre{font:13px ui-monospace,monospace;background:#f5f5f5}
pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}.consistent{color:#176317}
.tampered,.different-model{color:#a31515;font-weight:600}small{color:#666}
"""

_RESULTS = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmassay attestations</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head>
<body>
<h1>Published attestations</h1>
<p>Each result is signed by this service's key (an in-toto statement, as
<code>lmassay attest --sign</code> writes). Check one offline: download the key once,</p>
<pre>curl -o service.pub {{ base }}/v1/public-key</pre>
<p>then run the command in its row (the model's files must be on your machine: a hub id resolves
to your Hugging Face cache). Service key fingerprint: <code>{{ fingerprint }}</code>.</p>
<p><small>{{ counts }}. API: <a href="/docs">/docs</a>,
<a href="/v1/attestations">/v1/attestations</a>.</small></p>
{% if rows %}
<table id="results">
<thead><tr><th>model</th><th>revision</th><th>verdict</th><th>flagged</th><th>date</th>
<th>report</th><th>verify offline</th></tr></thead>
<tbody>
{% for r in rows %}<tr class="result" data-id="{{ r.id }}">
<td class="model">{{ r.model }}{% if r.reference %}<br><small>against {{ r.reference }}</small>{% endif %}</td>
<td class="revision">{{ r.revision or "" }}{% if r.commit %}<br><small>{{ r.commit }}</small>{% endif %}</td>
<td class="verdict {{ r.verdict }}">{{ r.verdict }}</td>
<td class="flagged">{{ r.flagged | join(", ") if r.flagged else "none" }}</td>
<td class="date">{{ r.date }}</td>
<td><a class="report" href="{{ r.report }}">report</a> ·
<a href="{{ r.attestation }}">attestation.json</a> · <a href="{{ r.statement }}">statement</a></td>
<td><pre class="verify">{{ r.verify }}</pre></td>
</tr>
{% endfor %}</tbody></table>
{% else %}<p id="empty">Nothing published yet.</p>{% endif %}
</body></html>
"""
)

_DOCS = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} API</title>
<style>{{ style }}</style></head><body>
<h1>{{ title }} {{ version }}</h1>
<p>The machine-readable description: <a href="/openapi.json">/openapi.json</a> (OpenAPI
{{ openapi }}). Submitting needs <code>Authorization: Bearer TOKEN</code>
(<code>lmassay serve token create</code>); reading does not.</p>
<table><thead><tr><th>method</th><th>path</th><th>what</th></tr></thead><tbody>
{% for method, path, summary, text in routes %}<tr><td><code>{{ method }}</code></td>
<td><code>{{ path }}</code></td><td><b>{{ summary }}</b><br><small>{{ text }}</small></td></tr>
{% endfor %}</tbody></table>
<h2>Request body of POST /v1/attestations</h2>
<pre>{{ request_schema }}</pre>
</body></html>
"""
)


def verify_command(job: Job, base: str) -> str:
    """The two commands that check a published result offline."""
    published = job.published
    model = str(published.get("model") or "MODEL")
    commit = published.get("commit")
    fetch = f"curl -o {job.id}.sig {base}/v1/attestations/{job.id}/statement"
    verify = f"lmassay verify {shlex.quote(model)}"
    if commit:
        verify += f" --revision {commit}"
    verify += f" --signature {job.id}.sig --public-key service.pub"
    return f"{fetch}\n{verify}"


def result_row(job: Job, base: str) -> dict[str, Any]:
    """One published result, as ``GET /v1/attestations`` lists it and the page shows it."""
    published = job.published
    link = f"/v1/attestations/{job.id}"
    return {
        "id": job.id,
        "model": published.get("model"),
        "revision": published.get("revision"),
        "commit": published.get("commit"),
        "reference": published.get("reference"),
        "probes": published.get("probes"),
        "registered": published.get("registered"),
        "probes_seal": published.get("probes_seal"),
        "verdict": job.verdict,
        "flagged": job.flagged,
        "date": job.finished,
        "signer": published.get("signer"),
        "status_url": link,
        "attestation": f"{link}/attestation.json",
        "samples": f"{link}/samples.jsonl",
        "report": f"{link}/report.html",
        "statement": f"{link}/statement",
        "verify": verify_command(job, base),
    }


def results_page(jobs: list[Job], base: str, fingerprint: str, counts: dict[str, int]) -> str:
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no jobs"
    return _RESULTS.render(
        style=_STYLE,
        base=base,
        fingerprint=fingerprint,
        counts=summary,
        rows=[result_row(job, base) for job in jobs],
    )


def docs_page(schema: dict[str, Any]) -> str:
    import json

    routes = [
        (method.upper(), path, op.get("summary", ""), op.get("description", ""))
        for path, ops in schema.get("paths", {}).items()
        for method, op in ops.items()
    ]
    components = schema.get("components", {}).get("schemas", {})
    return _DOCS.render(
        style=_STYLE,
        title=schema.get("info", {}).get("title", ""),
        version=schema.get("info", {}).get("version", ""),
        openapi=schema.get("openapi", ""),
        routes=routes,
        request_schema=json.dumps(
            {k: v for k, v in components.items() if k in ("AttestationRequest", "JobOptions")},
            indent=2,
        ),
    )
