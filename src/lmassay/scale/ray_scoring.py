"""Sharded scoring on Ray: the probe batches split into shards, scored by Ray actors.

``lmassay attest --ray local`` starts a private Ray cluster on this machine for the run (loopback
only, no dashboard) and shuts it down at the end; ``--ray ADDRESS`` joins a running cluster (``ray
start --head`` on one machine, ``ray start --address HEAD:6379`` on the others; see
``docs/scale.md``) and leaves it running.  A process that is already connected to Ray (a caller
that ran ``ray.init`` itself: a test, a service worker) scores on that cluster.

How a run is split:

* Workers are Ray Core actors (:class:`ShardScorer`), one per GPU of the cluster (``num_gpus=1``
  each), or one per CPU when it has none (``num_cpus=1``), or ``--ray-workers N``.  Each loads the
  model and the reference ONCE, through :mod:`lmassay.attest.model_loading` with the run's options
  and ``--offload`` (``stream``: the actor streams the blocks from the safetensors files, as the
  single-process path does), and then scores shard after shard.
* The driver plans the windows and batches exactly as the single-process engine does
  (:func:`lmassay.attest.windows.plan_batches`, with the token budget the workers' device gives)
  and cuts the batch list into :data:`SHARDS_PER_WORKER` shards per worker of about equal scored
  tokens.  A shard is a set of whole batches (the batches holding the windows of one long text go
  to one shard), so a worker re-planning its shard gets the very same batches: every token is
  computed in the same batch, with the same padding, as in one process.
* Scheduling is :class:`ray.util.ActorPool` (a free worker takes the next shard); a worker whose
  process dies is restarted by Ray (``max_restarts``), reloads the models and its shard is run
  again (``max_task_retries``).  The driver keeps one result per shard and puts every sample's
  scores in its place; a sample missing or filled twice is an error, never a quiet gap.
* Only per-token scalars come back (:class:`~lmassay.attest.scoring.TokenScores`); the driver
  runs the statistics as in one process.

Ray moves arguments and results between processes with its own serializer (pickle protocol 5):
only token ids and score arrays travel, never weights, which every worker reads itself.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lmassay.attest.model_loading import LoadedModel, ModelOptions
from lmassay.attest.reduction import output_width
from lmassay.attest.scoring import TokenScores
from lmassay.attest.streaming import Offload, score_models
from lmassay.attest.windows import make_windows, plan_batches, resolve_token_budget
from lmassay.errors import InputError
from lmassay.progress import NullProgress, Progress, ProgressFn
from lmassay.scale.options import LOCAL

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from lmassay.attest.reference_cache import BatchRows

__all__ = [
    "LOCAL",
    "SHARDS_PER_WORKER",
    "ModelSpec",
    "RayPool",
    "ShardScorer",
    "WorkerSpec",
    "connected",
    "plan_shards",
    "ray_pool",
]

SHARDS_PER_WORKER = 4
"""Shards per worker: enough that a fast worker takes more of them and that a shard run again after
a worker died is a small part of the run, few enough that each shard is many batches."""
MAX_RESTARTS = 3
"""Times Ray restarts a worker whose process died (each restart reloads the models)."""
CONNECT_TIMEOUT_S = 10.0
"""How long ``--ray ADDRESS`` waits for the address to answer before giving up."""


@dataclass(frozen=True)
class ModelSpec:
    """A model a worker loads: its folder or hub id and the options it is loaded with."""

    spec: str
    options: ModelOptions


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker loads: models by role (``model``, ``reference``) and how (``offload``)."""

    models: tuple[tuple[str, ModelSpec], ...]
    offload: Offload = "none"


@dataclass(frozen=True)
class WorkerInfo:
    """A loaded worker: its process, node and the device its models are on."""

    pid: int
    node: str
    device: str
    streamed: bool
    """``--offload stream``: the worker reads one block at a time (no weights held)."""
    load_seconds: float


@dataclass(frozen=True)
class ShardJob:
    """One shard: token lists of some samples and how to score them."""

    index: int
    token_lists: list[np.ndarray]
    roles: tuple[str, ...]
    prefix_token_id: int
    max_length: int
    token_budget: int
    topk: int = 0


