"""What happened in a run: a record per node and a stream of events, timed from the run's start."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from agentflow.model import ModelResponse, RequestTiming, Usage

__all__ = ["EventType", "NodeRecord", "NodeStatus", "Trace", "TraceEvent"]

NodeStatus = Literal["planned", "running", "ok", "failed", "cancelled"]
EventType = Literal[
    "plan",
    "planned",
    "allocated",
    "started",
    "finished",
    "failed",
    "cancelled",
    "replan",
    "summary",
    "repaired",
    "answer",
]


@dataclass(frozen=True, kw_only=True)
class TraceEvent:
    type: EventType
    at: float
    """Seconds since the run started."""
    node_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class NodeRecord:
    """One node's life. Mutable: the executor fills it in as the node runs."""

    id: str
    kind: str
    deps: list[str]
    tool: str | None
    round: int
    label: str = ""
    """What the node does, e.g. `search("Oxford founded")`."""
    status: NodeStatus = "planned"
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    output: str | None = None
    allocation: dict[str, Any] | None = None
    """For an `llm` node under an allocator: difficulty, estimator, tau, mode, budget, samples
    drawn, whether the vote stopped early, completion tokens by mode, fallbacks taken."""
    parent: str | None = None
    """For a thread forked inside a node (the `threads` strategy): that node's id."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "deps": self.deps,
            "tool": self.tool,
            "label": self.label,
            "round": self.round,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "tokens": self.usage.total_tokens,
            "model_calls": self.usage.calls,
            "error": self.error,
            "output": self.output,
            "allocation": self.allocation,
            "parent": self.parent,
        }


@dataclass(kw_only=True)
class Trace:
    """Records nodes and events; `listeners` see every event the moment it happens."""

    question: str
    planner: str
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    events: list[TraceEvent] = field(default_factory=list)
    replans: int = 0
    usage: Usage = field(default_factory=Usage)
    """Every model call of the run, nodes, planner and joiner alike."""
    requests: list[RequestTiming] = field(default_factory=list, repr=False)
    """The timing of every model request that reported one, in the order they finished."""
    listeners: list[Callable[[TraceEvent], None]] = field(default_factory=list, repr=False)
    started: float = field(default_factory=time.monotonic, repr=False)

    def now(self) -> float:
        return time.monotonic() - self.started

    def emit(self, type: EventType, node_id: str | None = None, **data: Any) -> TraceEvent:
        event = TraceEvent(type=type, at=self.now(), node_id=node_id, data=data)
        self.events.append(event)
        for listener in self.listeners:
            listener(event)
        return event

    def add_usage(self, usage: Usage, node_id: str | None = None) -> None:
        self.usage = self.usage + usage
        if node_id is not None and node_id in self.nodes:
            record = self.nodes[node_id]
            record.usage = record.usage + usage

    def charge(self, response: ModelResponse, node_id: str | None = None) -> None:
        """One response's tokens to the run and the node, and its timing, if it has one."""
        self.add_usage(response.usage, node_id)
        if response.timing is not None:
            self.add_request(response.timing, node_id)

    def add_request(self, timing: RequestTiming, node_id: str | None = None) -> None:
        """Record one request's timing, charged to `node_id` and placed on the run's clock."""
        started_at = max(0.0, self.now() - timing.total_s)
        self.requests.append(replace(timing, node_id=node_id, started_at=started_at))

    def render(self, width: int = 48) -> str:
        """The DAG and a timeline for people: overlapping bars are branches that ran at once."""
        nodes = list(self.nodes.values())
        if not nodes:
            return "(no nodes ran)"
        end = max((n.finished_at or self.now()) for n in nodes) or 1e-9
        name_width = max(len(n.id) for n in nodes)
        lines = [f"plan ({len(nodes)} nodes, {self.replans} replans, planner {self.planner}):"]
        for n in nodes:
            after = f"  <- {', '.join(n.deps)}" if n.deps else ""
            lines.append(f"  {n.id:<{name_width}}  {n.label[:70]}{after}{_mode(n)}")
        lines.append(f"timeline (0 to {end:.2f} s):")
        for n in nodes:
            start, stop = n.started_at or 0.0, n.finished_at or end
            left = round(start / end * width)
            bar = "#" * max(1, round(stop / end * width) - left)
            row = (" " * left + bar).ljust(width)[:width]
            lines.append(f"  {n.id:<{name_width}} |{row}| {start:5.2f}-{stop:5.2f} s {n.status}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "planner": self.planner,
            "nodes": [n.as_dict() for n in self.nodes.values()],
            "replans": self.replans,
            "usage": self.usage.as_dict(),
            "requests": [r.as_dict() for r in self.requests],
        }


def _mode(node: NodeRecord) -> str:
    """`  [think, difficulty 0.72 by score, 3 samples, stopped early]` for an allocated node."""
    a = node.allocation
    if not a or "mode" not in a:
        return ""
    parts = [str(a["mode"]), f"difficulty {a['difficulty']:.2f} by {a['estimator']}"]
    if a.get("samples", 1) > 1:
        parts.append(f"{a['samples']} samples")
    if a.get("stopped_early"):
        parts.append("stopped early")
    return f"  [{', '.join(parts)}]"
