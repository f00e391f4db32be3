"""`MCPServer`: an MCP server's tools as agentflow tools, over stdio and streamable HTTP, and
every way a server can fail turned into a `ToolError` (never a crash, a hang or an orphan)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from agentflow.exceptions import UserError
from agentflow.tool import OpenTools, PooledSource, RetryTask, Tool, ToolError, ToolSource
from agentflow_tools import MCPServer, mcp_client
from agentflow_tools.mcp_client import MAX_RESULT_CHARS, render_result

from .mcp_helpers import (
    SERVER,
    assert_gone,
    assert_no_tasks_left,
    http_server,
    pid_in,
    stdio_server,
)


def by_name(opened: OpenTools) -> dict[str, Tool]:
    return {tool.name: tool for tool in opened.tools}


def overlap(first: str, second: str) -> bool:
    """Two `nap` results ("started ended") share a moment."""
    (a0, a1), (b0, b1) = (map(float, first.split()), map(float, second.split()))
    return max(a0, b0) < min(a1, b1)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with http_server() as url:
        yield url


async def test_a_stdio_servers_tools_come_with_name_description_and_schema(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    opened = await stdio_server(pidfile).open()
    tools = by_name(opened)
    add = tools["add"]
    assert add.description == "Add two whole numbers."
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert sorted(add.parameters["required"]) == ["a", "b"]
    assert add.signature_line() == "add(a: integer, b: integer) - Add two whole numbers."
    assert {"search_facts", "nap", "pid", "exit_now", "hang", "fail"} <= set(tools)
    assert await tools["add"].call({"a": "2", "b": 5}) == "7"  # text, as planners write it
    assert await tools["search_facts"].call({"query": "Oxford founded"}) == "Oxford: founded 1096"
    pid = pid_in(pidfile)
    assert await tools["pid"].call({}) == str(pid)
    await opened.aclose()
    assert_gone(pid)
    assert_no_tasks_left()


async def test_arguments_off_the_input_schema_go_back_to_the_model() -> None:
    opened = await stdio_server().open()
    try:
        with pytest.raises(RetryTask, match="invalid arguments for add: a: 'x' is not of type"):
            await by_name(opened)["add"].call({"a": "x", "b": 1})
        with pytest.raises(RetryTask, match="'b' is a required property"):
            await by_name(opened)["add"].call({"a": 1})
    finally:
        await opened.aclose()


async def test_calls_over_one_session_run_at_once(tmp_path: Path) -> None:
    opened = await stdio_server().open()
    try:
        nap = by_name(opened)["nap"]
        first, second = await asyncio.gather(nap.call({"seconds": 0.5}), nap.call({"seconds": 0.5}))
    finally:
        await opened.aclose()
    assert overlap(first, second), (first, second)


async def test_a_server_that_exits_mid_call_fails_that_call_and_the_next(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    opened = await stdio_server(pidfile).open()
    tools = by_name(opened)
    with pytest.raises(ToolError, match=r"exit_now: MCP server .* closed the connection"):
        await tools["exit_now"].call({})
    assert not opened.alive()
    with pytest.raises(ToolError, match="is gone"):
        await tools["add"].call({"a": 1, "b": 2})
    await opened.aclose()
    assert_gone(pid_in(pidfile))
    assert_no_tasks_left()


async def test_a_call_that_hangs_fails_after_the_timeout_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    opened = await stdio_server(pidfile, timeout=1).open()
    tools = by_name(opened)
    assert tools["hang"].timeout > 1  # the executor's limit is the backstop, not the message
    with pytest.raises(ToolError, match=r"hang: MCP server .* did not answer within 1 s"):
        await tools["hang"].call({})
    assert await tools["add"].call({"a": 1, "b": 2}) == "3"
    await opened.aclose()  # the hung handler does not keep the server alive
    assert_gone(pid_in(pidfile))
    assert_no_tasks_left()


async def test_an_is_error_result_is_a_tool_error_with_the_servers_message() -> None:
    opened = await stdio_server().open()
    try:
        with pytest.raises(ToolError, match="fail failed: .*the disk is full"):
            await by_name(opened)["fail"].call({"reason": "the disk is full"})
    finally:
        await opened.aclose()


async def test_results_off_their_schema_or_malformed_are_tool_errors(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    opened = await stdio_server(pidfile, "--broken").open()
    tools = by_name(opened)
    with pytest.raises(ToolError, match="off_schema: .*'many' is not of type 'integer'"):
        await tools["off_schema"].call({})
    with pytest.raises(ToolError, match="malformed: MCP server .* sent a malformed result"):
        await tools["malformed"].call({})
    assert opened.alive()
    await opened.aclose()
    assert_gone(pid_in(pidfile))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (None, "did not start: cannot run 'no-such-mcp-server': No such file or directory"),
        (
            ["-c", "import sys; print('bad config', file=sys.stderr); sys.exit(2)"],
            "did not start: it closed the connection .*its stderr ends:\nbad config",
        ),
        (["-c", "import time; time.sleep(60)"], "did not start within 2 s"),
    ],
    ids=["missing", "exits", "silent"],
)
async def test_a_server_that_does_not_start_is_a_tool_error_naming_it(
    args: list[str] | None, message: str
) -> None:
    server = (
        MCPServer.stdio("no-such-mcp-server")
        if args is None
        else MCPServer.stdio(sys.executable, args, timeout=1, startup_timeout=2)
    )
    with pytest.raises(ToolError, match=message) as caught:
        await server.open()
    assert server.label in str(caught.value)
    assert_no_tasks_left()


async def test_a_pool_keeps_one_session_across_runs_and_opens_anew_when_it_died(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    pool = PooledSource(stdio_server(pidfile))
    first = await pool.open()
    pid = pid_in(pidfile)
    await first.aclose()  # a run's close leaves the pooled session open
    second = await pool.open()
    assert await by_name(second)["pid"].call({}) == str(pid)
    with pytest.raises(ToolError):
        await by_name(second)["exit_now"].call({})
    third = await pool.open()  # the server died: a new session
    new_pid = pid_in(pidfile)
    assert new_pid != pid and await by_name(third)["pid"].call({}) == str(new_pid)
    assert_gone(pid)
    await pool.aclose()
    assert_gone(new_pid)
    assert_no_tasks_left()


async def test_streamable_http_lists_and_calls_at_once(http_url: str) -> None:
    server = MCPServer.http(http_url, headers={"X-Test": "1"}, timeout=10)
    assert [tool.name for tool in await server.list_tools()][:2] == ["search_facts", "add"]
    opened = await server.open()
    try:
        tools = by_name(opened)
        assert await tools["add"].call({"a": 40, "b": 2}) == "42"
        first, second = await asyncio.gather(
            tools["nap"].call({"seconds": 0.5}), tools["nap"].call({"seconds": 0.5})
        )
        assert overlap(first, second), (first, second)
        with pytest.raises(ToolError, match="fail failed: .*no"):
            await tools["fail"].call({"reason": "no"})
    finally:
        await opened.aclose()
    assert_no_tasks_left()


async def test_an_http_server_that_is_not_there_does_not_start() -> None:
    server = MCPServer.http("http://127.0.0.1:9/mcp", timeout=5)
    with pytest.raises(ToolError, match=r"MCP server http://127.0.0.1:9/mcp did not start: "):
        await server.open()
    assert_no_tasks_left()


async def test_secrets_in_a_url_or_a_command_line_stay_out_of_labels_and_errors() -> None:
    server = MCPServer.http("http://me:hunter2@127.0.0.1:9/mcp?token=t0k", timeout=5)
    assert server.url == "http://me:hunter2@127.0.0.1:9/mcp?token=t0k"  # sent as given
    with pytest.raises(ToolError) as caught:
        await server.open()
    assert "did not start" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "t0k" not in str(caught.value)
    assert server.label == "http://me:***@127.0.0.1:9/mcp?token=***"
    stdio = MCPServer.from_spec("npx server --api-key s3cret")
    assert stdio.args == ("server", "--api-key", "s3cret")
    assert stdio.label == "npx server --api-key ***"
    assert "s3cret" not in repr(stdio) and "hunter2" not in repr(server)
    with pytest.raises(UserError, match="cannot read") as unreadable:
        MCPServer.from_spec("srv --api-key s3cret 'unterminated")
    assert "s3cret" not in str(unreadable.value)
    assert_no_tasks_left()


def test_a_spec_is_a_url_or_a_command_line() -> None:
    http = MCPServer.from_spec("https://example.org/mcp", timeout=5)
    assert (http.url, http.command, http.timeout) == ("https://example.org/mcp", None, 5)
    stdio = MCPServer.from_spec("npx -y '@scope/server files' /tmp")
    assert stdio.command == "npx" and stdio.args == ("-y", "@scope/server files", "/tmp")
    assert stdio.label == "npx -y '@scope/server files' /tmp"
    for bad in ("", "  ", "'unclosed"):
        with pytest.raises(UserError):
            MCPServer.from_spec(bad)
    with pytest.raises(UserError, match="above 0"):
        MCPServer.stdio("python", timeout=0)
    with pytest.raises(UserError, match="starts with http"):
        MCPServer.http("ftp://example.org")


def test_without_the_mcp_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "mcp" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(UserError, match=r"pip install 'agentflow-dag\[mcp\]'"):
        MCPServer.stdio("python", ["server.py"])


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def test_results_render_as_text_and_nothing_is_dropped_silently() -> None:
    both = types.CallToolResult(content=[text("a"), text("b")], structured_content={"x": 1})
    assert render_result(both) == "a\nb"  # the text already says what the structure does
    structured = types.CallToolResult(content=[], structured_content={"x": [1, "é"]})
    assert render_result(structured) == '{"x": [1, "é"]}'
    image = types.ImageContent(type="image", data="AAAA", mime_type="image/png")
    link = types.ResourceLink(type="resource_link", name="notes", uri="file:///notes.md")
    page = types.EmbeddedResource(
        type="resource",
        resource=types.TextResourceContents(uri="file:///a.txt", text="hello"),
    )
    blob = types.EmbeddedResource(
        type="resource",
        resource=types.BlobResourceContents(uri="file:///b", blob="AAAAAAAA", mime_type=None),
    )
    mixed = types.CallToolResult(content=[text("see:"), image, link, page, blob])
    assert render_result(mixed).splitlines() == [
        "see:",
        "[image: image/png, 3 bytes]",
        "[resource link: notes file:///notes.md]",
        "[resource file:///a.txt]",
        "hello",
        "[resource file:///b: binary, 6 bytes]",
    ]
    assert render_result(types.CallToolResult(content=[])) == "(no output)"


async def test_an_http_server_that_dies_mid_call_fails_the_calls_at_once() -> None:
    with http_server() as url:  # a server of its own: this one is killed
        opened = await MCPServer.http(url, timeout=20).open()
        tools = by_name(opened)
        with pytest.raises(ToolError, match="exit_now: MCP server .* closed the connection"):
            await tools["exit_now"].call({})
        assert not opened.alive()  # a pool opens a new session for the next run
        with pytest.raises(ToolError, match="is gone"):
            await tools["add"].call({"a": 1, "b": 2})
        await opened.aclose()
    assert_no_tasks_left()


class _EndlessJSON(http.server.BaseHTTPRequestHandler):
    """A streamable-HTTP MCP server (JSON responses) that starts, lists one tool, and answers
    its call with a JSON body that never ends; `sent` counts the bytes it got out."""

    sent = 0

    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if "id" not in message:  # a notification
            self.send_response(202)
            self.end_headers()
            return
        if message["method"] != "tools/call":
            result: dict[str, Any] = {
                "tools": [{"name": "flood", "inputSchema": {"type": "object"}}]
            }
            if message["method"] == "initialize":
                result = {
                    "protocolVersion": message["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "endless", "version": "0"},
                }
            self._json({"jsonrpc": "2.0", "id": message["id"], "result": result})
            return
        self.answer_the_call(message)

    def answer_the_call(self, message: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        head = json.dumps({"jsonrpc": "2.0", "id": message["id"]})[:-1]
        chunk = b"a" * 65536
        with contextlib.suppress(OSError):
            self.wfile.write(
                f'{head}, "result": {{"content": [{{"type": "text", "text": "'.encode()
            )
            while type(self).sent < 2**31:  # stops when the client hangs up
                self.wfile.write(chunk)
                type(self).sent += len(chunk)

    def do_GET(self) -> None:
        self.send_response(405)
        self.end_headers()

    do_DELETE = do_GET

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


async def call_flood(handler: type[_EndlessJSON], monkeypatch: pytest.MonkeyPatch) -> str:
    """Serve `handler` on loopback, call its `flood` tool under a 1 MiB cap, and return the
    message of the `ToolError` the call must end in."""
    monkeypatch.setattr(mcp_client, "MAX_JSON_BYTES", 1024 * 1024)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        opened = await MCPServer.http(url, timeout=20).open()
        with pytest.raises(ToolError) as failed:
            await by_name(opened)["flood"].call({})
        await opened.aclose()
    finally:
        server.shutdown()
        server.server_close()
    assert_no_tasks_left()
    return str(failed.value)


async def test_an_endless_json_body_fails_the_call_at_the_cap_not_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the cap the SDK read it for the whole 20 s timeout: 6.4 GB resident."""
    message = await call_flood(_EndlessJSON, monkeypatch)
    assert re.search(r"flood: .* sent a response past 1,048,576 bytes", message)
    assert _EndlessJSON.sent < 64 * 1024 * 1024  # the client hung up soon after the cap


