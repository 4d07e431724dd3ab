"""Load on a live ``lmassay serve`` (loopback): a burst of reads and of job submissions.

Starts a service (``--workers N``) on the test-size world's reference and suppression variant,
publishes one result, then runs ``--reads`` GETs at ``--concurrency`` at once (the results page,
the list, a job's status, its attestation.json, the public key, in turn) and ``--submissions``
POSTs (10 at once), and waits (bounded by ``--timeout``) until every accepted job has finished.
Prints a table: requests, errors, throughput, p50/p99 latency, jobs done, jobs run more than
once, and the machine's load average.  Every loop is bounded in count and time.

    .venv/bin/python benchmarks/serve_load.py --reads 2000 --concurrency 50 --submissions 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' live server
from serve_support import make_service, new_token


def _pair():
    from lmassay.world.demo import DemoConfig
    from lmassay.world.pair import make_pair

    return make_pair(DemoConfig(size="test", kind="suppression").pair())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _burst(
    url: str, requests: list[tuple[str, str, dict | None, dict]], concurrency: int
) -> tuple[list[float], list[str], float]:
    """Send ``requests`` (method, path, json, headers), ``concurrency`` at a time; latencies (s),
    the errors, the wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_worker() -> None:
            while True:
                try:
                    method, path, body, headers = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    answer = await client.request(method, path, json=body, headers=headers)
                    ok = answer.status_code in (200, 202)
                    if not ok:
                        errors.append(f"{method} {path}: {answer.status_code} {answer.text[:100]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{method} {path}: {type(exc).__name__}")
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0


def _row(name: str, latencies: list[float], errors: list[str], wall: float) -> str:
    return (
        f"| {name} | {len(latencies)} | {len(errors)} | {len(latencies) / wall:.1f} | "
        f"{1000 * statistics.median(latencies):.1f} | {1000 * _percentile(latencies, 0.99):.1f} | "
        f"{wall:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--per-category", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=3600, help="most seconds for the jobs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    os.environ.setdefault("LMASSAY_CACHE", os.environ.get("LMASSAY_TEST_CACHE", ""))
    pair = _pair()
    folder = Path(tempfile.mkdtemp(prefix="lmassay-serve-load-"))
    service = make_service(
        folder,
        [
            "--workers", str(args.workers), "--threads", str(args.threads),
            "--allow-local-root", str(pair.reference.parent),
            "--rate-limit", str(args.submissions + 10), "--queue-cap", str(args.submissions + 10),
        ],
    )  # fmt: skip
    token = new_token(service.registry, "load")
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "model": str(pair.tampered),
        "reference": str(pair.reference),
        "probes": str(pair.world.probes),
        "options": {"per_category": args.per_category, "n_bootstrap": 100, "n_permutations": 0},
    }
    load_before = os.getloadavg()
    service.start()
    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            first = client.post("/v1/attestations", json=body, headers=headers).json()["id"]
            service.wait(client, first, ("done",), args.timeout)
        paths = ["/", "/v1/attestations", f"/v1/attestations/{first}",
                 f"/v1/attestations/{first}/attestation.json", "/v1/public-key"]  # fmt: skip
        reads = [("GET", paths[i % len(paths)], None, {}) for i in range(args.reads)]
        read_lat, read_err, read_wall = asyncio.run(_burst(service.url, reads, args.concurrency))
        posts = [("POST", "/v1/attestations", body, headers)] * args.submissions
        t_jobs = time.perf_counter()
        post_lat, post_err, post_wall = asyncio.run(_burst(service.url, posts, 10))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            rows = service.rows()
            if all(r["status"] in ("done", "failed") for r in rows):
                break
            time.sleep(2)
        jobs_wall = time.perf_counter() - t_jobs
        rows = service.rows()[1:]
    finally:
        service.stop()
    load_after = os.getloadavg()
    done = sum(r["status"] == "done" for r in rows)
    once = sum(r["completions"] == 1 and r["attempts"] == 1 for r in rows)
    twice = sum(r["completions"] > 1 for r in rows)
    verdicts = sorted({(r["verdict"], r["flagged"]) for r in rows if r["status"] == "done"})
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load average before: {load_before[0]:.2f} / after: {load_after[0]:.2f} (1 min)")
    print(f"workers: {args.workers} x {args.threads} torch threads\n")
    print("| burst | requests | errors | per second | p50 ms | p99 ms | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(_row(f"reads, {args.concurrency} at once", read_lat, read_err, read_wall))
    if post_lat:  # --submissions 0: the reads alone
        print(_row("submissions, 10 at once", post_lat, post_err, post_wall))
    print(
        f"\njobs: {len(rows)} accepted, {done} done, {once} completed exactly once on the first "
        f"attempt, {twice} completed more than once; all jobs finished in {jobs_wall:.0f} s "
        f"({len(rows) / max(jobs_wall, 1e-9) * 60:.1f} jobs/min); verdicts {verdicts}"
    )
    for error in (read_err + post_err)[:5]:
        print("error:", error)
    if args.json is not None:
        figures = {
            "reads": _figures(read_lat, read_err, read_wall),
            "submissions": _figures(post_lat, post_err, post_wall) if post_lat else None,
            "jobs": {"accepted": len(rows), "done": done, "exactly_once": once,
                     "more_than_once": twice, "wall": jobs_wall},
            "load": {"before": load_before, "after": load_after},
        }  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2))


def _figures(latencies: list[float], errors: list[str], wall: float) -> dict[str, float]:
    return {
        "n": len(latencies),
        "errors": len(errors),
        "wall": wall,
        "p50": statistics.median(latencies),
        "p99": _percentile(latencies, 0.99),
    }


if __name__ == "__main__":
    main()
