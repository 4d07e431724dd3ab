"""The service's queue, tokens, limits and request checks without a server (fast)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time

import pytest

from lmassay.errors import InputError
from lmassay.serve.limits import RateLimiter
from lmassay.serve.requests import (
    AttestationRequest,
    RequestRefused,
    check_model_spec,
    check_probes_spec,
    check_request,
)
from lmassay.serve.store import JobStore, hash_token


def _claim_all(registry: str, worker: str, out: multiprocessing.Queue) -> None:
    store = JobStore(registry)
    taken = []
    for _ in range(200):  # bounded
        job = store.claim(worker, os.getpid())
        if job is None:
            break
        taken.append(job.id)
    out.put(taken)


def test_concurrent_claims_take_each_job_once(tmp_path):
    store = JobStore(tmp_path / "r.sqlite")
    ids = {store.submit({"model": f"org/m{i}"}, "t", queue_cap=1000) for i in range(60)}
    assert None not in ids and len(ids) == 60
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = context.Queue()
    procs = [
        context.Process(target=_claim_all, args=(str(store.path), f"w{i}", out)) for i in range(4)
    ]
    for p in procs:
        p.start()
    taken = [job for _ in procs for job in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert sorted(taken) == sorted(ids)  # every job once, none twice
    assert store.counts() == {"running": 60}


def test_retries_then_fails_with_the_reason(tmp_path):
    store = JobStore(tmp_path / "r.sqlite")
    job_id = store.submit({"model": "org/m"}, "t", queue_cap=10)
    for attempt in (1, 2, 3):
        job = store.claim(f"w{attempt}", 1)
        assert job is not None and job.id == job_id and job.attempts == attempt
        store.worker_lost(f"w{attempt}", f"worker w{attempt} was killed by SIGKILL", 3)
    job = store.job(job_id)
    assert job is not None and job.status == "failed"
    assert job.error == "worker w3 was killed by SIGKILL; gave up after 3 attempts"
    assert store.claim("w4", 1) is None
    # a graceful stop gives the attempt back; a done job cannot be completed twice
    other = store.submit({"model": "org/n"}, "t", queue_cap=10)
    store.claim("a", 1)
    store.worker_lost("a", "the server stopped", 3, count=False)
    again = store.claim("b", 1)
    assert again is not None and again.id == other and again.attempts == 1
    assert store.complete(other, "b", "consistent", [], {})
    assert not store.complete(other, "b", "consistent", [], {})
    assert store.job(other).completions == 1  # type: ignore[union-attr]


def test_recover_takes_back_only_dead_or_silent_workers(tmp_path):
    store = JobStore(tmp_path / "r.sqlite")
    alive, dead, silent = (store.submit({"model": f"org/{n}"}, "t", 10) for n in "abc")
    store.claim("alive", os.getpid())
    store.claim("dead", 2**22 + 4321)
    store.claim("silent", os.getpid())
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "UPDATE serve_jobs SET heartbeat = ? WHERE id = ?", (time.time() - 999, silent)
        )
    assert store.recover(max_attempts=3, lease_seconds=60) == 2
    statuses = {j: store.job(j).status for j in (alive, dead, silent)}  # type: ignore[union-attr]
    assert statuses == {alive: "running", dead: "queued", silent: "queued"}


def test_tokens_store_only_hashes(tmp_path):
    store = JobStore(tmp_path / "r.sqlite")
    token, info = store.create_token("alice")
    assert token.startswith("lma_") and len(token) > 40
    assert token.encode() not in store.path.read_bytes()
    assert store.token_by_hash(hash_token(token)) == info
    assert store.token_by_hash(hash_token(token + "x")) is None
    with pytest.raises(InputError, match="already exists"):
        store.create_token("alice")
    assert store.revoke_token("alice").revoked is not None
    assert store.token_by_hash(hash_token(token)).revoked is not None  # type: ignore[union-attr]
    with pytest.raises(InputError, match="no token named"):
        store.revoke_token("bob")
    assert store.create_token()[1].name == "token-2"


def test_corrupt_registry_file_is_named(tmp_path):
    path = tmp_path / "r.sqlite"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(InputError, match="not a usable SQLite database"):
        JobStore(path)


def test_queue_cap_and_rate_limit():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.take("a") is None and limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(60.0)
    assert limiter.take("b") is None  # per token
    now[0] = 59.0
    assert limiter.take("a") == pytest.approx(1.0)
    now[0] = 60.0
    assert limiter.take("a") is None


def test_queue_cap(tmp_path):
    store = JobStore(tmp_path / "r.sqlite")
    assert store.submit({}, "t", queue_cap=1) is not None
    assert store.submit({}, "t", queue_cap=1) is None
    assert store.counts() == {"queued": 1}


def test_model_ids_and_roots(tmp_path):
    root = tmp_path / "models"
    (root / "m").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    roots = [root.resolve()]
    assert check_model_spec("org/name", [], "model") == "org/name"
    assert check_model_spec("gpt2", [], "model") == "gpt2"
    assert check_model_spec(str(root / "m"), roots, "model") == str((root / "m").resolve())
    for bad in ("../x", "org/../x", "a/b/c", ".hidden", "-rf", "org/na me", "~/m", "org\\name",
                str(root / "m"), "C:/x", "org/name\x00"):  # fmt: skip
        with pytest.raises(RequestRefused):
            check_model_spec(bad, [], "model")
    for bad in (str(root / "escape"), str(root / ".." / "outside"), str(root / "nope"), "/etc"):
        with pytest.raises(RequestRefused):
            check_model_spec(bad, roots, "model")
    assert check_probes_spec("builtin:offline", [], ["offline"]) == "builtin:offline"
    for bad in ("builtin:../offline", "builtin:nope", "probes.jsonl", "/etc/passwd"):
        with pytest.raises(RequestRefused):
            check_probes_spec(bad, roots, ["offline"])
    with pytest.raises(RequestRefused, match="no revision"):
        check_request(
            AttestationRequest(model=str(root / "m"), options={"revision": "main"}),
            roots,
            ["offline"],
        )


def test_request_fields_are_closed():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="extra"):
        AttestationRequest.model_validate({"model": "org/m", "out": "/tmp"})
    with pytest.raises(ValidationError, match="trust_remote_code is refused"):
        AttestationRequest.model_validate(
            {"model": "org/m", "options": {"trust_remote_code": True}}
        )
    with pytest.raises(ValidationError, match="pickled weights are refused"):
        AttestationRequest.model_validate({"model": "org/m", "options": {"allow_pickle": True}})
    request = AttestationRequest.model_validate({"model": "org/m"})
    assert request.options.trust_remote_code is False and request.probes == "builtin:offline"


def test_job_options_are_attest_config_fields():
    """Every option a client may set is a field of AttestConfig (nothing is dropped), but for
    the service's own (``sealed``), which attest does not know."""
    import dataclasses

    from lmassay.attest.config import AttestConfig
    from lmassay.serve.requests import SERVICE_OPTIONS, JobOptions

    fields = {f.name for f in dataclasses.fields(AttestConfig)}
    assert set(JobOptions.model_fields) - SERVICE_OPTIONS <= fields
    assert not SERVICE_OPTIONS & fields and set(JobOptions.model_fields) >= SERVICE_OPTIONS


