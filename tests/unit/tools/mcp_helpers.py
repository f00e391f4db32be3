"""What the MCP client's tests share: the test server (stdio or streamable HTTP), a check that
its process is gone, and a check that no task outlives a run."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentflow_tools import MCPServer

SERVER = Path(__file__).with_name("mcp_server_for_tests.py")
COMMAND = f"{sys.executable} {SERVER}"
"""The test server as `--mcp` takes it."""


def stdio_server(pidfile: Path | None = None, *args: str, timeout: float = 20.0) -> MCPServer:
    """The test server over stdio; with `pidfile`, it writes its pid there."""
    env = {"MCP_TEST_PIDFILE": str(pidfile)} if pidfile else None
    return MCPServer.stdio(sys.executable, [str(SERVER), *args], env=env, timeout=timeout)


def pid_in(pidfile: Path) -> int:
    return int(pidfile.read_text(encoding="utf-8"))


def assert_gone(pid: int) -> None:
    """The process `pid` has exited and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    state = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").split("State:")[1].split()[0]
    raise AssertionError(f"the MCP server {pid} is still there (state {state})")


async def wait_gone(pid: int, within: float = 10.0) -> None:
    """`assert_gone`, allowing `within` seconds: a server killed while it was being spawned is
    reaped by the event loop's child watcher a moment later, not by the session's shutdown."""
    await asyncio.to_thread(_poll_gone, pid, time.monotonic() + within)
    assert_gone(pid)


def _poll_gone(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.02)


def assert_no_tasks_left() -> None:
    """Only the test's own task runs: no session owner, pipe reader or task group outlived it."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, f"tasks left behind: {others}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def http_server() -> Iterator[str]:
    """The test server over streamable HTTP in a subprocess; yields its `/mcp` URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the HTTP MCP test server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the HTTP MCP test server did not listen within 30 s")
