"""``lmassay serve``: open the queue, take back jobs whose workers died, start the workers,
answer HTTP until stopped (SIGINT/SIGTERM), then stop the workers."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from lmassay.serve.config import ServeConfig
from lmassay.serve.store import JobStore
from lmassay.serve.supervisor import Supervisor, SupervisorSettings

__all__ = ["open_service", "serve"]

log = logging.getLogger("lmassay.serve")


def open_service(config: ServeConfig) -> JobStore:
    """Check the settings and open the queue (an unusable registry raises InputError here, once:
    the command exits 2 with the reason instead of restarting)."""
    config.validate()
    store = JobStore(config.registry_path())
    config.results_path().mkdir(parents=True, exist_ok=True)
    return store


def serve(config: ServeConfig) -> None:
    """Run the service until it is stopped."""
    import uvicorn

    from lmassay.serve.app import create_app

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    store = open_service(config)
    taken_back = store.recover(config.max_attempts, config.lease_seconds)
    if taken_back:
        log.warning("%d running jobs had lost their workers: queued again or failed", taken_back)
    app = create_app(config, store)
    workdir = Path(tempfile.mkdtemp(prefix="lmassay-serve-cwd-"))
    supervisor = Supervisor(
        store,
        SupervisorSettings(
            registry=config.registry_path().resolve(),  # the workers run in another folder
            key=config.key.resolve(),
            results=config.results_path().resolve(),
            workers=config.workers,
            max_attempts=config.max_attempts,
            ray=config.ray,
            threads=config.threads,
            trust_keys=tuple(Path(k).resolve() for k in config.trust_keys),
            workdir=workdir,
            log_dir=config.results_path() / "logs",
            extra_env=config.worker_env,
        ),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            access_log=True,
            limit_concurrency=512,
            timeout_graceful_shutdown=5,
            server_header=False,
        )
    )
    supervisor.start()
    log.info(
        "lmassay serve on %s: %d workers, registry %s, results %s",
        config.base_url,
        config.workers,
        config.registry_path(),
        config.results_path(),
    )
    try:
        server.run()
    finally:
        supervisor.stop()
        shutil.rmtree(workdir, ignore_errors=True)