def test_a_job_runs_attest_with_the_services_ray_and_no_remote_code(tmp_path):
    """What the worker hands to attest: the request's options, the service's --ray, remote code
    and pickles off; options that do not go together fail with attest's own reason."""
    from lmassay.serve.requests import attest_config

    request = AttestationRequest.model_validate(
        {"model": "org/m", "reference": "org/r", "options": {"per_category": 7, "seed": 3}}
    )
    config = attest_config(request, str(tmp_path / "out"), ray="local")
    assert (config.ray, config.per_category, config.seed) == ("local", 7, 3)
    assert not config.trust_remote_code and not config.allow_pickle
    assert attest_config(request, str(tmp_path / "out")).ray is None
    alone = AttestationRequest.model_validate({"model": "org/m", "options": {"comparison": "kl"}})
    with pytest.raises(InputError, match="--comparison kl needs --reference"):
        attest_config(alone, str(tmp_path / "out"))


def test_workers_on_an_unusable_registry_are_not_restarted_forever(tmp_path):
    """Each worker says once that the registry is unusable and exits 2; after three in a row
    the supervisor stops restarting that slot (no crash loop)."""
    from lmassay.serve.supervisor import QUICK_EXITS_ALLOWED, Supervisor, SupervisorSettings

    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not a database" * 100)
    store = JobStore(tmp_path / "good.sqlite")
    settings = SupervisorSettings(
        registry=broken,
        key=tmp_path / "unused.pem",
        results=tmp_path / "results",
        workers=1,
        workdir=tmp_path,
        log_dir=tmp_path / "logs",
    )
    supervisor = Supervisor(store, settings)
    supervisor.start()
    try:
        deadline = time.monotonic() + 120
        while not supervisor.slots[0].given_up and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.slots[0].given_up
        assert supervisor.slots[0].generation == QUICK_EXITS_ALLOWED  # started 3 times, no more
        time.sleep(1.5)
        assert supervisor.slots[0].generation == QUICK_EXITS_ALLOWED and supervisor.alive() == 0
    finally:
        supervisor.stop()
    lines = (tmp_path / "logs" / "worker-0.log").read_text().splitlines()
    assert len(lines) == QUICK_EXITS_ALLOWED
    assert all("not a usable SQLite database" in line for line in lines)


