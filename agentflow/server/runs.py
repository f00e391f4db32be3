"""The record of a chat run and the store `GET /v1/runs/{id}` reads.

A finished run's record (question, answer, trace) is ~12 KB, so keeping every run for the
TTL grows without bound under load: the store keeps the newest finished runs within a count,
a byte budget and the TTL. Finished runs sit in an ordered dict in the order they finished,
so eviction pops from its front and lookup is one dict access: neither scans the store.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, NewType

from agentflow.model import Usage
from agentflow.trace import Trace

__all__ = ["RunId", "RunRecord", "RunStatus", "RunStore"]

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
            "trace": self.trace.as_dict() if self.trace else None,
        }


class RunStore:
    """Runs by id: every live run, and the newest finished ones within `max_count` records,
    `max_bytes` (their JSON) and `ttl` seconds."""

    def __init__(self, *, ttl: float, max_count: int, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        """The JSON size of the finished runs kept."""
        self._live: dict[RunId, RunRecord] = {}
        self._done: OrderedDict[RunId, tuple[RunRecord, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live) + len(self._done)

    def add(self, record: RunRecord) -> None:
        self._live[record.id] = record

    def finish(self, record: RunRecord) -> None:
        """Move a finished run among the kept ones (sized once, now that it is complete)."""
        self._live.pop(record.id, None)
        size = len(json.dumps(record.as_dict(), default=str))
        self._done[record.id] = (record, size)
        self.bytes += size
        self._evict()

    def get(self, run_id: RunId) -> RunRecord | None:
        self._evict()
        live = self._live.get(run_id)
        if live is not None:
            return live
        kept = self._done.get(run_id)
        return kept[0] if kept else None

    def _evict(self) -> None:
        """Drop the oldest finished runs while over a bound or past the TTL."""
        horizon = time.time() - self.ttl
        while self._done:
            record, size = next(iter(self._done.values()))
            within = len(self._done) <= self.max_count and self.bytes <= self.max_bytes
            if within and (record.finished or 0.0) >= horizon:
                return
            self._done.popitem(last=False)
            self.bytes -= size
