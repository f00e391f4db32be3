"""Every example runs end to end on a scripted model."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agentflow import Agent
from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow_tools import MCPServer

from ..examples import EXAMPLES, example_names, load_example


def plan_then_answers(
    messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
) -> str:
    """Stands in for a model: a plan when asked for one, a join when asked, else an answer."""
    properties = (schema or {}).get("properties", {})
    if "lookups" in properties:
        tool = properties["steps"]["items"]["properties"]["tool"]["enum"][0]
        return (
            json.dumps(
                {
                    "lookups": ["France", "Germany"],
                    "steps": [
                        {"id": "s1", "tool": "llm", "inputs": ["Which is larger? {l1} {l2}"]}
                    ],
                }
            )
            if tool == "llm"
            else json.dumps({"lookups": ["France", "Germany"], "steps": []})
        )
    if "enough" in properties or "answer" in properties:
        return json.dumps({"enough": True, "answer": "Germany", "missing": ""})
    return "Answer: Rome"


def test_every_example_is_covered() -> None:
    assert example_names() == [
        "ask",
        "custom_planner",
        "custom_tool",
        "mcp_server",
        "stream_events",
    ]


def test_ask(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_example("ask").main("q", model=FunctionModel(plan_then_answers)) == "Germany"
    assert "model calls" in capsys.readouterr().out


def test_custom_tool() -> None:
    module = load_example("custom_tool")
    assert module.main(model=FunctionModel(plan_then_answers)) == "Germany"
    assert "84.5" in module.population.function("Germany")


def test_custom_planner() -> None:
    assert load_example("custom_planner").main(model=FunctionModel(plan_then_answers)) == "Rome"


def test_stream_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_example("stream_events").main(model=FunctionModel(plan_then_answers)) == "Germany"
    assert "started" in capsys.readouterr().out


def test_mcp_server() -> None:
    """Run as `--mcp` runs it (a subprocess over stdio): the dag planner looks up with its
    search tool. Not imported here: building the SDK's server sets up the root logger."""
    server = MCPServer.stdio(sys.executable, [str(EXAMPLES / "mcp_server.py")])
    agent = Agent(model=FunctionModel(plan_then_answers), planner="dag", tools=[server])
    result = agent.run_sync("Which has more people, France or Germany?")
    assert result.answer == "Germany"
    found = [(n.tool, n.output) for n in result.trace.nodes.values()]
    assert found == [
        ("search_countries", "France: 68.4 million people"),
        ("search_countries", "Germany: 84.5 million people"),
    ]