# -- registered models ---------------------------------------------------------------------------


def _lookup(*models):
    by_name = {m.name: m for m in models}
    return by_name.get


def test_registered_models_resolve_without_a_root_and_unknown_names_are_refused(tmp_path):
    from lmassay.serve.requests import registered_model

    folder = tmp_path / "models" / "base"
    folder.mkdir(parents=True)
    (tmp_path / "link").symlink_to(folder)
    local = registered_model("base", str(tmp_path / "link"))
    assert local.source == str(folder.resolve()) and local.local and local.revision is None
    hub = registered_model("suspect.v2", "org/suspect", "v2.0")
    assert (hub.source, hub.revision, hub.local) == ("org/suspect", "v2.0", False)
    for name, source, revision in [
        ("a/b", "org/x", None),  # a name is never hub-id-like
        ("x:y", "org/x", None),
        ("ok", str(tmp_path / "missing"), None),  # neither a folder nor a hub id
        ("ok", "../up", None),
        ("ok", str(folder), "main"),  # a local folder has no revision
        ("ok", "org/x", "../main"),
    ]:
        with pytest.raises(InputError):
            registered_model(name, source, revision)

    lookup = _lookup(local, hub)
    request = AttestationRequest(model="registered:suspect.v2", reference="registered:base")
    checked = check_request(request, (), ["offline"], lookup)  # no allow-listed root at all
    assert checked.model == "org/suspect" and checked.options.revision == "v2.0"
    assert checked.reference == str(folder.resolve())
    assert checked.options.reference_revision is None
    # a plain hub id is untouched by the lookup; the same folder by path still needs a root
    assert check_request(AttestationRequest(model="org/base"), (), ["offline"], lookup).model == (
        "org/base"
    )
    with pytest.raises(RequestRefused, match="not accepted"):
        check_request(AttestationRequest(model=str(folder)), (), ["offline"], lookup)
    refused = [
        ({"model": "registered:nope"}, "'nope'"),
        ({"model": "org/x", "reference": "registered:nope"}, "reference: no model named 'nope'"),
        ({"model": "registered:a/b"}, "not registered:NAME"),
        ({"model": "registered:suspect.v2", "options": {"revision": "main"}}, "revision"),
    ]
    for body, message in refused:
        with pytest.raises(RequestRefused, match=message):
            check_request(AttestationRequest(**body), (), ["offline"], lookup)
    with pytest.raises(RequestRefused, match="no model named 'base'"):  # no lookup: none known
        check_request(AttestationRequest(model="registered:base"), (), ["offline"])
    folder.rmdir()  # a registered folder that is gone is refused without naming its path
    with pytest.raises(RequestRefused, match="not available") as gone:
        check_request(AttestationRequest(model="registered:base"), (), ["offline"], lookup)
    assert str(tmp_path) not in str(gone.value)


