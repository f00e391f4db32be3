"""MCP tools inside runs: every planner on a scripted model gets them (offered in its prompt,
called where the planner calls tools, the result fenced like any tool's), branches call them
at once, and a server that fails makes a failed node the joiner reads, never a failed run. The
session opens with the run and closes with it, also when the run is cancelled."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow import Agent, ExecutionError, UserError
from agentflow.plan import TaskId, TaskNode
from agentflow.testing import ScriptedModel, StaticPlanner
from agentflow.trace import TraceEvent
from agentflow_tools import MCPServer

from .mcp_helpers import (
    assert_gone,
    assert_no_tasks_left,
    http_server,
    pid_in,
    stdio_server,
    wait_gone,
)

JOIN_OXFORD = json.dumps({"enough": True, "answer": "Oxford", "missing": ""})
SCRIPTS: dict[str, list[str]] = {
    "dag": [
        json.dumps(
            {
                "lookups": [],
                "steps": [
                    {
                        "id": "s1",
                        "tool": "search_facts",
                        "inputs": ["Oxford founded", "Cambridge founded"],
                    },
                    {"id": "s2", "tool": "llm", "inputs": ["Which was first? {s1}"]},
                ],
            }
        ),  # fmt: skip
        "Oxford, in 1096.\nAnswer: Oxford",
        JOIN_OXFORD,
    ],
    "react": [
        json.dumps({"thought": "look it up", "tool": "search_facts", "input": "Oxford founded"}),
        json.dumps({"thought": "done", "tool": "finish", "input": "1096"}),
    ],
    "hybrid": [
        json.dumps({"queries": ["Oxford founded", "Cambridge founded"], "answer": ""}),
        json.dumps({"queries": [], "answer": "Oxford"}),
    ],
    "direct": ["Paris is the capital.\nAnswer: Paris"],
    "scale": [json.dumps({"steps": ["Add 2 and 2."]}), "2 + 2 = 4, so \\boxed{4}"],
}
ANSWERS = {"dag": "Oxford", "react": "1096", "hybrid": "Oxford", "direct": "Paris", "scale": "4"}
MCP_NODES = {"dag": ["s1_1", "s1_2"], "react": ["s1"], "hybrid": ["r1q1", "r1q2"]}
"""The nodes that call the MCP tool; `direct` and `scale` call no tools by design."""


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with http_server() as url:
        yield url


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("planner", list(SCRIPTS))
async def test_every_planner_runs_with_an_mcp_servers_tools(
    planner: str, transport: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pidfile = tmp_path / "pid"
    server = (
        stdio_server(pidfile)
        if transport == "stdio"
        else MCPServer.http(request.getfixturevalue("http_url"), timeout=20)
    )
    model = ScriptedModel(SCRIPTS[planner])
    agent = Agent(model=model, planner=planner, tools=[server], allocation="off")
    result = await agent.run("Which was founded first, Oxford or Cambridge?")

    assert result.answer == ANSWERS[planner]
    first_prompt = str(model.calls[0][0]["content"])
    later_prompts = " ".join(str(call[0]["content"]) for call in model.calls[1:])
    for node_id in MCP_NODES.get(planner, []):
        node = result.trace.nodes[node_id]
        assert (node.tool, node.status) == ("search_facts", "ok")
        assert node.output is not None and "founded" in node.output
        assert f'<result id="{node_id}">\n{node.output}\n</result>' in later_prompts  # fenced
    if planner in ("dag", "react"):  # offered to the model (hybrid searches with it unasked)
        assert "search_facts(query: string) - Look up a fact about a university." in first_prompt
    if transport == "stdio":
        assert_gone(pid_in(pidfile))  # started with the run, reaped at its end
    assert_no_tasks_left()


async def test_two_branches_call_mcp_tools_at_the_same_time(tmp_path: Path) -> None:
    plan = {"lookups": [], "steps": [{"id": "s1", "tool": "nap", "inputs": ["0.5", "0.6"]}]}
    model = ScriptedModel([json.dumps(plan), JOIN_OXFORD])
    agent = Agent(model=model, planner="dag", tools=[stdio_server(tmp_path / "pid")])
    result = await agent.run("q")
    first, second = (result.trace.nodes[n] for n in ("s1_1", "s1_2"))
    assert first.status == second.status == "ok"
    (a0, a1), (b0, b1) = (map(float, str(n.output).split()) for n in (first, second))
    assert max(a0, b0) < min(a1, b1), "the naps did not overlap in the server"
    assert first.started_at is not None and second.started_at is not None
    assert first.finished_at is not None and second.finished_at is not None
    assert max(first.started_at, second.started_at) < min(first.finished_at, second.finished_at)


def tool_node(node_id: str, tool: str, **args: object) -> TaskNode:
    return TaskNode(id=TaskId(node_id), kind="tool", tool=tool, args=args)


async def test_a_failing_server_fails_nodes_the_joiner_reads_and_the_run_finishes(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    nodes = [
        tool_node("hung", "hang"),
        tool_node("refused", "fail", reason="quota exceeded"),
        tool_node("wrong", "add", a="many", b=1),
        tool_node("fine", "add", a=1, b=2),
    ]
    agent = Agent(
        model=ScriptedModel([]),
        planner=StaticPlanner([nodes]),
        tools=[stdio_server(pidfile, timeout=1)],
    )
    result = await agent.run("q")
    status = {n: (r.status, r.error) for n, r in result.trace.nodes.items()}
    assert status["fine"] == ("ok", None)
    assert status["hung"][0] == "failed" and "did not answer within 1 s" in str(status["hung"][1])
    assert "quota exceeded" in str(status["refused"][1])
    assert "invalid arguments for add" in str(status["wrong"][1])
    for node_id in ("hung", "refused", "wrong"):  # the joiner's transcript holds every error
        assert str(status[node_id][1]) in result.answer
    assert_gone(pid_in(pidfile))
    assert_no_tasks_left()


async def test_a_server_that_exits_or_answers_garbage_fails_only_its_nodes(
    tmp_path: Path,
) -> None:
    died, broken = tmp_path / "died", tmp_path / "broken"
    rounds = [[tool_node("exit", "exit_now")], [tool_node("after", "add", a=1, b=1)]]
    agent = Agent(
        model=ScriptedModel([]), planner=StaticPlanner(rounds), tools=[stdio_server(died)]
    )
    result = await agent.run("q")
    assert "closed the connection" in str(result.trace.nodes["exit"].error)
    assert "is gone" in str(result.trace.nodes["after"].error)
    nodes = [tool_node("off", "off_schema"), tool_node("bad", "malformed")]
    planner = StaticPlanner([nodes])
    agent = Agent(
        model=ScriptedModel([]), planner=planner, tools=[stdio_server(broken, "--broken")]
    )
    errors = {n: r.error for n, r in (await agent.run("q")).trace.nodes.items()}
    assert "'many' is not of type 'integer'" in str(errors["off"])
    assert "sent a malformed result" in str(errors["bad"])
    assert_gone(pid_in(died))
    assert_gone(pid_in(broken))
    assert_no_tasks_left()


async def test_a_run_cancelled_mid_call_closes_the_session_and_reaps_the_server(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    agent = Agent(
        model=ScriptedModel([]),
        planner=StaticPlanner([[tool_node("hung", "hang")]]),
        tools=[stdio_server(pidfile)],
    )
    calling = asyncio.Event()

    async def run() -> None:
        async for item in agent.run_stream("q"):
            if isinstance(item, TraceEvent) and item.type == "started":
                calling.set()

    running = asyncio.create_task(run())
    async with asyncio.timeout(30):
        await calling.wait()
    await asyncio.sleep(0.2)  # the request is on its way to the server
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert_gone(pid_in(pidfile))
    assert_no_tasks_left()


async def test_a_server_that_does_not_start_fails_the_run_with_its_name() -> None:
    agent = Agent(
        model=ScriptedModel(["Answer: x"]),
        planner="direct",
        tools=[MCPServer.stdio("no-such-mcp-server", ["--flag"])],
    )
    with pytest.raises(ExecutionError, match="MCP server no-such-mcp-server --flag did not start"):
        await agent.run("q")
    assert_no_tasks_left()


async def test_tools_of_the_same_name_are_a_user_error_unless_prefixed(tmp_path: Path) -> None:
    agent = Agent(model=ScriptedModel([]), planner="direct", tools=[stdio_server(), stdio_server()])
    with pytest.raises(UserError, match="two tools are named 'search_facts'"):
        await agent.run("q")
    assert_no_tasks_left()
    second = MCPServer.stdio(stdio_server().command or "", stdio_server().args, prefix="b_")
    model = ScriptedModel(["Answer: x"])
    result = await Agent(model=model, planner="direct", tools=[stdio_server(), second]).run("q")
    assert result.answer == "x"


async def test_a_run_cancelled_while_its_server_starts_leaves_nothing(tmp_path: Path) -> None:
    started = tmp_path / "started"
    os.mkfifo(started)  # the server says its pid through it, then never answers the handshake
    silent = f"import os, time; open({str(started)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    agent = Agent(
        model=ScriptedModel(["Answer: x"]),
        planner="direct",
        tools=[MCPServer.stdio(sys.executable, ["-c", silent]), stdio_server()],
    )
    running = asyncio.create_task(agent.run("q"))
    try:
        async with asyncio.timeout(30):
            pid = int(await asyncio.to_thread(started.read_text))
    except TimeoutError:
        os.close(os.open(started, os.O_WRONLY | os.O_NONBLOCK))  # frees the reading thread
        raise
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await wait_gone(pid)  # killed at once if the cancel came mid-spawn, else shut down
    assert_no_tasks_left()