class _GzipBomb(_EndlessJSON):
    """Answers the call with 51 KB of gzip that unpacks to 50 MB (a cap on bytes received
    alone would let it through)."""

    def answer_the_call(self, message: dict[str, Any]) -> None:
        text = "a" * 50_000_000
        body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"content": [
            {"type": "text", "text": text}]}})  # fmt: skip
        packed = gzip.compress(body.encode())
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(packed)))
        self.end_headers()
        self.wfile.write(packed)


async def test_a_compressed_answer_is_refused_rather_than_unpacked_past_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = await call_flood(_GzipBomb, monkeypatch)
    assert re.search(r"flood: .* sent a compressed response", message)


def test_a_huge_result_is_cut_to_what_a_prompt_can_hold() -> None:
    huge = types.CallToolResult(content=[text("A" * 10_000_000)])
    rendered = render_result(huge)
    assert len(rendered) < MAX_RESULT_CHARS + 100
    assert rendered.startswith("A" * 1000)
    assert rendered.endswith(f"[cut: {10_000_000 - MAX_RESULT_CHARS} more characters]")


async def test_a_huge_result_from_a_server_reaches_the_run_cut() -> None:
    script = (
        "import sys, runpy; from mcp.server.mcpserver import MCPServer\n"
        "mcp = MCPServer('big', log_level='WARNING')\n"
        "@mcp.tool()\n"
        "def big() -> str:\n"
        "    '''Ten megabytes.'''\n"
        "    return 'A' * 10_000_000\n"
        "mcp.run()\n"
    )
    opened = await MCPServer.stdio(sys.executable, ["-c", script], timeout=20).open()
    try:
        output = await by_name(opened)["big"].call({})
    finally:
        await opened.aclose()
    assert len(output) < MAX_RESULT_CHARS + 100


