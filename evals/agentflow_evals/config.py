"""`EvalConfig`: what one eval run is, shared by the runner, the manifest and the Ray runner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalConfig"]


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    dataset: str
    planner: str = "direct"
    out: Path
    limit: int | None = None
    samples: int = 1
    concurrency: int = 8
    """Items in flight at once."""
    temperature: float | None = None
    """Default: the planner's own (0) for one sample, 0.7 for several."""
    max_tokens: int | None = None
    seed: int | None = None
    max_model_calls: int = 64
    deadline: float | None = None
    """Seconds per sample (`RunLimits.deadline`); None: no deadline."""
    node_timeout: float = 180.0
    """Seconds one step may run (`Agent(node_timeout=...)`); not part of what a resume must
    keep: a timed-out item was never recorded, so a resume with more time retries it."""
    command: str = ""
    base_urls: Sequence[str] = field(default_factory=list)
    ray: str | None = None
    """A Ray cluster address, or "local" to start one here: items run as Ray tasks."""
    corpus: Sequence[str] = ()
    """Corpus files for a `search` tool on every item, instead of the dataset's own."""
    judge_cache: Path | None = None
    """Where judge verdicts are cached by content hash (None: no cache)."""
    max_failures: int = 5
    """Items that may fail on the model server (not recorded, retried on resume) before the run
    stops: a dead server costs seconds, not the dataset."""
    allocation: Mapping[str, Any] | None = None
    """The `--allocation` options (`agentflow.allocation.allocation_settings`); None runs each
    planner with its own default."""
    mcp: Sequence[str] = ()
    """MCP servers (`--mcp`: a command line or a URL each) whose tools every sample gets, in
    a session of its own."""
    mcp_timeout: float | None = None
    """Seconds an MCP tool call may take (`--mcp-timeout`); None: the client's default."""
