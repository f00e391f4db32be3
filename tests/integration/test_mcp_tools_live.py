"""MCP servers as tools against the live model: the README's example server
(examples/mcp_server.py) started over stdio for a dag run. Checks the protocol (the run
finishes, the server's tools are offered to the model, every call that happened has its
result fenced in a later prompt or a tool error, the server is gone afterwards), never what
the model writes or which tools it picks."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow import Agent
from agentflow.cli import main
from agentflow.model import Message, Model, ModelResponse, ModelSettings
from agentflow.models import OpenAIModel
from agentflow_tools import MCPServer

EXAMPLE = Path(__file__).parents[2] / "examples" / "mcp_server.py"
QUESTION = "Which has more people, France or Germany?"
MCP_TOOLS = {"search_countries", "add"}


class Recording(Model):
    """The live model, keeping every request's messages and schema."""

    def __init__(self, inner: Model) -> None:
        self.inner, self.name = inner, inner.name
        self.requests: list[tuple[str, Mapping[str, Any] | None]] = []

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        self.requests.append((str(messages[-1]["content"]), json_schema))
        return await self.inner.complete(messages, settings, json_schema=json_schema)


def mcp_children() -> list[int]:
    """Processes of this one running the example server."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == os.getpid() and b"mcp_server.py" in command:
            found.append(int(entry.name))
    return found


async def test_a_dag_run_offers_the_servers_tools_and_fences_their_results(
    live_model: OpenAIModel,
) -> None:
    model = Recording(live_model)
    server = MCPServer.stdio(sys.executable, [str(EXAMPLE)], timeout=60)
    agent = Agent(model=model, planner="dag", tools=[server])
    result = await agent.run(QUESTION)

    assert isinstance(result.answer, str)
    plan_prompt, plan_schema = model.requests[0]
    assert "search_countries(query: string) - Search a table of European" in plan_prompt
    assert plan_schema is not None
    offered = plan_schema["properties"]["steps"]["items"]["properties"]["tool"]["enum"]
    assert MCP_TOOLS <= set(offered)
    later = "\n".join(prompt for prompt, _ in model.requests[1:])
    calls = [n for n in result.trace.nodes.values() if n.tool in MCP_TOOLS]
    for node in calls:  # whichever the model made, if any
        if node.status == "ok":
            assert f'<result id="{node.id}">\n{node.output}' in later
        else:
            assert node.error, node
    assert mcp_children() == []


def test_ask_with_mcp_from_the_command_line_finishes(capsys: pytest.CaptureFixture[str]) -> None:
    command = f"{sys.executable} {EXAMPLE}"
    assert main(["ask", QUESTION, "--planner", "dag", "--mcp", command, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for node in result["trace"]["nodes"]:
        assert node["status"] in ("ok", "failed")
        if node["tool"] in MCP_TOOLS and node["status"] == "failed":
            assert node["error"]  # a tool error the joiner read, not a crash
    assert mcp_children() == []
