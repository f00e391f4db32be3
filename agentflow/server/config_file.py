"""The `--config` file of `agentflow serve`: several named agents, each a planner, tools, limits
and optionally a model of its own.

```toml
replicas = 4                         # optional: `--replicas`, on Ray Serve

[[agents]]
id = "agentflow-dag"
planner = "dag"
corpus = ["passages.jsonl"]          # relative to this file
tools = ["calculator"]
mcp = ["python mcp_server.py"]       # MCP servers (a command line or a URL each), pooled
max_model_calls = 32

[[agents]]
id = "qwen-react"
planner = "react"
model = "Qwen/Qwen3-8B"
base_url = ["http://gpu-box:8000/v1"]
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.model import Model
from agentflow.models import OpenAIModel
from agentflow.server.config import AgentSpec
from agentflow.settings import Settings
from agentflow.tool import Tool, ToolSource

__all__ = ["load_agents", "load_replicas"]

ToolsFor = Callable[[list[Path], list[str]], tuple[Tool, ...]]
"""Builds an agent's tools from its corpora and tool names."""
SourcesFor = Callable[[list[str], "float | None"], tuple[ToolSource, ...]]
"""Builds an agent's MCP servers from its `mcp` entries and `mcp_timeout`."""


class _AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    planner: str = "direct"
    tools: list[str] = []
    corpus: list[Path] = []
    mcp: list[str] = []
    mcp_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_model_calls: int = Field(default=RunLimits.max_model_calls, ge=2)  # the answer is one
    max_tokens: int = Field(default=RunLimits.max_tokens, ge=1)
    concurrency: int = Field(default=16, ge=1)
    model: str | None = None
    base_url: list[str] = []


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: list[_AgentEntry] = Field(min_length=1)
    replicas: int | None = Field(default=None, ge=1)


def load_agents(
    path: Path,
    default_model: Model,
    tools_for: ToolsFor,
    settings: Settings,
    sources_for: SourcesFor | None = None,
) -> tuple[AgentSpec, ...]:
    """The agents `path` names; an entry without `model`/`base_url` uses `default_model`.
    (Command lines in `mcp` run in the server's working directory, like `--mcp`'s.)"""
    parsed = _read(path)
    ids = [entry.id for entry in parsed.agents]
    if len(set(ids)) != len(ids):
        raise UserError(f"agent ids in {path} must be unique: {', '.join(ids)}")
    specs = [_spec(e, path.parent, default_model, tools_for, settings) for e in parsed.agents]
    return tuple(
        _with_sources(spec, entry, sources_for)
        for spec, entry in zip(specs, parsed.agents, strict=True)
    )


def load_replicas(path: Path) -> int | None:
    """The file's `replicas`, if it says."""
    return _read(path).replicas


def _read(path: Path) -> _ConfigFile:
    try:
        return _ConfigFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise UserError(f"cannot read the server config {path}: {exc}") from exc


def _with_sources(spec: AgentSpec, entry: _AgentEntry, sources_for: SourcesFor | None) -> AgentSpec:
    if not entry.mcp:
        return spec
    if sources_for is None:
        raise UserError(f"agent {entry.id!r}: mcp needs the MCP client of agentflow_tools")
    return replace(spec, tool_sources=sources_for(entry.mcp, entry.mcp_timeout))


def _spec(
    entry: _AgentEntry, root: Path, default_model: Model, tools_for: ToolsFor, settings: Settings
) -> AgentSpec:
    model = default_model
    if entry.model or entry.base_url:
        model = OpenAIModel.from_settings(settings, entry.base_url, name=entry.model)
    return AgentSpec(
        id=entry.id,
        model=model,
        planner=entry.planner,
        tools=tools_for([root / c for c in entry.corpus], entry.tools),
        limits=RunLimits(max_model_calls=entry.max_model_calls, max_tokens=entry.max_tokens),
        max_concurrency=entry.concurrency,
    )