@dataclass(frozen=True)
class CacheJob:
    """One shard of ``reference build``: its texts, the cache row of each one's first token
    (``offsets``), and the cache's settings."""

    index: int
    token_lists: list[np.ndarray]
    offsets: np.ndarray  # (S_shard,) int64
    calibration: np.ndarray  # (C,) int64, all the cache's calibration rows
    top_k: int
    ids_dtype: str
    max_length: int
    token_budget: int


class ShardScorer:
    """A Ray worker's body: the models loaded once, then :meth:`score` per shard."""

    def __init__(self, spec: WorkerSpec) -> None:
        t0 = time.perf_counter()
        materialise = spec.offload == "none"
        self.offload: Offload = spec.offload
        self.models: dict[str, LoadedModel] = {
            role: model.options.load(model.spec, materialise=materialise)
            for role, model in spec.models
        }
        self.load_seconds = time.perf_counter() - t0

    def info(self) -> WorkerInfo:
        import ray

        any_model = next(iter(self.models.values()))
        return WorkerInfo(
            pid=os.getpid(),
            node=ray.get_runtime_context().get_node_id(),
            device=any_model.device,
            streamed=not any_model.extra.get("materialised", True),
            load_seconds=self.load_seconds,
        )

    def token_budget(self, roles: tuple[str, ...], max_length: int, asked: int | None) -> int:
        """The tokens per batch the scoring engine uses here for ``roles`` scored together (the
        device type of the loaded model, or the streamed model's device, as the engine reads it)."""
        models = [self.models[role] for role in roles]
        if self.offload == "stream":
            device = models[0].device
        else:
            device = next(models[0].model.parameters()).device.type
        widths = [output_width(m.model) for m in models]
        return resolve_token_budget(asked, widths, max_length, device)

    def score(self, job: ShardJob) -> tuple[int, list[TokenScores]]:
        """The shard's scores, one :class:`TokenScores` per text, in the shard's order."""
        models = [self.models[role] for role in job.roles]
        scores = score_models(
            cast("list[Sequence[int]]", job.token_lists),  # int64 arrays, read as sequences
            models[0],
            models[1] if len(models) > 1 else None,
            offload=self.offload,
            prefix_token_id=job.prefix_token_id,
            max_length=job.max_length,
            token_budget=job.token_budget,
            topk=job.topk,
        )
        return job.index, scores

    def reference_batches(self, job: CacheJob) -> tuple[int, list[BatchRows]]:
        """The shard's reference-cache rows, batch by batch (``reference build --ray``)."""
        from lmassay.attest.reference_cache import reference_batches

        batches = reference_batches(
            cast("list[Sequence[int]]", job.token_lists),
            self.models["reference"],
            offsets=job.offsets,
            calibration=job.calibration,
            top_k=job.top_k,
            ids_dtype=job.ids_dtype,
            max_length=job.max_length,
            token_budget=job.token_budget,
        )
        return job.index, list(batches)


def plan_shards(
    token_lists: Sequence[Sequence[int]],
    prefix_token_id: int,
    max_length: int,
    token_budget: int,
    n_shards: int,
) -> list[list[int]]:
    """Sample indices of each shard (increasing), the batches of one process cut into shards.

    The batches are those :func:`lmassay.attest.windows.plan_batches` makes for all the texts;
    batches that share a text (a long text's windows) stay together, and runs of whole batches of
    about ``total / n_shards`` scored tokens make a shard.  Because the batches are packed longest
    first and a batch closes at a count fixed by its first (longest) window, the texts of a run of
    whole batches, planned alone, give back exactly those batches.
    """
    windows = make_windows(token_lists, prefix_token_id, max_length)
    batches = plan_batches(windows, token_budget)
    # join the batches that hold windows of one text: each group is a run of one or more batches
    group_of_sample: dict[int, int] = {}
    parent: list[int] = []

    def find(group: int) -> int:
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    for b, batch in enumerate(batches):
        parent.append(b)
        for window in batch:
            seen = group_of_sample.setdefault(window.sample, b)
            parent[find(b)] = find(seen)
    groups: dict[int, list[int]] = {}
    for b in range(len(batches)):
        groups.setdefault(find(b), []).append(b)
    ordered = sorted(groups.values(), key=lambda members: members[0])
    total = sum(w.n_scored for w in windows)
    target = total / max(1, n_shards)
    shards: list[list[int]] = []
    current: set[int] = set()
    tokens = 0
    for members in ordered:
        for b in members:
            for window in batches[b]:
                current.add(window.sample)
                tokens += window.n_scored
        if tokens >= target * (len(shards) + 1) and len(shards) < n_shards - 1:
            shards.append(sorted(current))
            current = set()
    if current:
        shards.append(sorted(current))
    return shards


