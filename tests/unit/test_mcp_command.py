"""`agentflow mcp` as a client runs it: a process the `mcp` SDK's client starts and talks to over
stdio, or one serving streamable HTTP on a loopback port, its model a scripted OpenAI-compatible
server (`--base-url`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult

from agentflow.cli import main
from tests.unit.scripted_server import (
    Reply,
    chat_body,
    reply_json,
    reply_sse,
    scripted_server,
    sse_pieces,
)

QUESTION = "Oxford or Cambridge: which is older?"
MCP_TOOLS = Path(__file__).parent / "tools" / "mcp_server_for_tests.py"
"""An MCP server with a `search_facts` tool (the MCP client's tests' own)."""
PLAN = json.dumps({"lookups": ["Oxford founded", "Cambridge founded"], "steps": []})
CLI = [sys.executable, "-m", "agentflow.cli", "mcp"]


class Progress:
    def __init__(self) -> None:
        self.updates: list[tuple[float, float | None, str]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((progress, total, message or ""))

    def messages(self) -> list[str]:
        """In the order sent: the client may run callbacks out of order, progress rises."""
        return [m for _, _, m in sorted(self.updates)]


def dag_server(lookups_at_once: threading.Barrier | None = None) -> Any:
    """The dag planner's requests: the plan (streamed), two look-ups that must be in flight at
    once (each waits at the barrier; with no tools, a look-up is a model call), and the join."""

    def answer(path: str, body: dict[str, Any]) -> Reply:
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
        properties = schema.get("properties", {})
        if "lookups" in properties:
            text = PLAN
        elif "answer" in properties:
            text = json.dumps({"enough": True, "answer": "Oxford", "missing": ""})
        else:
            assert lookups_at_once is not None, "a look-up went to the model"
            try:
                lookups_at_once.wait(timeout=20)
            except threading.BrokenBarrierError:
                return reply_json({"error": {"message": "look-ups ran one by one"}}, status=400)
            text = "Answer: founded long ago"
        if body.get("stream"):
            return reply_sse(sse_pieces([text[i : i + 8] for i in range(0, len(text), 8)]))
        return reply_json(chat_body([text]))

    return answer


def direct_server(path: str, body: dict[str, Any]) -> Reply:
    return reply_json(chat_body(["Thinking.\nAnswer: Paris"]))


def stdio_client(base_url: str, *options: str) -> Client:
    args = [*CLI[1:], "--base-url", base_url, "--model", "m", *options]
    return Client(StdioServerParameters(command=sys.executable, args=args))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def http_server(base_url: str, log: Path, *options: str) -> Iterator[str]:
    """`agentflow mcp --transport http` on a free loopback port; yields its MCP endpoint."""
    port = free_port()
    args = [*CLI, "--transport", "http", "--port", str(port), "--base-url", base_url]
    with log.open("w") as stderr:
        process = subprocess.Popen([*args, "--model", "m", *options], stderr=stderr)
    try:
        _wait_for(port, process, log)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"agentflow mcp did not listen on {port}: {log.read_text()}")


def text_of(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if c.type == "text")


async def _ask_dag(client: Client) -> tuple[CallToolResult, Progress]:
    (ask,) = (await client.list_tools()).tools
    assert ask.name == "ask" and ask.input_schema["required"] == ["question"]
    assert "dag" in ask.input_schema["properties"]["planner"]["enum"]
    progress = Progress()
    arguments = {"question": QUESTION, "planner": "dag"}
    result = await client.call_tool("ask", arguments, progress_callback=progress)
    return result, progress


def _check_dag_answer(result: CallToolResult, progress: Progress) -> None:
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Oxford"
    content = result.structured_content or {}
    assert content["status"] == "answered" and content["planner"] == "dag"
    assert content["usage"]["model_calls"] == 4 and content["usage"]["total_tokens"] > 0
    messages = progress.messages()
    assert len(messages) >= 6  # two steps planned, started and finished, the answer
    assert 'planned l1: llm("Oxford founded") (1 step planned)' in messages
    assert any(m.startswith('llm("Cambridge founded") finished') for m in messages)
    assert messages[-1] == "answered"


async def test_over_stdio_a_dag_call_answers_and_reports_its_parallel_steps() -> None:
    with scripted_server(dag_server(threading.Barrier(2))) as model:
        async with stdio_client(model.base_url) as client:
            result, progress = await _ask_dag(client)
    _check_dag_answer(result, progress)


async def test_over_streamable_http_a_dag_call_answers_and_reports_progress(
    tmp_path: Path,
) -> None:
    with (
        scripted_server(dag_server(threading.Barrier(2))) as model,
        http_server(model.base_url, tmp_path / "mcp.log") as url,
    ):
        async with Client(url) as client:
            result, progress = await _ask_dag(client)
            invalid = await client.call_tool("ask", {"question": ""})
    _check_dag_answer(result, progress)
    assert invalid.is_error and "at least 1 character" in text_of(invalid)


async def test_a_dead_model_server_is_a_tool_error_and_the_server_goes_on() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with stdio_client(dead) as client:
        first = await client.call_tool("ask", {"question": "2+2?"})
        second = await client.call_tool("ask", {"question": "3+3?"})
        listed = (await client.list_tools()).tools
    for result in (first, second):
        assert result.is_error
        assert dead in text_of(result)
        assert (result.structured_content or {})["status"] == "failed"
    assert [t.name for t in listed] == ["ask"]


async def test_invalid_arguments_over_stdio_are_a_tool_error() -> None:
    with scripted_server(direct_server) as model:
        async with stdio_client(model.base_url) as client:
            empty = await client.call_tool("ask", {"question": ""})
            planner = await client.call_tool("ask", {"question": "2+2?", "planner": "oracle"})
            answered = await client.call_tool("ask", {"question": "Capital of France?"})
        assert len(model.requests) == 1  # only the valid call ran
    assert empty.is_error and "at least 1 character" in text_of(empty)
    assert planner.is_error and "unknown planner 'oracle'" in text_of(planner)
    assert not answered.is_error and text_of(answered) == "Paris"


@asynccontextmanager
async def _hanging_model() -> AsyncIterator[tuple[str, threading.Event, threading.Event]]:
    """A model server whose first reply never ends (it sends a space every 50 ms until the
    client hangs up), the later ones answer: yields its URL, and events set when the first
    request arrives and when its client left."""
    asked, gone = threading.Event(), threading.Event()

    def trickle() -> Iterator[bytes]:
        try:
            while True:
                yield b" "
                time.sleep(0.05)
        finally:
            gone.set()

    def answer(path: str, body: dict[str, Any]) -> Reply:
        if not asked.is_set():
            asked.set()
            return Reply(pieces=trickle())
        return direct_server(path, body)

    with scripted_server(answer) as model:
        yield model.base_url, asked, gone


async def test_a_call_the_client_cancels_stops_its_run_and_the_server_goes_on() -> None:
    async with _hanging_model() as (url, asked, gone), stdio_client(url) as client:
        async with anyio.create_task_group() as calls:
            calls.start_soon(client.call_tool, "ask", {"question": "2+2?"})
            assert await asyncio.to_thread(asked.wait, 20)
            calls.cancel_scope.cancel()  # the client sends notifications/cancelled
        assert await asyncio.to_thread(gone.wait, 20), "the run kept its model request"
        after = await client.call_tool("ask", {"question": "Capital of France?"})
    assert not after.is_error and text_of(after) == "Paris"


def test_host_and_port_need_the_http_transport(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp", "--port", "9000"]) == 2
    assert "--host and --port need --transport http" in capsys.readouterr().err


def test_a_missing_mcp_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "agentflow.mcp_server", raising=False)
    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)  # import fails as if absent
    assert main(["mcp"]) == 1
    err = capsys.readouterr().err
    assert "needs the mcp package" in err and "pip install 'agentflow-dag[mcp]'" in err


def test_help_names_the_transports_and_a_client_configuration() -> None:
    process = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0
    assert "--transport {stdio,http}" in process.stdout
    assert '"command": "agentflow"' in process.stdout


def _processes_running(script: Path) -> list[int]:
    """Pids of the processes running `script` (`python SCRIPT`; not `agentflow mcp --mcp ...`,
    whose command line names it too)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and argv[1:2] == [str(script).encode()]:
            found.append(int(entry.name))
    return found


async def _gone(script: Path) -> bool:
    for _ in range(100):
        if not _processes_running(script):
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
async def test_mcp_tool_servers_behind_it_are_kept_open_across_calls(tmp_path: Path) -> None:
    script = tmp_path / "facts_server.py"  # a path of this test's own, to find its process
    shutil.copy(MCP_TOOLS, script)
    progress = Progress()
    with scripted_server(dag_server()) as model:
        tool_server = f"{sys.executable} {script}"
        async with stdio_client(model.base_url, "--planner", "dag", "--mcp", tool_server) as client:
            first = await client.call_tool(
                "ask", {"question": QUESTION}, progress_callback=progress
            )
            after_first = _processes_running(script)
            second = await client.call_tool("ask", {"question": QUESTION})
            after_second = _processes_running(script)
        assert await _gone(script), "the MCP server outlived agentflow mcp"
    for result in (first, second):
        assert not result.is_error, text_of(result)
        assert (result.structured_content or {})["usage"]["model_calls"] == 2  # plan, join
    finished = [m for m in progress.messages() if m.startswith('search_facts("Oxford founded")')]
    assert finished and finished[0].startswith('search_facts("Oxford founded") finished (')
    assert len(after_first) == 1 and after_second == after_first  # one session, kept
