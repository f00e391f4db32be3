"""`agentflow serve --replicas N` on Ray Serve (the `serve-ray` extra): the same FastAPI app in
N replica processes behind Ray Serve's HTTP proxy, and one `RunDirectory` replica they share,
so `GET /v1/runs/{id}` finds a run whichever replica made it (see `shared_runs`).

Only Ray Serve's public API: `serve.deployment`, `serve.ingress` (the app built on the replica
by `__serve_build_asgi_app__`, so nothing of a live app is pickled), deployment handles between
the replicas and the directory, `serve.run`. Each replica admits `max_runs` and `max_queue` of
its own; Ray Serve's own per-replica cap sits above that, so the replica's 429 is what a
client sees. A replica builds its configuration itself from `build` (a picklable function):
models and search indexes are opened in the process that uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.config import HTTPOptions
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp

from agentflow.server.app import create_app
from agentflow.server.config import ServerConfig
from agentflow.server.runs import RunId
from agentflow.server.service import ChatService
from agentflow.server.shared_runs import (
    MirroredRunStore,
    PublishBarrier,
    RunDirectory,
    RunSnapshot,
)

__all__ = ["APP_NAME", "application", "drain", "local_ray", "run_locally"]

APP_NAME = "agentflow"
READS_PER_REPLICA = 256
"""Requests a replica takes beyond its runs in flight and queued (run reads, /health,
/metrics, the chat page) before Ray Serve holds them back."""
DIRECTORY_REQUESTS = 100_000
"""The directory answers every replica's publications and reads, each a dict access."""
SHUTDOWN_BACKSTOP = 5.0
"""Seconds past `grace` before Ray Serve stops a replica that is still answering."""
FRAMES_SETTLE = 1.0
"""Seconds the drained replicas' last frames have to cross the proxy before it stops."""
logger = logging.getLogger("agentflow.server")


class RunDirectoryServer:
    """The one store of runs the replicas share, and where they hear that they must drain:
    each replica holds a `until_draining` call open, which `drain` answers."""

    def __init__(self, ttl: float, max_count: int, max_bytes: int) -> None:
        self.directory = RunDirectory(ttl=ttl, max_count=max_count, max_bytes=max_bytes)
        self._draining = asyncio.Event()
        self._drained = asyncio.Condition()
        self._drained_count = 0

    async def until_draining(self) -> None:
        await self._draining.wait()

    async def drained(self) -> None:
        async with self._drained:
            self._drained_count += 1
            self._drained.notify_all()

    async def drain(self, replicas: int, within: float) -> int:
        """Tell every replica to drain; wait up to `within` seconds until `replicas` have
        finished. Returns how many did."""
        self._draining.set()
        async with self._drained:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._drained.wait_for(lambda: self._drained_count >= replicas)
            return self._drained_count

    async def put(self, snapshots: list[RunSnapshot]) -> None:
        for snapshot in snapshots:
            self.directory.put(snapshot)

    async def get(self, run_id: RunId) -> RunSnapshot | None:
        return self.directory.get(run_id)


class ChatReplica:
    """One replica: agentflow's app, its runs published to the directory."""

    def __init__(
        self, build: Callable[[], ServerConfig], grace: float, directory: DeploymentHandle[Any]
    ) -> None:
        self.build = build
        self.grace = grace
        self.directory = directory
        self._draining: asyncio.Task[None] | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        runs = MirroredRunStore(self._publish, self._lookup)
        app = create_app(self.build(), grace=self.grace, service=partial(self._service, runs))
        replica = serve.get_replica_context().replica_id.unique_id
        return PublishBarrier(app, runs, replica)

    def _service(self, runs: MirroredRunStore, config: ServerConfig) -> ChatService:
        """The app's service (built in its lifespan), drained when the directory says so."""
        service = ChatService(config, runs=runs)
        self._draining = asyncio.create_task(self._drain_when_told(service))
        return service

    async def _drain_when_told(self, service: ChatService) -> None:
        """Ray Serve's own shutdown would kill the HTTP proxy at once, cutting every stream:
        `agentflow serve --replicas` drains each replica first, through the directory (new
        chats and /ready say 503, running answers have `grace` seconds, then an error)."""
        await self.directory.until_draining.remote()
        try:
            await service.drain(self.grace)
        finally:
            await self.directory.drained.remote()

    async def _publish(self, snapshots: list[RunSnapshot]) -> None:
        await self.directory.put.remote(snapshots)

    async def _lookup(self, run_id: RunId) -> RunSnapshot | None:
        found: RunSnapshot | None = await self.directory.get.remote(run_id)
        return found


DIRECTORY: Deployment = serve.deployment(
    num_replicas=1,
    max_ongoing_requests=DIRECTORY_REQUESTS,
    ray_actor_options={"num_cpus": 0},
    logging_config={"log_level": "WARNING"},  # not a line per publication
)(RunDirectoryServer)
REPLICA: Deployment = serve.deployment(
    logging_config={"enable_access_log": False}  # the app writes its own, with the run id
)(serve.ingress()(ChatReplica))


def application(
    build: Callable[[], ServerConfig],
    config: ServerConfig,
    *,
    replicas: int,
    grace: float,
    cpus: float = 1.0,
) -> Application:
    """The Ray Serve application: `replicas` chat replicas (each reserving `cpus` of Ray's
    CPUs), each building its configuration with `build`, and their directory; `config` is
    that configuration as built here, for the sizes."""
    directory = DIRECTORY.bind(config.trace_ttl, config.runs_kept, config.runs_kept_bytes)
    replica = REPLICA.options(
        num_replicas=replicas,
        max_ongoing_requests=config.max_runs + config.max_queue + READS_PER_REPLICA,
        graceful_shutdown_timeout_s=grace + SHUTDOWN_BACKSTOP,
        ray_actor_options={"num_cpus": cpus},
    )
    app: Application = replica.bind(build, grace, directory)
    return app


def drain(replicas: int, grace: float) -> None:
    """Drain every replica of the running app (see `ChatReplica._drain_when_told`) and wait
    until they are done (at most `grace` and a backstop), before Serve's shutdown stops the
    proxy."""
    directory = serve.get_deployment_handle(RunDirectoryServer.__name__, app_name=APP_NAME)
    try:
        drained = directory.drain.remote(replicas, grace + SHUTDOWN_BACKSTOP).result(
            timeout_s=grace + 2 * SHUTDOWN_BACKSTOP
        )
    except Exception:  # Serve's shutdown comes next whatever happened here
        logger.exception("draining the replicas failed")
        return
    if drained < replicas:
        logger.warning("%d of %d replicas drained in time", drained, replicas)
    time.sleep(FRAMES_SETTLE)


@contextlib.contextmanager
def local_ray(cpus: int) -> Iterator[Path]:
    """A Ray instance of this process's own (a temp directory of its own, ports the OS picks,
    no dashboard), stopped with everything it started on leaving; yields its directory."""
    temp = Path(tempfile.mkdtemp(prefix="agentflow-ray-"))
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
        _temp_dir=str(temp),
    )
    try:
        yield temp
    finally:
        try:
            serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def run_locally(app: Application, host: str, port: int) -> str:
    """Start Serve's HTTP proxy on `host:port` in the running Ray and deploy `app` there;
    returns its root URL once every replica is up."""
    serve.start(http_options=HTTPOptions(host=host, port=port))
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"