FLOOD = 20_000_000
"""Bytes of stderr the chatty servers below write."""


def deleted_files_at_least(size: int) -> list[str]:
    """Deleted regular files this process holds open that are `size` bytes or more (a stdio
    server's stderr kept in an unlinked temporary file)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.endswith("(deleted)") and os.stat(fd).st_size >= size:
                found.append(target)
    return found


async def test_a_chatty_servers_stderr_fills_no_file() -> None:
    """A server that logs a lot (for days, in `serve`) keeps only the end of its stderr in
    memory: nothing grows on disk while its session is open."""
    flood_then_serve = (
        f"import sys, runpy; sys.stderr.write('x' * {FLOOD}); sys.stderr.flush(); "
        f"sys.argv = [{str(SERVER)!r}]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    opened = await MCPServer.stdio(sys.executable, ["-c", flood_then_serve], timeout=20).open()
    try:
        assert await by_name(opened)["add"].call({"a": 1, "b": 2}) == "3"
        assert deleted_files_at_least(FLOOD // 2) == []
    finally:
        await opened.aclose()
    assert_no_tasks_left()


async def test_the_end_of_a_flood_of_stderr_is_quoted_when_the_server_fails() -> None:
    flood_then_exit = (
        f"import sys; sys.stderr.write('x' * {FLOOD} + '\\nthe last words\\n'); sys.exit(1)"
    )
    server = MCPServer.stdio(sys.executable, ["-c", flood_then_exit], timeout=20)
    with pytest.raises(ToolError, match="its stderr ends:\nx+\nthe last words$") as caught:
        await server.open()
    assert len(str(caught.value)) < 2000
    assert_no_tasks_left()


async def test_lines_that_are_not_mcp_on_stdout_log_no_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that prints (a banner, a print left in) still serves, and its lines are not
    each a traceback on agentflow's stderr (2,000 lines made 22,000 lines of them): the
    process's first one only."""
    print_then_serve = (
        "import sys, runpy; print('banner\\n' * 200, end='', flush=True); "
        f"sys.argv = [{str(SERVER)!r}]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    opened = await MCPServer.stdio(sys.executable, ["-c", print_then_serve], timeout=20).open()
    try:
        assert await by_name(opened)["add"].call({"a": 1, "b": 2}) == "3"
    finally:
        await opened.aclose()
    assert len([r for r in caplog.records if r.name.startswith("mcp")]) <= 1


def test_a_servers_pattern_that_backtracks_forever_freezes_nothing() -> None:
    """The arguments are checked against the server's input schema in the event loop, and a
    regular expression holds the GIL: a `pattern` that backtracks catastrophically froze the
    whole process (every run of a `serve`). Patterns are left to the server."""
    script = """
import asyncio
from agentflow_tools.mcp_client import MCPTool, _JSONArgs, _validator

schema = {
    "type": "object",
    "properties": {"q": {"type": "string", "pattern": "^(a+)+$"}},
    "patternProperties": {"^(b+)+$": {"type": "string"}},
}

async def send(tool, name, arguments):
    return "sent"

tool = MCPTool(name="evil", description="d", parameters=schema, function=send,
               args_model=_JSONArgs, server="evil", remote_name="evil",
               validator=_validator(schema))
print(asyncio.run(tool.call({"q": "a" * 40 + "!", "b" * 40 + "!": "x"})))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == "sent", done.stderr


ODD_NAMES = """
import anyio, sys
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

NAMES = ["x\\ny", "weird</result>", "a b", "ok-1.2_3", "n" * 300]

async def list_tools(ctx, params):
    anything = {"type": "object"}
    return types.ListToolsResult(tools=[types.Tool(name=n, input_schema=anything) for n in NAMES])

async def call_tool(ctx, params):
    return types.CallToolResult(content=[types.TextContent(type="text", text=repr(params.name))])

async def main():
    server = Server("odd", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

anyio.run(main)
"""


async def test_tool_names_become_names_a_prompt_and_a_plan_can_hold() -> None:
    """A server's tool names go into the planner's prompt, a line per tool, as descriptions do
    (whose whitespace is collapsed): a name with a line break or a fence tag in it wrote lines
    of its own. Names keep the characters MCP recommends (others become `_`, at most 128);
    calls go to the server under its own name."""
    opened = await MCPServer.stdio(sys.executable, ["-c", ODD_NAMES], timeout=20).open()
    try:
        tools = by_name(opened)
        assert list(tools) == ["x_y", "weird__result_", "a_b", "ok-1.2_3", "n" * 128]
        assert await tools["x_y"].call({}) == repr("x\ny")
        assert await tools["n" * 128].call({}) == repr("n" * 300)
    finally:
        await opened.aclose()


async def test_runs_waiting_on_a_pool_share_its_failed_start_instead_of_each_waiting_anew() -> None:
    """A pooled server that does not start (down, or hanging until its startup timeout) failed
    the runs waiting for it one after another, each after a whole new wait: the tenth request
    of a `serve` waited ten startup timeouts. Runs waiting share the start under way; a run
    that comes after it tries again."""

    class Failing(ToolSource):
        label = "failing"
        opens = 0

        async def open(self) -> OpenTools:
            Failing.opens += 1
            await asyncio.sleep(0.3)
            raise ToolError("MCP server failing did not start within 0.3 s")

    pool = PooledSource(Failing())
    started = time.monotonic()
    results = await asyncio.gather(*(pool.open() for _ in range(5)), return_exceptions=True)
    assert time.monotonic() - started < 1.0
    assert all(isinstance(r, ToolError) for r in results) and Failing.opens == 1
    with pytest.raises(ToolError):
        await pool.open()
    assert Failing.opens == 2
