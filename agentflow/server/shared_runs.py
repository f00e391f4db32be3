"""Runs shared between replicas (`agentflow serve --replicas N`), without Ray itself: Ray Serve
(`replicas`) only carries these objects between processes.

A chat lands on one replica, but `GET /v1/runs/{id}` may land on any. So every replica
publishes each of its runs to one `RunDirectory` (a Ray Serve deployment of one replica) when
it is admitted, when it starts running and when it ends, as a `RunSnapshot` (its JSON and its
owner, so the per-key scoping holds wherever it is read). A replica answers from its own live
runs first (their state to the moment), else from the directory; finished runs live only
there, within the same count, bytes and TTL bounds as one process's store.

Publishing is asynchronous, so `PublishBarrier` holds a response's first bytes until its run's
admission is published, and its last bytes until its end is: once a client has the run id,
any replica finds the run; once it has the whole answer, any replica shows it finished.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentflow.server.runs import KeptRun, RunId, RunRecord, RunStore

__all__ = [
    "REPLICA_HEADER",
    "MirroredRunStore",
    "PublishBarrier",
    "RunDirectory",
    "RunSnapshot",
]

logger = logging.getLogger("agentflow.server")

REPLICA_HEADER = "X-Agentflow-Replica"
"""Which replica served a response: for operators reading logs, and for tests."""
PUBLISH_TIMEOUT = 10.0
"""Seconds a publication may take before it is given up (logged; the chat goes on)."""
_RUN_ID_HEADER = b"x-agentflow-run-id"


@dataclass(frozen=True, kw_only=True)
class RunSnapshot:
    """A run as another replica shows it: its `GET /v1/runs/{id}` body at one moment."""

    id: RunId
    owner: str | None
    finished: float | None
    version: int
    """0 admitted, 1 running (or closed by the directory for want of news), 2 ended:
    publications may arrive out of order, a later state is never replaced by an earlier
    one."""
    body: dict[str, object]

    @classmethod
    def of(cls, record: RunRecord) -> RunSnapshot:
        version = 2 if record.finished is not None else int(record.status != "queued")
        return cls(
            id=record.id,
            owner=record.owner,
            finished=record.finished,
            version=version,
            body=record.as_dict(),
        )

    def as_dict(self) -> dict[str, object]:
        return self.body


class RunDirectory:
    """The store every replica publishes to: live runs, and the newest finished ones within
    the server's count, bytes and TTL (for all replicas together).

    A replica that stops mid-run never publishes that run's end, so a live run not heard of
    for the TTL is closed here as failed: the store stays bounded, and its client learns."""

    def __init__(self, *, ttl: float, max_count: int, max_bytes: int) -> None:
        self.ttl = ttl
        self.runs: RunStore[RunSnapshot] = RunStore(
            ttl=ttl, max_count=max_count, max_bytes=max_bytes
        )
        self._admitted: OrderedDict[RunId, float] = OrderedDict()
        """Live runs by when they were first published (oldest first: no scan to close)."""

    def put(self, snapshot: RunSnapshot) -> None:
        self._close_silent()
        known = self.runs.get(snapshot.id)
        if known is not None and known.version >= snapshot.version:
            return
        if snapshot.finished is None:
            self.runs.add(snapshot)
            self._admitted.setdefault(snapshot.id, time.monotonic())
        else:
            self._admitted.pop(snapshot.id, None)
            self.runs.finish(snapshot)

    def _close_silent(self) -> None:
        horizon = time.monotonic() - self.ttl
        while self._admitted:
            run_id, since = next(iter(self._admitted.items()))
            if since >= horizon:
                return
            del self._admitted[run_id]
            stale = self.runs.get(run_id)
            if stale is not None and stale.finished is None:
                error = f"no news of the run for {self.ttl:g} s: its replica may have stopped"
                body = {**stale.body, "status": "failed", "error": error}
                # version 1: the run's own end, if it comes after all, still replaces this
                self.runs.finish(replace(stale, finished=time.time(), version=1, body=body))

    def get(self, run_id: RunId) -> RunSnapshot | None:
        return self.runs.get(run_id)


Publish = Callable[[list[RunSnapshot]], Awaitable[None]]
Lookup = Callable[[RunId], Awaitable[RunSnapshot | None]]


class MirroredRunStore(RunStore[RunRecord]):
    """A replica's runs: live ones here, every change published; finished ones only in the
    directory (`lookup` reads it), so they are bounded once for all replicas.

    Publications go in batches, one call at a time: whatever changed while a call was under
    way goes in the next, and a run's unsent earlier state is replaced by its later one. Under
    load a replica makes a few calls a second instead of three per run."""

    def __init__(self, publish: Publish, lookup: Lookup) -> None:
        super().__init__(ttl=1.0, max_count=1, max_bytes=0)  # keeps no finished run itself
        self._publish = publish
        self._lookup = lookup
        self._outbox: dict[RunId, RunSnapshot] = {}
        """The next batch: each run's latest unsent state."""
        self._next: asyncio.Future[None] | None = None
        """Done once the next batch is published."""
        self._rides: dict[RunId, asyncio.Future[None]] = {}
        """The batch carrying each run's latest state, until it is published."""
        self._quiet: dict[RunId, asyncio.Event] = {}
        """Set once a run has ended and its end is published; dropped then."""
        self._sender: asyncio.Task[None] | None = None

    def add(self, record: RunRecord) -> None:
        super().add(record)
        self._quiet[record.id] = asyncio.Event()
        self._send(record)

    def update(self, record: RunRecord) -> None:
        self._send(record)

    def finish(self, record: RunRecord) -> None:
        self._live.pop(record.id, None)
        self._send(record)

    async def find(self, run_id: RunId) -> KeptRun | None:
        return self.get(run_id) or await self._lookup(run_id)

    async def announced(self, run_id: RunId) -> None:
        """Wait for what has been sent of `run_id` so far (its admission) to be published."""
        ride = self._rides.get(run_id)
        if ride is not None:
            await asyncio.wait({ride}, timeout=PUBLISH_TIMEOUT)

    async def settled(self, run_id: RunId) -> None:
        """Wait until `run_id` has ended and its end is published (at once if it has)."""
        quiet = self._quiet.get(run_id)
        if quiet is None:
            return
        try:
            await asyncio.wait_for(quiet.wait(), PUBLISH_TIMEOUT)
        except TimeoutError:
            logger.warning("run %s: its end was not published in time", run_id)

    async def aclose(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)

    def _send(self, record: RunRecord) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        self._outbox[record.id] = RunSnapshot.of(record)
        self._rides[record.id] = self._next
        if self._sender is None or self._sender.done():
            # In a context of its own: the request that happens to start the sender may be
            # cancelled (its client left), and Ray Serve cancels the calls made in a
            # cancelled request's context, which would drop other runs' publications.
            loop = asyncio.get_running_loop()
            self._sender = loop.create_task(self._send_batches(), context=contextvars.Context())

    async def _send_batches(self) -> None:
        while self._outbox and self._next is not None:
            batch, self._outbox = list(self._outbox.values()), {}
            published, self._next = self._next, None
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await self._publish(batch)
            except Exception:
                logger.warning("%d runs could not be published to the other replicas",
                               len(batch), exc_info=True)  # fmt: skip
            finally:  # waiters go on even when the sender is cancelled (shutdown)
                published.set_result(None)
                for snapshot in batch:
                    self._published(snapshot.id, published)

    def _published(self, run_id: RunId, batch: asyncio.Future[None]) -> None:
        if self._rides.get(run_id) is not batch:
            return  # a later state of the run is on its way
        del self._rides[run_id]
        if self.get(run_id) is None:
            quiet = self._quiet.pop(run_id, None)
            if quiet is not None:
                quiet.set()


class PublishBarrier:
    """ASGI middleware of a replica: a response that names a run (its `X-Agentflow-Run-Id`)
    starts once the run's admission is published and ends once its end is, so a client can
    never ask another replica for a run it has not heard of yet. Every response says which
    replica served it (`X-Agentflow-Replica`)."""

    def __init__(self, app: ASGIApp, runs: MirroredRunStore, replica: str) -> None:
        self.app = app
        self.runs = runs
        self.header = (REPLICA_HEADER.lower().encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        run_id: RunId | None = None

        async def barrier(message: Message) -> None:
            nonlocal run_id
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                found = dict(headers).get(_RUN_ID_HEADER)
                run_id = RunId(found.decode()) if found else None
                message = {**message, "headers": [*headers, self.header]}
                if run_id is not None:
                    await self.runs.announced(run_id)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                if run_id is not None:
                    await self.runs.settled(run_id)
            await send(message)

        await self.app(scope, receive, barrier)