def test_model_table_add_list_remove_and_the_cli(tmp_path):
    from typer.testing import CliRunner

    from lmassay.cli import app

    registry = tmp_path / "r.sqlite"
    folder = tmp_path / "base"
    folder.mkdir()
    runner = CliRunner()
    args = ["--registry", str(registry)]
    added = runner.invoke(app, ["serve", "model", "add", "base", str(folder), *args])
    assert added.exit_code == 0, added.output
    hub = ["serve", "model", "add", "sus", "org/sus", "--revision", "abc", *args]
    assert runner.invoke(app, hub).exit_code == 0
    again = runner.invoke(app, ["serve", "model", "add", "base", "org/other", *args])
    assert again.exit_code == 2 and "already registered" in again.output
    bad = runner.invoke(app, ["serve", "model", "add", "x", str(tmp_path / "missing"), *args])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    store = JobStore(registry)
    assert [(m.name, m.source, m.revision) for m in store.models()] == [
        ("base", str(folder.resolve()), None),
        ("sus", "org/sus", "abc"),
    ]
    listed = runner.invoke(app, ["serve", "model", "list", *args]).output.splitlines()
    assert [line.split("\t")[:3] for line in listed] == [
        ["base", str(folder.resolve()), "-"],
        ["sus", "org/sus", "abc"],
    ]
    assert runner.invoke(app, ["serve", "model", "remove", "base", *args]).exit_code == 0
    assert store.model("base") is None and store.model("sus") is not None
    gone = runner.invoke(app, ["serve", "model", "remove", "base", *args])
    assert gone.exit_code == 2 and "no model named 'base'" in gone.output


# -- sealed probe sets -----------------------------------------------------------------------------


def test_sealed_probe_sets_verify_with_a_trusted_key_only(tmp_path):
    from lmassay.sealing.keys import generate_keypair, public_key_fingerprint
    from lmassay.sealing.signing import seal
    from lmassay.serve.sealed import probe_signature, verify_probes
    from lmassay.serve.store import Job
    from lmassay.serve.worker import WorkerSettings, run_job

    lab = generate_keypair(tmp_path / "keys" / "lab.pem")
    other = generate_keypair(tmp_path / "keys" / "other.pem")
    root = tmp_path / "probes"
    root.mkdir()
    probes = root / "probes.jsonl"
    probes.write_text('{"text": "a probe", "category": "x"}\n' * 3)
    plain = root / "plain.jsonl"
    plain.write_text(probes.read_text())
    assert probe_signature(str(probes)) is None
    sealed = seal(probes, lab.private_key)
    assert probe_signature(str(probes)) == probes.with_name("probes.jsonl.sig")
    assert probe_signature("builtin:offline") is None

    found = verify_probes(str(probes), [other.public_key, lab.public_key])
    assert found.digest == str(sealed.manifest.root)
    assert found.signer == public_key_fingerprint(lab.public_key)
    for keys, message in [
        ([other.public_key], "does not verify with any trusted key"),  # null: an untrusted signer
        ([], "trusts no key"),
    ]:
        with pytest.raises(InputError, match=message) as refused:
            verify_probes(str(probes), keys)
        assert str(tmp_path) not in str(refused.value)
    with pytest.raises(InputError, match="not sealed"):
        verify_probes(str(plain), [lab.public_key])

    # the request: options.sealed needs a sealed file; a sealed file needs a trusted key here
    def check(probes_spec: str, sealed: bool, trusts: bool):
        body = AttestationRequest(model="org/m", probes=probes_spec, options={"sealed": sealed})
        return check_request(body, [root.resolve()], ["offline"], trusts_keys=trusts)

    assert check(str(probes), True, True).options.sealed
    assert check(str(plain), False, False).probes == str(plain.resolve())
    for spec, want, trusts, message in [
        (str(plain), True, True, "no signature beside it"),
        ("builtin:offline", True, True, "built-in suite is not a sealed"),
        (str(probes), False, False, "trusts no key"),
    ]:
        with pytest.raises(RequestRefused, match=message):
            check(spec, want, trusts)

    # the worker verifies before attesting: a changed probe file fails the job with the reason
    probes.write_text(probes.read_text() + '{"text": "slipped in", "category": "x"}\n')
    store = JobStore(tmp_path / "r.sqlite")
    stored = check(str(probes), True, True).model_dump(mode="json")
    store.submit(stored, "t", queue_cap=10)
    job = store.claim("w", os.getpid())
    assert isinstance(job, Job)
    settings = WorkerSettings(
        registry=store.path,
        key=lab.private_key,
        results=tmp_path / "results",
        worker_id="w",
        parent_pid=os.getppid(),
        trust_keys=(lab.public_key,),
    )

    class Beat:
        def __init__(self) -> None:
            self.stages: list[str] = []

        def set(self, **progress):
            self.stages.append(progress.get("stage"))

    beat = Beat()
    with pytest.raises(InputError, match="does not verify") as failed:
        run_job(job, settings, beat)  # type: ignore[arg-type]
    assert "content changed" in str(failed.value) and str(tmp_path) not in str(failed.value)
    assert beat.stages == ["verifying the probe set's seal"]  # nothing was attested
    assert not (tmp_path / "results").exists()