class RayPool:
    """Ray workers holding the models, and the driver's side of scoring on them."""

    def __init__(self, actors: list[ActorHandle], infos: list[WorkerInfo]) -> None:
        self.actors, self.infos = actors, infos

    @property
    def n_workers(self) -> int:
        return len(self.actors)

    def score(
        self,
        token_lists: Sequence[Sequence[int]],
        roles: tuple[str, ...],
        *,
        prefix_token_id: int,
        max_length: int,
        token_budget: int | None = None,
        topk: int = 0,
        progress: ProgressFn | None = None,
    ) -> list[TokenScores]:
        """What :func:`lmassay.attest.streaming.score_models` returns for ``token_lists`` with the
        models of ``roles`` (``("model", "reference")`` scores them in lock-step), scored in
        shards on the workers (see the module docstring)."""
        budget, shards, arrays = self._shards(
            token_lists, roles, prefix_token_id, max_length, token_budget
        )
        jobs = [
            ShardJob(
                i, [arrays[s] for s in shard], roles, prefix_token_id, max_length, budget, topk
            )
            for i, shard in enumerate(shards)
        ]
        results: list[TokenScores | None] = [None] * len(token_lists)
        total, done = sum(len(t) for t in token_lists), 0
        for index, scores in self._map("score", jobs):
            for sample, sample_scores in zip(shards[index], scores, strict=True):
                if results[sample] is not None:
                    raise RuntimeError(f"sample {sample} came back from two shards")
                results[sample] = sample_scores
                done += sample_scores.n_tokens
            if progress is not None:
                progress(done, total)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{len(missing)} samples came back from no shard: {missing[:5]}")
        return [r for r in results if r is not None]

    def reference_batches(
        self,
        token_lists: Sequence[Sequence[int]],
        prefix_token_id: int,
        *,
        offsets: np.ndarray,
        calibration: np.ndarray,
        top_k: int,
        ids_dtype: str,
        max_length: int,
        token_budget: int | None,
    ) -> Iterator[BatchRows]:
        """What :func:`lmassay.attest.reference_cache.reference_batches` yields for the whole
        corpus, shard by shard as the workers finish them (each batch once)."""
        roles = ("reference",)
        budget, shards, arrays = self._shards(
            token_lists, roles, prefix_token_id, max_length, token_budget
        )
        jobs = [
            CacheJob(
                i,
                [arrays[s] for s in shard],
                offsets[shard],
                calibration,
                top_k,
                ids_dtype,
                max_length,
                budget,
            )
            for i, shard in enumerate(shards)
        ]
        seen: set[int] = set()
        for index, batches in self._map("reference_batches", jobs):
            if index in seen:
                raise RuntimeError(f"shard {index} came back twice")
            seen.add(index)
            yield from batches
        if len(seen) != len(jobs):
            raise RuntimeError(f"{len(jobs) - len(seen)} shards came back from no worker")

    def _shards(
        self,
        token_lists: Sequence[Sequence[int]],
        roles: tuple[str, ...],
        prefix_token_id: int,
        max_length: int,
        token_budget: int | None,
    ) -> tuple[int, list[list[int]], list[np.ndarray]]:
        """The workers' token budget, the shards (see :func:`plan_shards`) and the texts as arrays."""
        import ray

        budget = int(ray.get(self.actors[0].token_budget.remote(roles, max_length, token_budget)))
        shards = plan_shards(
            token_lists, prefix_token_id, max_length, budget, SHARDS_PER_WORKER * self.n_workers
        )
        arrays = [np.asarray(tokens, dtype=np.int64) for tokens in token_lists]  # (n,) each
        return budget, shards, arrays

    def _map(self, method: str, jobs: Sequence[Any]) -> Iterator[Any]:
        """Each job's result from the workers' ``method``, in the order they finish:
        :class:`ray.util.ActorPool` gives a free worker the next job."""
        from ray.util import ActorPool

        def submit(actor: Any, job: Any) -> Any:
            return getattr(actor, method).remote(job)

        yield from ActorPool(self.actors).map_unordered(submit, list(jobs))


