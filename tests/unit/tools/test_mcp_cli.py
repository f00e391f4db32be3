"""`--mcp` as a user meets it: `agentflow tools list`, `ask`, `eval` and `serve` (pooled
sessions, closed at shutdown), each against the test MCP server over stdio."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.cli._common import CommandContext
from agentflow.cli._main import _parser
from agentflow.plan import TaskId, TaskNode
from agentflow.server import AgentSpec, ServerConfig
from agentflow.server.cli import build_config
from agentflow.server.protocol import ChatCompletionRequest, ChatMessage
from agentflow.server.service import ChatService, Finished
from agentflow.testing import FunctionModel, StaticPlanner
from agentflow.tool import PooledSource
from agentflow_tools import MCPServer
from agentflow_tools.cli import mcp_servers
from tests.unit.scripted_server import Reply, reply_chat, scripted_server

from .mcp_helpers import COMMAND, assert_gone, assert_no_tasks_left, pid_in, stdio_server


def test_tools_list_prints_the_built_in_tools_and_an_mcp_servers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tools", "list", "--mcp", COMMAND]) == 0
    out = capsys.readouterr().out
    built_in, served = out.split(f"MCP server {COMMAND}:\n")
    for name in ("calculator", "run_python", "search"):
        assert f"\n  {name}\n" in built_in
    assert "  search_facts\n    Look up a fact about a university.\n" in served
    assert "    arguments: query (string, required)\n" in served
    assert "    arguments: a (integer, required), b (integer, required)\n" in served
    assert main(["tools", "list", "--mcp", COMMAND, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    add = next(row for row in rows if row["name"] == "add")
    assert add["source"] == f"MCP server {COMMAND}"
    assert add["parameters"]["properties"]["a"]["type"] == "integer"


def test_tools_list_names_a_server_that_does_not_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tools", "list", "--mcp", "no-such-mcp-server --port 3"]) == 1
    err = capsys.readouterr().err
    assert "MCP server no-such-mcp-server --port 3 did not start" in err
    assert "Traceback" not in err and err.count("\n") == 1


def react_replies(path: str, body: dict[str, Any]) -> Reply:
    """A react run that looks up with the MCP tool, then answers from what it found."""
    prompt = str(body["messages"][-1]["content"])
    if '<result id="s1">' in prompt:
        step = {"thought": "found it", "tool": "finish", "input": "1096"}
    else:
        step = {"thought": "look it up", "tool": "search_facts", "input": "Oxford founded"}
    return reply_chat(body, [json.dumps(step)])


def test_ask_with_an_mcp_server_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(react_replies) as served:
        argv = ["ask", "When was Oxford founded?", "--planner", "react", "--json"]
        argv += ["--base-url", served.base_url, "--model", "m", "--mcp", COMMAND]
        assert main([*argv, "--mcp-timeout", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] == "1096"
    (node,) = (n for n in result["trace"]["nodes"] if n["id"] == "s1")
    assert (node["tool"], node["status"], node["output"]) == (
        "search_facts",
        "ok",
        "Oxford: founded 1096",
    )
    first, second = (str(r["messages"][-1]["content"]) for r in served.requests)
    assert "search_facts(query: string)" in first  # offered to the model
    assert '<result id="s1">\nOxford: founded 1096\n</result>' in second  # fenced


def test_eval_gives_every_sample_the_mcp_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {"id": str(i), "question": "When was Oxford founded?", "answer": "1096"} for i in (1, 2)
    ]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    with scripted_server(react_replies) as served:
        argv = ["eval", str(questions), "--planner", "react", "--out", str(out)]
        argv += ["--base-url", served.base_url, "--model", "m"]
        argv += ["--mcp", f"{COMMAND} --token s3cr3t-t0k"]
        monkeypatch.setattr(sys, "argv", ["agentflow", *argv])  # what the manifest records
        assert main(argv) == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == ["1", "2"]
    assert all(r["correct"] == 1.0 for r in results)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mcp"] == [f"{COMMAND} --token ***"]
    assert "s3cr3t" not in json.dumps(manifest["mcp"]) and "--token ***" in manifest["command"]
    assert "s3cr3t" not in manifest["command"]


def test_serve_pools_mcp_sessions_from_the_command_line_and_its_config(tmp_path: Path) -> None:
    parser, _ = _parser()
    common = CommandContext(mcp_servers=mcp_servers)
    args = parser.parse_args(["serve", "--mcp", COMMAND, "--mcp-timeout", "7"])
    (agent,) = build_config(common, args).agents
    (pool,) = agent.tool_sources
    assert isinstance(pool, PooledSource) and isinstance(pool.source, MCPServer)
    assert (pool.label, pool.source.timeout) == (COMMAND, 7)
    path = tmp_path / "agents.toml"
    path.write_text(
        '[[agents]]\nid = "a"\nmcp = ["http://127.0.0.1:9/mcp", "python s.py"]\n'
        'mcp_timeout = 3\n\n[[agents]]\nid = "b"\n'
    )
    a, b = build_config(common, parser.parse_args(["serve", "--config", str(path)])).agents
    assert [s.label for s in a.tool_sources] == ["http://127.0.0.1:9/mcp", "python s.py"]
    assert b.tool_sources == ()
    with pytest.raises(SystemExit):  # a timeout of 0 would fail every call
        parser.parse_args(["serve", "--mcp", COMMAND, "--mcp-timeout", "0"])


def answer_from_findings(messages: Any, settings: Any, schema: Any) -> str:
    return "Answer: done"


async def test_a_servers_runs_share_one_session_closed_at_shutdown(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    spec = AgentSpec(
        id="agentflow-static",
        model=FunctionModel(answer_from_findings),
        planner=StaticPlanner([[TaskNode(id=TaskId("pid"), kind="tool", tool="pid")]]),
        tool_sources=(PooledSource(stdio_server(pidfile)),),
    )
    service = ChatService(ServerConfig(agents=(spec,)))
    pids = []
    for _ in range(2):
        message = ChatMessage(role="user", content="Which process?")
        run = service.start(ChatCompletionRequest(model=spec.id, messages=[message]))
        updates = [u async for u in run.updates(keepalive=5) if u is not None]
        assert isinstance(updates[-1], Finished), updates[-1]
        assert run.record.trace is not None
        pids.append(run.record.trace.nodes["pid"].output)
    assert pids == [str(pid_in(pidfile))] * 2  # one server for both runs
    await service.aclose(grace=0)
    assert_gone(pid_in(pidfile))
    assert_no_tasks_left()
