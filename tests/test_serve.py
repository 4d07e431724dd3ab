"""``lmassay serve`` against a live server on a loopback port, on the test-size world's models.

One module-wide service (one worker) runs the suppression variant's attestation (ground truth:
religion), a second run whose worker is killed mid-job (it must come back equal), a corrupt row,
and the results page in headless Chromium; queue-only services (``--workers 0``) cover the
limits, cancellation and a server killed and restarted mid-queue.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from typer.testing import CliRunner

from lmassay.cli import app
from lmassay.serve.store import pid_alive
from serve_support import Service, make_service, new_token

runner = CliRunner()

JOB_TIMEOUT = 240.0
OPTIONS = {"per_category": 6, "n_bootstrap": 100, "n_permutations": 0, "seed": 0}


def _request(pair) -> dict:
    return {
        "model": str(pair.tampered),
        "reference": str(pair.reference),
        "probes": str(pair.world.probes),
        "options": OPTIONS,
    }


def _threads() -> list[str]:
    return ["--threads", os.environ.get("LMASSAY_TEST_THREADS", "1")]


@pytest.fixture(scope="module")
def service(tmp_path_factory, world_pair):
    root = world_pair.reference.parent
    svc = make_service(
        tmp_path_factory.mktemp("serve"),
        ["--workers", "1", "--allow-local-root", str(root), "--rate-limit", "1000", *_threads()],
    )
    svc.token = new_token(svc.registry, "tester")  # type: ignore[attr-defined]
    from lmassay.sealing.keys import generate_keypair

    lab = generate_keypair(svc.folder / "lab" / "lab.pem")  # the probe sets' sealer
    svc.lab = lab  # type: ignore[attr-defined]
    (svc.folder / "sets").mkdir()
    svc.start(["--trust-key", str(lab.public_key), "--allow-local-root", str(svc.folder / "sets")])
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=60) as c:
        yield c


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def first_job(service, client, world_pair):
    """The undisturbed run: submitted, watched to the end; (id, status seen while running)."""
    answer = client.post(
        "/v1/attestations", json=_request(world_pair), headers=_auth(service.token)
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    seen = []
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        status = client.get(f"/v1/attestations/{job_id}").json()
        seen.append(status)
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert seen[-1]["status"] == "done", service.logs()
    return job_id, seen


def test_job_runs_signed_and_published(service, client, first_job, world_pair):
    job_id, seen = first_job
    final = seen[-1]
    assert set(final) >= {"id", "status", "progress", "verdict", "flagged", "error"}
    assert final["verdict"] == "tampered" and final["flagged"] == [world_pair.category]
    assert any(s["status"] == "running" and s["stage"] for s in seen), seen
    results = service.results / job_id
    assert not any("serve-results" in (s["stage"] or "") for s in seen)  # no server folder shown

    document = client.get(f"/v1/attestations/{job_id}/attestation.json").json()
    assert document["verdict"] == "tampered" and document["flagged"] == ["religion"]
    lines = client.get(f"/v1/attestations/{job_id}/samples.jsonl").text.splitlines()
    assert len(lines) == 9 * OPTIONS["per_category"]
    assert "religion" in client.get(f"/v1/attestations/{job_id}/report.html").text
    assert (results / "attestation.json").read_bytes() == client.get(
        f"/v1/attestations/{job_id}/attestation.json"
    ).content

    # the signed statement checks offline with the published key, as `lmassay verify` does
    from lmassay.sealing.verifying import verify

    key = client.get("/v1/public-key").text
    assert key == service.public_key.read_text()
    folder = service.folder / "check"
    folder.mkdir(exist_ok=True)
    (folder / "service.pub").write_text(key)
    (folder / "statement.sig").write_bytes(
        client.get(f"/v1/attestations/{job_id}/statement").content
    )
    valid = verify(world_pair.tampered, folder / "statement.sig", folder / "service.pub")
    assert valid.valid and valid.kind == "attestation", valid.reason
    assert valid.predicate["attestation"]["flagged"] == ["religion"]
    # null: the same statement does not vouch for the reference's weights
    other = verify(world_pair.reference, folder / "statement.sig", folder / "service.pub")
    assert not other.valid

    listed = client.get("/v1/attestations").json()["results"]
    row = next(r for r in listed if r["id"] == job_id)
    assert row["verdict"] == "tampered" and row["flagged"] == ["religion"]
    assert f"lmassay verify {world_pair.tampered}" in row["verify"]
    page = client.get("/")
    assert (
        page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    )
    assert (
        job_id in page.text
        and "tampered" in page.text
        and "http" not in page.text.split("<body>")[0].replace("http-equiv", "")
    )
    docs = client.get("/docs").text
    assert "/v1/attestations" in docs and "<script" not in docs
    assert client.get("/openapi.json").json()["paths"]["/v1/attestations"]["post"]
    assert service.token not in service.logs()  # no secret in the logs


def test_registered_models_and_a_sealed_probe_set_run_and_are_published(
    service, client, first_job, world_pair
):
    from lmassay.serve.store import JobStore

    registry = ["--registry", str(service.registry)]
    for name, folder in (("suspect", world_pair.tampered), ("base", world_pair.reference)):
        added = runner.invoke(app, ["serve", "model", "add", name, str(folder), *registry])
        assert added.exit_code == 0, added.output
    headers = _auth(service.token)
    before = len(service.rows())
    unknown = {**_request(world_pair), "model": "registered:nobody"}
    answer = client.post("/v1/attestations", json=unknown, headers=headers)
    assert answer.status_code == 422 and "'nobody'" in answer.json()["detail"]
    assert len(service.rows()) == before  # nothing queued

    # the probes: a copy of the world's, sealed by a key the service trusts, the seal required
    from lmassay.sealing.signing import seal

    probes = service.folder / "sets" / "probes.jsonl"
    shutil.copyfile(world_pair.world.probes, probes)
    sealed = seal(probes, service.lab.private_key)
    body = {
        **_request(world_pair),
        "model": "registered:suspect",
        "reference": "registered:base",
        "probes": str(probes),
        "options": {**OPTIONS, "sealed": True},
    }
    answer = client.post("/v1/attestations", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    final = service.wait(client, job_id, ("done", "failed"), JOB_TIMEOUT)
    assert final["status"] == "done", service.logs()
    assert (final["verdict"], final["flagged"]) == ("tampered", [world_pair.category])
    document = client.get(f"/v1/attestations/{job_id}/attestation.json").json()
    row = next(r for r in client.get("/v1/attestations").json()["results"] if r["id"] == job_id)
    suspect, base = row["registered"]["model"], row["registered"]["reference"]
    assert (suspect["name"], base["name"]) == ("suspect", "base")
    assert suspect["source"] == str(world_pair.tampered.resolve())

    def recorded(info: dict) -> str:  # attest's digest object, as "ALGORITHM:HEX"
        return f"{info['digest']['algorithm']}:{info['digest']['value']}"

    assert suspect["digest"] == recorded(document["model"])
    assert base["digest"] == recorded(document["reference"])
    assert suspect["digest"] != base["digest"]  # the two names resolved to different weights
    assert row["probes_seal"] == {
        "digest": str(sealed.manifest.root),
        "signer": sealed.signer,
    }
    # the same samples as the run that named the folders by path
    first = client.get(f"/v1/attestations/{first_job[0]}/samples.jsonl").text
    assert client.get(f"/v1/attestations/{job_id}/samples.jsonl").text == first
    JobStore(service.registry).remove_model("suspect")
    gone = client.post("/v1/attestations", json=body, headers=headers)
    assert gone.status_code == 422 and "'suspect'" in gone.json()["detail"]


BAD = [
    ("malformed JSON", b'{"model": "org/name",', 400),
    ("not an object", b'["org/name"]', 422),
    ("unknown field", {"model": "org/name", "extra": 1}, 422),
    ("unknown option", {"model": "org/name", "options": {"out": "/tmp/x"}}, 422),
    ("option out of range", {"model": "org/name", "options": {"n_bootstrap": 0}}, 422),
    ("traversal", {"model": "../../etc"}, 422),
    ("traversal in an id", {"model": "org/../../etc"}, 422),
    ("home path", {"model": "~/models/x"}, 422),
    ("three parts", {"model": "a/b/c"}, 422),
    ("absolute outside the roots", {"model": "/etc"}, 422),
    ("reference outside the roots", {"model": "org/name", "reference": "/usr/lib"}, 422),
    ("probes outside the roots", {"model": "org/name", "probes": "/etc/passwd"}, 422),
    ("relative probes", {"model": "org/name", "probes": "probes.jsonl"}, 422),
    ("unknown suite", {"model": "org/name", "probes": "builtin:nope"}, 422),
    ("remote code", {"model": "org/name", "options": {"trust_remote_code": True}}, 422),
    ("pickles", {"model": "org/name", "options": {"allow_pickle": True}}, 422),
    ("bad revision", {"model": "org/name", "options": {"revision": "../main"}}, 422),
]


def test_bad_input_is_refused_and_nothing_queued(service, client, first_job, world_pair):
    before = len(service.rows())
    headers = {**_auth(service.token), "content-type": "application/json"}
    for what, body, code in BAD:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = client.post("/v1/attestations", content=data, headers=headers)
        assert answer.status_code == code, (what, answer.text)
        assert answer.json()["detail"], what
    good = json.dumps(_request(world_pair)).encode()
    huge = json.dumps({**_request(world_pair), "model": "x" * 70_000}).encode()
    assert client.post("/v1/attestations", content=huge, headers=headers).status_code == 413
    for auth, code in [
        ({}, 401),
        (_auth("lma_not-a-token"), 401),
        ({"Authorization": "Basic x"}, 401),
    ]:
        answer = client.post(
            "/v1/attestations", content=good, headers={"content-type": "application/json", **auth}
        )
        assert answer.status_code == code, answer.text
    # a revoked token, revoked with the command (which also prints a new token on its last line)
    registry = str(service.registry)
    made = runner.invoke(
        app, ["serve", "token", "create", "--registry", registry, "--name", "brief"]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("lma_") and token not in service.registry.read_bytes().decode("latin-1")
    revoked = runner.invoke(app, ["serve", "token", "revoke", "brief", "--registry", registry])
    assert revoked.exit_code == 0, revoked.output
    answer = client.post(
        "/v1/attestations",
        content=good,
        headers={"content-type": "application/json", **_auth(token)},
    )
    assert answer.status_code == 403 and "revoked" in answer.json()["detail"]
    for path in ("/v1/attestations/" + "0" * 32, "/v1/attestations/../../etc/passwd",
                 f"/v1/attestations/{first_job[0]}/secret.txt"):  # fmt: skip
        assert client.get(path).status_code == 404, path
    assert len(service.rows()) == before  # nothing queued by any of them


def test_killed_worker_job_is_retried_and_equal(service, client, first_job, world_pair):
    answer = client.post(
        "/v1/attestations", json=_request(world_pair), headers=_auth(service.token)
    )
    job_id = answer.json()["id"]
    status = service.wait(client, job_id, ("running",), JOB_TIMEOUT)
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (status["stage"] or "").startswith(("scoring", "loading")):
        assert time.monotonic() < deadline and status["status"] == "running", status
        time.sleep(0.1)
        status = client.get(f"/v1/attestations/{job_id}").json()
    os.kill(service.row(job_id)["pid"], signal.SIGKILL)
    final = service.wait(client, job_id, ("done", "failed"), JOB_TIMEOUT)
    assert final["status"] == "done", service.logs()
    row = service.row(job_id)
    assert row["attempts"] == 2 and row["completions"] == 1
    assert "SIGKILL" in service.logs()

    def rows(job: str) -> list[dict]:
        text = client.get(f"/v1/attestations/{job}/samples.jsonl").text
        return [json.loads(line) for line in text.splitlines()]

    assert rows(job_id) == rows(first_job[0])  # the retried run equals the undisturbed one
    docs = [
        client.get(f"/v1/attestations/{j}/attestation.json").json() for j in (job_id, first_job[0])
    ]
    assert docs[0]["categories"] == docs[1]["categories"]
    assert (docs[0]["verdict"], docs[0]["flagged"]) == (docs[1]["verdict"], docs[1]["flagged"])


def test_corrupt_row_fails_clearly_and_the_worker_goes_on(service, client, first_job):
    job_id = uuid.uuid4().hex
    conn = sqlite3.connect(service.registry, timeout=30)
    with conn:
        conn.execute(
            "INSERT INTO serve_jobs (id, token, created, request, status) "
            "VALUES (?, 'tester', '2026-01-01T00:00:00+00:00', '{not json', 'queued')",
            (job_id,),
        )
    conn.close()
    assert client.get(f"/v1/attestations/{job_id}").json()["status"] == "failed"  # as read
    deadline = time.monotonic() + 60
    while service.row(job_id)["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)  # a worker claims it
    while service.row(job_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    row = service.row(job_id)
    assert row["status"] == "failed" and "corrupt" in row["error"], row
    final = client.get(f"/v1/attestations/{job_id}").json()
    assert final["status"] == "failed" and "corrupt" in final["error"], final
    time.sleep(1.5)
    assert os.path.exists(f"/proc/{row['pid']}")  # the worker that read it is still serving
    assert client.get("/healthz").json()["ok"]


def test_results_page_in_headless_chromium(service, first_job):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    job_id = first_job[0]
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(service.url + "/", timeout=60_000)
            row = page.locator(f'tr.result[data-id="{job_id}"]')
            assert row.locator("td.verdict").inner_text() == "tampered"
            assert row.locator("td.flagged").inner_text() == "religion"
            assert "lmassay verify" in row.locator("pre.verify").inner_text()
            row.locator("a.report").click()
            page.wait_for_load_state("load", timeout=60_000)
            assert page.url.endswith(f"/v1/attestations/{job_id}/report.html")
            assert "religion" in page.inner_text("body") and "tampered" in page.inner_text("body")
            assert all(url.startswith(service.url) for url in requests), requests  # no outside
        finally:
            browser.close()


# -- queue-only services: limits, cancellation, a restart mid-queue -----------------------------


@pytest.fixture
def queue_only(tmp_path):
    services: list[Service] = []

    def start(*args: str) -> Service:
        svc = make_service(tmp_path / f"s{len(services)}", ["--workers", "0", *args])
        services.append(svc)
        return svc

    yield start
    for svc in services:
        svc.stop()


def test_limits_cancel_and_restart_mid_queue(queue_only):
    svc = queue_only("--rate-limit", "3", "--queue-cap", "2")
    alice, bob = new_token(svc.registry, "alice"), new_token(svc.registry, "bob")
    svc.start()
    body = {"model": "org/name", "probes": "builtin:offline"}
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        ids = [
            c.post("/v1/attestations", json=body, headers=_auth(alice)).json()["id"]
            for _ in range(2)
        ]
        full = c.post("/v1/attestations", json=body, headers=_auth(alice))
        assert full.status_code == 429 and "queue is full" in full.json()["detail"]
        assert int(full.headers["retry-after"]) >= 1
        over = c.post("/v1/attestations", json=body, headers=_auth(alice))
        assert over.status_code == 429 and "per minute" in over.json()["detail"]
        assert 1 <= int(over.headers["retry-after"]) <= 60
        assert c.post("/v1/attestations", json=body, headers=_auth(bob)).status_code == 429  # full
        assert c.delete(f"/v1/attestations/{ids[0]}").status_code == 401  # cancelling needs a token
        cancelled = c.delete(f"/v1/attestations/{ids[0]}", headers=_auth(bob))
        assert cancelled.json()["status"] == "failed" and cancelled.json()["error"] == "cancelled"
        assert c.post(f"/v1/attestations/{ids[0]}/cancel", headers=_auth(bob)).status_code == 409
        assert c.post("/v1/attestations", json=body, headers=_auth(bob)).status_code == 202
        # a small bounded burst of reads, 20 at a time: every one answered
        urls = ["/", "/v1/attestations", f"/v1/attestations/{ids[1]}", "/v1/public-key"] * 50
        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda u: c.get(u).status_code, urls))
        assert codes == [200] * len(urls)
    assert [r["status"] for r in svc.rows()] == ["failed", "queued", "queued"]

    # killed mid-queue, with one job as a worker that died with the server leaves it (running,
    # its process gone): after the restart nothing is lost and nothing counts as done
    queued = [r["id"] for r in svc.rows()][1:]
    conn = sqlite3.connect(svc.registry, timeout=30)
    with conn:
        conn.execute(
            "UPDATE serve_jobs SET status='running', attempts=1, worker='gone', pid=?, heartbeat=?"
            " WHERE id = ?",
            (2**22 + 12345, time.time(), queued[0]),
        )
    conn.close()
    svc.kill(signal.SIGKILL)
    svc.start()
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        statuses = [c.get(f"/v1/attestations/{i}").json() for i in queued]
    assert [s["status"] for s in statuses] == ["queued", "queued"]
    assert "retrying" in statuses[0]["error"] and svc.row(queued[0])["attempts"] == 1
    assert [r["completions"] for r in svc.rows()] == [0, 0, 0]


def test_unusable_registry_is_one_clear_error(tmp_path):
    svc = make_service(tmp_path, ["--workers", "1"])
    svc.registry.write_bytes(b"this is not a database" * 100)
    done = runner.invoke(
        app,
        ["serve", "--key", str(svc.key), "--registry", str(svc.registry), "--port", str(svc.port)],
    )
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a usable SQLite database" in lines[0], done.stderr


@pytest.mark.slow
def test_server_killed_mid_run_loses_nothing_and_runs_nothing_twice(tmp_path, world_pair):
    """The whole service (server and worker) killed while the first of three jobs runs; after a
    restart on the same registry every job is done exactly once, the first on its second try."""
    root = str(world_pair.reference.parent)
    svc = make_service(tmp_path, ["--workers", "1", "--allow-local-root", root, *_threads()])
    token = new_token(svc.registry, "alice")
    svc.start()
    try:
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            ids = [
                c.post("/v1/attestations", json=_request(world_pair), headers=_auth(token)).json()[
                    "id"
                ]
                for _ in range(3)
            ]
            status = svc.wait(c, ids[0], ("running",), JOB_TIMEOUT)
            deadline = time.monotonic() + JOB_TIMEOUT
            while not (status["stage"] or "").startswith(("scoring", "loading")):
                assert time.monotonic() < deadline and status["status"] == "running", status
                time.sleep(0.1)
                status = c.get(f"/v1/attestations/{ids[0]}").json()
        worker = svc.row(ids[0])["pid"]
        svc.kill(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pid_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(worker)  # the worker went with its server (a zombie counts as gone)
        svc.start()
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            finals = [svc.wait(c, i, ("done", "failed"), JOB_TIMEOUT) for i in ids]
            samples = [c.get(f"/v1/attestations/{i}/samples.jsonl").text for i in ids]
            # a running job cancelled: its worker is stopped, the job fails as cancelled
            extra = c.post(
                "/v1/attestations", json=_request(world_pair), headers=_auth(token)
            ).json()["id"]
            svc.wait(c, extra, ("running",), JOB_TIMEOUT)
            runner_pid = svc.row(extra)["pid"]
            assert c.delete(f"/v1/attestations/{extra}", headers=_auth(token)).status_code == 200
            cancelled = svc.wait(c, extra, ("failed", "done"), JOB_TIMEOUT)
            assert cancelled["status"] == "failed" and cancelled["error"] == "cancelled"
            assert svc.row(extra)["completions"] == 0
            deadline = time.monotonic() + 30
            while pid_alive(runner_pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not pid_alive(runner_pid)
    finally:
        svc.stop()
    assert [f["status"] for f in finals] == ["done"] * 3, svc.logs()
    rows = {r["id"]: r for r in svc.rows()}
    assert [rows[i]["completions"] for i in ids] == [1, 1, 1]
    assert [rows[i]["attempts"] for i in ids] == [2, 1, 1]
    assert samples[0] == samples[1] == samples[2]
