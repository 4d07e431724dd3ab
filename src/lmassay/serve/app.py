"""The HTTP API of ``lmassay serve`` (FastAPI): the routes of the contract.

* ``POST /v1/attestations`` (``Authorization: Bearer TOKEN``) → 202 ``{"id"}``;
* ``GET /v1/attestations/{id}`` → ``{"id", "status", "progress", "verdict", "flagged", "error", ...}``;
* ``GET /v1/attestations/{id}/attestation.json`` | ``/samples.jsonl`` | ``/report.html`` |
  ``/statement`` (the signed in-toto statement, checkable with ``lmassay verify``);
* ``DELETE /v1/attestations/{id}`` or ``POST /v1/attestations/{id}/cancel`` (token) cancels;
* ``GET /v1/attestations`` lists published results; ``GET /`` is the results page;
  ``GET /v1/public-key`` the service's key; ``GET /docs`` and ``/openapi.json`` describe the API.

Reads are ``async`` routes (one short SQLite read each, on the event loop: no thread hop per
request); submitting and cancelling, which write, run in the thread pool.  Reading is public;
submitting and cancelling need a token.  The web process never imports torch:
a request is checked field by field here, and the combination of options by the worker (a job
whose options do not go together fails with attest's one-line reason).  Refusals: 400 malformed JSON, 401 no or
unknown token, 403 revoked token, 404 no such job, 409 not cancellable, 413 body too large, 422
a field that is unknown, out of range or not allowed (paths, remote code, pickles), 429 with
``Retry-After`` over the token's rate or the queue cap.  A refused request queues nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse

from lmassay import __version__
from lmassay.errors import LmassayError
from lmassay.serve.config import ServeConfig
from lmassay.serve.limits import BodyLimit, RateLimiter, retry_after
from lmassay.serve.page import SECURITY_HEADERS, docs_page, result_row, results_page
from lmassay.serve.requests import (
    REGISTERED_KEY,
    AttestationRequest,
    RequestRefused,
    builtin_suite_names,
    check_request,
    registered_names,
)
from lmassay.serve.store import Job, JobStore, TokenInfo, hash_token

log = logging.getLogger("lmassay.serve")

JOB_ID = re.compile(r"[0-9a-f]{32}")
QUEUE_FULL_RETRY_SECONDS = 30
_FILES = {
    "attestation.json": ("attestation.json", "application/json"),
    "samples.jsonl": ("samples.jsonl", "application/x-ndjson"),
    "report.html": ("report.html", "text/html; charset=utf-8"),
    "statement": ("attestation.sig", "application/json"),
}


@dataclass(frozen=True)
class ServiceState:
    config: ServeConfig
    store: JobStore
    public_key_pem: str
    fingerprint: str
    suites: tuple[str, ...]
    roots: tuple[Path, ...]
    limiter: RateLimiter


def _public_key(config: ServeConfig) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    from lmassay.sealing.keys import fingerprint, load_private_key

    public = load_private_key(config.key).public_key()
    pem = public.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode("ascii")
    return pem, fingerprint(public)


def create_app(config: ServeConfig, store: JobStore) -> FastAPI:
    """The API for ``config`` over ``store`` (workers are started by :mod:`lmassay.serve.server`)."""
    pem, fingerprint = _public_key(config)
    state = ServiceState(
        config=config,
        store=store,
        public_key_pem=pem,
        fingerprint=fingerprint,
        suites=tuple(builtin_suite_names()),
        roots=config.roots(),
        limiter=RateLimiter(config.rate_limit),
    )
    app = FastAPI(
        title="lmassay attestation service",
        version=__version__,
        description="Submit attestation jobs, watch them, read signed results.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=config.max_body)
    _add_error_handlers(app)
    _add_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return JSONResponse(
                {"detail": "the body is not valid JSON", "errors": _messages(errors)}, 400
            )
        return JSONResponse({"detail": "; ".join(_messages(errors))[:2000]}, 422)

    @app.exception_handler(LmassayError)
    async def unusable(request: Request, exc: LmassayError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc.one_line("serve"))
        return JSONResponse({"detail": "the service's registry is unusable; see its log"}, 503)


def _messages(errors: Any) -> list[str]:
    out = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(f"{where or 'body'}: {message}")
    return out


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers=SECURITY_HEADERS)


def _add_routes(app: FastAPI, state: ServiceState) -> None:
    store, config = state.store, state.config

    def token(
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> TokenInfo:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HTTPException(
                401,
                "submitting needs Authorization: Bearer TOKEN (lmassay serve token create)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = store.token_by_hash(hash_token(value.strip()))
        if found is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if found.revoked is not None:
            raise HTTPException(403, f"token {found.name!r} was revoked")
        return found

    authorised = Depends(token)

    def job_or_404(job_id: str) -> Job:
        job = store.job(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise HTTPException(404, "no such attestation job")
        return job

    @app.post("/v1/attestations", status_code=202, summary="Submit an attestation job")
    def submit(body: AttestationRequest, who: TokenInfo = authorised) -> JSONResponse:
        """Queue an attestation of ``model`` against ``reference`` on ``probes``; 202 with its id."""
        wait = state.limiter.take(who.name)
        if wait is not None:
            raise HTTPException(
                429,
                f"token {who.name!r} is over {config.rate_limit} submissions per minute",
                headers={"Retry-After": retry_after(wait)},
            )
        try:
            checked = check_request(
                body, state.roots, state.suites, store.model, trusts_keys=bool(config.trust_keys)
            )
        except RequestRefused as exc:
            raise HTTPException(422, str(exc)) from exc
        stored = checked.model_dump(mode="json")
        names = registered_names(body)
        if names:
            stored[REGISTERED_KEY] = names  # the worker publishes the names beside the sources
        job_id = store.submit(stored, who.name, config.queue_cap)
        if job_id is None:
            raise HTTPException(
                429,
                f"the queue is full ({config.queue_cap} jobs queued or running)",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)},
            )
        log.info("job %s queued by token %s", job_id, who.name)
        return JSONResponse({"id": job_id}, 202, headers={"Location": f"/v1/attestations/{job_id}"})

    @app.get("/v1/attestations/{job_id}", summary="A job's status and progress")
    async def status(job_id: str) -> dict[str, Any]:
        """``status`` is queued, running, done or failed; ``progress`` a fraction of the stage."""
        return job_or_404(job_id).public_status()

    @app.get("/v1/attestations/{job_id}/{name}", summary="A published result file")
    async def result_file(job_id: str, name: str) -> FileResponse:
        """``attestation.json``, ``samples.jsonl``, ``report.html`` or ``statement`` (the signed
        in-toto statement: ``lmassay verify MODEL --signature FILE --public-key service.pub``)."""
        if name not in _FILES:
            raise HTTPException(404, f"no result file {name!r}")
        job = job_or_404(job_id)
        if job.status != "done":
            raise HTTPException(404, f"job {job_id} is {job.public_status()['status']}, not done")
        file_name, media = _FILES[name]
        path = config.results_path() / job_id / file_name
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {file_name}")
        headers = SECURITY_HEADERS if name == "report.html" else None
        return FileResponse(path, media_type=media, headers=headers)

    def cancel(job_id: str, who: TokenInfo) -> dict[str, Any]:
        if not JOB_ID.fullmatch(job_id):
            raise HTTPException(404, "no such attestation job")
        was = store.request_cancel(job_id)
        if was is None:
            raise HTTPException(404, "no such attestation job")
        if was not in ("queued", "running"):
            raise HTTPException(409, f"job {job_id} is {was}: nothing to cancel")
        log.info("job %s cancelled by token %s (was %s)", job_id, who.name, was)
        return job_or_404(job_id).public_status()

    @app.delete("/v1/attestations/{job_id}", summary="Cancel a job")
    def cancel_delete(job_id: str, who: TokenInfo = authorised) -> dict[str, Any]:
        """A queued job fails at once as cancelled; a running one's worker is stopped."""
        return cancel(job_id, who)

    @app.post("/v1/attestations/{job_id}/cancel", summary="Cancel a job (POST form)")
    def cancel_post(job_id: str, who: TokenInfo = authorised) -> dict[str, Any]:
        """The same as ``DELETE /v1/attestations/{id}``."""
        return cancel(job_id, who)

    @app.get("/v1/attestations", summary="Published results")
    async def published(
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """Finished jobs, newest first, with links to their files and the verify command."""
        jobs = store.jobs(status="done", limit=limit, offset=offset)
        return {"results": [result_row(job, config.base_url) for job in jobs]}

    @app.get("/v1/public-key", summary="The service's public key (PEM)")
    async def public_key() -> PlainTextResponse:
        """Verify the published statements with it (``--public-key``)."""
        return PlainTextResponse(
            state.public_key_pem,
            media_type="application/x-pem-file",
            headers={"X-Key-Fingerprint": state.fingerprint},
        )

    @app.get("/", response_class=HTMLResponse, summary="The results page")
    async def page() -> HTMLResponse:
        """Every published result: model, revision, verdict, flags, date, report, verify command."""
        jobs = store.jobs(status="done", limit=500)
        return _html(results_page(jobs, config.base_url, state.fingerprint, store.counts()))

    @app.get("/docs", response_class=HTMLResponse, summary="This API, as a page")
    async def docs() -> HTMLResponse:
        """The routes and the request body (from /openapi.json; no external assets)."""
        return _html(docs_page(app.openapi()))

    @app.get("/healthz", summary="Liveness and queue counts")
    async def health() -> dict[str, Any]:
        """``{"ok": true, "jobs": {status: count}}``."""
        return {"ok": True, "jobs": store.counts()}
