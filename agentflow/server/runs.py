"""The record of a chat run and the store `GET /v1/runs/{id}` reads.

A finished run's record (question, answer, trace) is ~12 KB, so keeping every run for the
TTL grows without bound under load: the store keeps the newest finished runs within a count,
a byte budget and the TTL. Finished runs sit in an ordered dict in the order they finished,
so eviction pops from its front and lookup is one dict access: neither scans the store.

With replicas (`agentflow serve --replicas N`) each replica's store publishes its runs to one
shared store (see `shared_runs`), which holds the same kind of bounded store of snapshots; the
`update`, `find` and `aclose` hooks are where it does, and do nothing more here.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, Literal, NewType, Protocol, TypeVar

from agentflow.model import Usage
from agentflow.server.failures import public_trace
from agentflow.trace import Trace

__all__ = ["KeptRun", "RunId", "RunRecord", "RunStatus", "RunStore"]

RunId = NewType("RunId", str)
RunStatus = Literal["queued", "running", "ok", "failed", "cancelled"]


@dataclass(kw_only=True)
class RunRecord:
    """What `GET /v1/runs/{id}` shows of a run."""

    id: RunId
    model: str
    question: str
    owner: str | None = None
    """The API key that made the run (None without keys): only that key may read it."""
    status: RunStatus = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    answer: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    trace: Trace | None = None

    def as_dict(self) -> dict[str, object]:
        """The run as its client may read it: no model server's address or reply, no advice
        for the operator (the log has those, see `public_trace`)."""
        return {
            "id": self.id,
            "object": "agentflow.run",
            "model": self.model,
            "status": self.status,
            "created": self.created,
            "finished": self.finished,
            "question": self.question,
            "answer": self.answer,
            "error": self.error,
            "usage": self.usage.as_dict(),
            "trace": public_trace(self.trace.as_dict()) if self.trace else None,
        }


class KeptRun(Protocol):
    """What the store and `GET /v1/runs/{id}` need of a run: a `RunRecord`, or a snapshot of
    one published by another replica."""

    @property
    def id(self) -> RunId: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def finished(self) -> float | None: ...
    def as_dict(self) -> dict[str, object]: ...


R = TypeVar("R", bound=KeptRun)


class RunStore(Generic[R]):
    """Runs by id: every live run, and the newest finished ones within `max_count` records,
    `max_bytes` (their JSON) and `ttl` seconds. The newest finished run is kept (for its TTL)
    even when it alone is over `max_bytes`: its client may still read it right after its
    answer, and a budget smaller than one run would otherwise keep none."""

    def __init__(self, *, ttl: float, max_count: int, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        """The JSON size of the finished runs kept."""
        self._live: dict[RunId, R] = {}
        self._done: OrderedDict[RunId, tuple[R, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live) + len(self._done)

    def add(self, record: R) -> None:
        self._live[record.id] = record

    def update(self, record: R) -> None:
        """A live run's status changed (it left the queue). The live record is kept here
        itself, so there is nothing to do; a replica's store publishes the change."""

    def finish(self, record: R) -> None:
        """Move a finished run among the kept ones (sized once, now that it is complete)."""
        self._live.pop(record.id, None)
        replaced = self._done.pop(record.id, None)  # the shared store's closed orphan
        if replaced is not None:
            self.bytes -= replaced[1]
        size = len(json.dumps(record.as_dict(), default=str))
        self._done[record.id] = (record, size)
        self.bytes += size
        self._evict()

    def get(self, run_id: RunId) -> R | None:
        self._evict()
        live = self._live.get(run_id)
        if live is not None:
            return live
        kept = self._done.get(run_id)
        return kept[0] if kept else None

    async def find(self, run_id: RunId) -> KeptRun | None:
        """`get` for `GET /v1/runs/{id}`; a replica's store also asks the shared one."""
        return self.get(run_id)

    async def aclose(self) -> None:
        """Nothing to finish here; a replica's store waits for its last publications."""

    def _evict(self) -> None:
        """Drop the oldest finished runs while over a bound or past the TTL (over the byte
        budget, all but the newest)."""
        horizon = time.time() - self.ttl
        while self._done:
            record, size = next(iter(self._done.values()))
            fits = self.bytes <= self.max_bytes or len(self._done) == 1
            within = len(self._done) <= self.max_count and fits
            if within and (record.finished or 0.0) >= horizon:
                return
            self._done.popitem(last=False)
            self.bytes -= size
