"""What a server serves: its agents (one model id each) and the operating limits."""

from __future__ import annotations

import math
from dataclasses import dataclass

from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.model import Model
from agentflow.planner import Planner
from agentflow.tool import Tool, ToolSource

__all__ = ["AgentSpec", "ServerConfig"]


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    """One agent behind one model id of `/v1/models`."""

    id: str
    """The model id clients ask for, e.g. `agentflow-dag`."""
    model: Model
    """The model every call of the agent's runs goes to."""
    planner: str | Planner = "direct"
    """A registered planner's name, or a planner object (shared by every run of the agent)."""
    tools: tuple[Tool, ...] = ()
    tool_sources: tuple[ToolSource, ...] = ()
    """Tools from MCP servers (`--mcp`): pooled, one session each kept across the agent's runs
    (`agentflow.tool.PooledSource`), closed when the server shuts down."""
    limits: RunLimits = RunLimits()
    max_concurrency: int = 16
    """Nodes of one run that may run at once."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    agents: tuple[AgentSpec, ...]
    api_keys: frozenset[str] = frozenset()
    """Bearer tokens a client must send; empty means no authentication."""
    max_runs: int = 64
    """Runs in flight at once; more wait in the queue. 64 matches what the model client sends
    one model server at once (`EndpointPool`'s default cap): more running runs would only
    wait there, holding their traces in memory."""
    max_queue: int = 1024
    """Runs waiting for a slot; a request beyond that gets 429 with Retry-After. A queued run
    holds its request and a task, a few KB."""
    run_timeout: float = 600.0
    """Seconds a run may take, queueing excluded, before it is cancelled."""
    keepalive: float = 10.0
    """Seconds of silence in a stream before a `: keepalive` comment is sent."""
    trace_ttl: float = 3600.0
    """Seconds `GET /v1/runs/{id}` keeps a finished run."""
    runs_kept: int = 10_000
    """Finished runs kept for `GET /v1/runs/{id}` at most (the oldest go first)."""
    runs_kept_bytes: int = 128 * 2**20
    """The kept runs' JSON at most (a run is ~12 KB, more with a long trace)."""
    answer_max_tokens: int = 2048
    """The answer call's completion cap; a request's `max_tokens` may only lower it."""
    max_body_bytes: int = 4 * 2**20
    """A request body beyond this is a 413 (a 128k-token conversation is ~0.5 MB)."""
    remind_after_turns: int | None = 4
    """Restate the standing instructions in every call once a conversation has more user
    turns than this; None never does."""
    cors_origins: tuple[str, ...] = ()
    retry_after: int = 5
    """Seconds a 429 tells the client to wait."""

    def __post_init__(self) -> None:
        """Refuse limits that cannot work (`--keepalive 0` would send frames in a busy loop,
        a NaN timeout fails every run) at construction, not at the first request."""
        for name in ("run_timeout", "keepalive", "trace_ttl"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a finite number of seconds above 0, not {value}")
        for name in ("max_runs", "runs_kept", "answer_max_tokens", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_queue < 0 or self.runs_kept_bytes < 0:
            raise UserError("max_queue and runs_kept_bytes must not be negative")
        if any(not key.strip() or key != key.strip() for key in self.api_keys):
            raise UserError("api_keys must not hold an empty, blank or space-padded key")