@contextmanager
def ray_pool(
    address: str, spec: WorkerSpec, workers: int | None, progress: Progress | None = None
) -> Iterator[RayPool]:
    """Workers on the cluster at ``address`` (see :func:`connected`), each with ``spec``'s models
    loaded; they are ended when the block exits."""
    import ray

    progress = progress or NullProgress()
    with connected(address, progress) as resources:
        n, options = _worker_shape(resources, workers)
        remote = ray.remote(ShardScorer).options(
            max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS, **options
        )
        progress.log(f"ray: starting {n} workers, each loading the model(s)")
        actors = cast("list[ActorHandle]", [remote.remote(spec) for _ in range(n)])
        try:
            infos = _ready(actors)
            slowest = max(info.load_seconds for info in infos)
            how = "blocks streamed from disk" if infos[0].streamed else "models loaded"
            progress.log(
                f"ray: {n} workers ready on {len({i.node for i in infos})} node(s), "
                f"device {infos[0].device}, {how} in {slowest:.1f} s"
            )
            yield RayPool(actors, infos)
        finally:
            for actor in actors:
                ray.kill(actor)


def _ready(actors: list[ActorHandle]) -> list[WorkerInfo]:
    """Wait for every worker to load its models; a worker that cannot load them is one
    :class:`InputError` (the driver loaded them, so the worker's node reads other files)."""
    import ray
    from ray.exceptions import RayActorError

    try:
        return list(ray.get([actor.info.remote() for actor in actors]))
    except RayActorError as exc:
        if not getattr(exc, "actor_init_failed", False):
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(
            f"ray: a worker could not load the models ({lines[-1] if lines else 'no message'})",
            "make the models readable at the same path (or hub id) on every node of the cluster",
        ) from None


def _worker_shape(resources: dict[str, float], workers: int | None) -> tuple[int, dict[str, Any]]:
    """How many workers, and the resources each asks Ray for: a GPU each when the cluster has
    GPUs, else a CPU each."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    kind, have = ("GPU", gpus) if gpus else ("CPU", cpus)
    n = workers or have
    if n < 1 or n > have:
        raise InputError(
            f"--ray-workers {n} needs {n} {kind}s but the Ray cluster offers {have}",
            f"use --ray-workers {max(1, have)} or less, or add machines (ray start --address)",
        )
    options: dict[str, Any] = {"num_cpus": 1}
    if gpus:
        options["num_gpus"] = 1
    return n, options


@contextmanager
def connected(address: str, progress: Progress | None = None) -> Iterator[dict[str, float]]:
    """Connect this process to Ray and yield the cluster's resources.

    ``local``: a private cluster on this machine (loopback, no dashboard), shut down at the end;
    any other address: a running cluster, left running (the connection is closed at the end).
    Already connected (``ray.is_initialized()``): that connection, left open.  An address that
    does not answer within :data:`CONNECT_TIMEOUT_S` raises :class:`InputError`.
    """
    import ray

    progress = progress or NullProgress()
    if address != LOCAL:
        check_reachable(address)
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if address == LOCAL:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private cluster reports nothing
        progress.log("ray: starting a private local cluster")
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address="127.0.0.1",
        )
    else:
        progress.log(f"ray: joining the cluster at {address}")
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise _unreachable(address, str(exc).splitlines()[0]) from None
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray
client server) answers with its own SETTINGS frame."""


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`InputError` unless a gRPC server answers at ``address`` within ``timeout``.

    ``ray.init(address=...)`` waits a long time on an address where nothing, or something other
    than Ray, listens; this check is bounded.  ``auto`` (a cluster started on this machine) is
    left to Ray, which answers at once when there is none; ``local`` is started, not reached.
    """
    if address in ("auto", LOCAL):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"--ray {address!r} is not HOST:PORT",
            "pass the address `ray start --head` printed (e.g. 10.0.0.1:6379), or local",
        )
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(_HTTP2_PREFACE)
            frame = sock.recv(9)  # the server's first frame header
    except OSError as exc:
        raise _unreachable(address, exc.strerror or type(exc).__name__) from None
    if len(frame) < 9 or frame[3] != 0x04:  # not a SETTINGS frame: not a gRPC server
        raise _unreachable(address, "something answers there, but not Ray")


def _unreachable(address: str, reason: str) -> InputError:
    return InputError(
        f"--ray {address!r} cannot be reached ({reason})",
        "start a cluster there with `ray start --head` and pass the address it prints, "
        "or use --ray local",
    )
