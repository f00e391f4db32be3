"""The `--config` file of `agentflow serve`: several named agents, each a planner, tools, limits
and optionally a model of its own.

```toml
replicas = 4                         # optional: `--replicas`, on Ray Serve

[[agents]]
id = "agentflow-dag"
planner = "dag"
corpus = ["passages.jsonl"]          # relative to this file
tools = ["calculator"]
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
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.model import Model
from agentflow.models import OpenAIModel
from agentflow.server.config import AgentSpec
from agentflow.settings import Settings
from agentflow.tool import Tool

__all__ = ["load_agents", "load_replicas"]

ToolsFor = Callable[[list[Path], list[str]], tuple[Tool, ...]]
"""Builds an agent's tools from its corpora and tool names."""


class _AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    planner: str = "direct"
    tools: list[str] = []
    corpus: list[Path] = []
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
    path: Path, default_model: Model, tools_for: ToolsFor, settings: Settings
) -> tuple[AgentSpec, ...]:
    """The agents `path` names; an entry without `model`/`base_url` uses `default_model`."""
    parsed = _read(path)
    ids = [entry.id for entry in parsed.agents]
    if len(set(ids)) != len(ids):
        raise UserError(f"agent ids in {path} must be unique: {', '.join(ids)}")
    return tuple(
        _spec(entry, path.parent, default_model, tools_for, settings) for entry in parsed.agents
    )


def load_replicas(path: Path) -> int | None:
    """The file's `replicas`, if it says."""
    return _read(path).replicas


def _read(path: Path) -> _ConfigFile:
    try:
        return _ConfigFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise UserError(f"cannot read the server config {path}: {exc}") from exc


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
