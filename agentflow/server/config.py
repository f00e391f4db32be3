"""What a server serves: its agents (one model id each) and the operating limits."""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.context import RunLimits
from agentflow.model import Model
from agentflow.planner import Planner
from agentflow.tool import Tool

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
    limits: RunLimits = RunLimits()
    max_concurrency: int = 16
    """Nodes of one run that may run at once."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    agents: tuple[AgentSpec, ...]
    api_keys: frozenset[str] = frozenset()
    """Bearer tokens a client must send; empty means no authentication."""
    max_runs: int = 8
    """Runs in flight at once; more wait in the queue."""
    max_queue: int = 32
    """Runs waiting for a slot; a request beyond that gets 429 with Retry-After."""
    run_timeout: float = 600.0
    """Seconds a run may take, queueing excluded, before it is cancelled."""
    keepalive: float = 10.0
    """Seconds of silence in a stream before a `: keepalive` comment is sent."""
    trace_ttl: float = 3600.0
    """Seconds `GET /v1/runs/{id}` keeps a finished run."""
    remind_after_turns: int | None = 4
    """Restate the standing instructions in every call once a conversation has more user
    turns than this; None never does."""
    cors_origins: tuple[str, ...] = ()
    retry_after: int = 5
    """Seconds a 429 tells the client to wait."""
