"""`agentflow mcp`: agentflow as an MCP server offering the tool `ask`, over stdio or streamable
HTTP (registered through the `agentflow.commands` entry point `mcp`; the `mcp` package is
imported only when the command runs, so a missing extra is a one-line error, not a traceback)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from functools import partial

from agentflow.cli._common import (
    CommandContext,
    Commands,
    add_mcp_options,
    add_otel_option,
    whole_number,
)
from agentflow.cli.ask import add_limits, add_tool_options, agent_tools
from agentflow.context import RunLimits
from agentflow.exceptions import UserError
from agentflow.models import OpenAIModel
from agentflow.registry import planner_names
from agentflow.settings import Settings
from agentflow.telemetry import exporting
from agentflow.tool import PooledSource, Tool, ToolSource

__all__ = ["register_mcp"]

DEFAULT_PORT = 8765
REWORDED = {
    "deadline": "seconds for each question (default: none). At three quarters of it the work "
    "still running is cancelled and the findings so far are joined into an answer (status "
    "`deadline`); if that join cannot answer by the deadline, the call is a tool error",
    "mcp": "give the agent the tools of an MCP server (repeatable): a command line such as "
    '"python server.py" (over stdio) or an http(s):// URL (streamable HTTP); its session is '
    "opened by the first call that needs it and kept open for the next ones",
}
DESCRIPTION = """\
Serve agentflow as an MCP server with one tool, `ask` (a question, a planner, limits),
which answers with a research agent and sends each step of its plan as a progress
notification while it runs. A run that fails is a tool error with its message; a call
the client cancels cancels its run. The limits below are the caps of every call: a
call's own max_model_calls, max_tokens and deadline may lower them, never raise them.
"""
EXAMPLE = """\
an MCP client's configuration (Claude Desktop, Cursor, VS Code, ...):
  {"mcpServers": {"agentflow": {"command": "agentflow",
                                "args": ["mcp", "--model", "qwen2.5-coder-1.5b"]}}}
over HTTP: agentflow mcp --transport http --port 8765  (clients connect to
  http://127.0.0.1:8765/mcp)
"""


def register_mcp(commands: Commands, common: CommandContext) -> None:
    mcp = commands.add_parser(
        "mcp",
        parents=[common.connection_options()],
        help="serve `ask` as a tool to MCP clients (IDEs, other agents)",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mcp.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio: the client starts this command and speaks MCP on its stdin and stdout "
        "(logs go to stderr); http: streamable HTTP at http://HOST:PORT/mcp (default stdio)",
    )
    mcp.add_argument("--host", help="address to bind with --transport http (default 127.0.0.1)")
    mcp.add_argument(
        "--port",
        type=whole_number(1, 65535),
        help=f"port with --transport http, 1-65535 (default {DEFAULT_PORT})",
    )
    mcp.add_argument(
        "--planner",
        default="direct",
        help=f"planner of a call that names none: {', '.join(planner_names())} (default direct)",
    )
    mcp.add_argument(
        "--max-runs",
        type=whole_number(1),
        default=4,
        help="calls running at once; more wait for a slot (default %(default)s)",
    )
    add_tool_options(mcp)
    add_mcp_options(mcp)  # their sessions are kept open across calls, closed at exit
    add_otel_option(mcp)
    add_limits(mcp)  # the caps of every call: a call may lower them, never raise them
    for action in mcp._actions:  # ask's own words for these speak of one run and its output
        action.help = REWORDED.get(action.dest, action.help)
    mcp.set_defaults(handler=partial(_mcp, common))


def _mcp(common: CommandContext, args: argparse.Namespace) -> int:
    if args.transport == "stdio" and (args.host is not None or args.port is not None):
        print("agentflow mcp: error: --host and --port need --transport http", file=sys.stderr)
        return 2
    _require_mcp()
    settings = common.settings(args)
    urls = common.base_urls(args, settings)
    specs, timeout = args.mcp, args.mcp_timeout
    sources = [PooledSource(source) for source in common.mcp_sources(specs, timeout)]
    tools: list[Tool | ToolSource] = [*agent_tools(common, args), *sources]
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    if args.transport == "http":
        host, port = args.host or "127.0.0.1", args.port or DEFAULT_PORT
        print(f"serving MCP (tool `ask`) at http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    with exporting(args.otel):
        asyncio.run(_serve(args, settings, urls, tools))
    return 0


async def _serve(
    args: argparse.Namespace, settings: Settings, urls: list[str], tools: list[Tool | ToolSource]
) -> None:
    from agentflow.mcp_server import AskConfig, create_mcp_server

    model = OpenAIModel.from_settings(settings, urls)
    try:
        limits = RunLimits(
            max_model_calls=args.max_model_calls, max_tokens=args.max_tokens, deadline=args.deadline
        )
        config = AskConfig(
            model=model,
            tools=tools,
            planner=args.planner,
            limits=limits,
            max_concurrency=args.concurrency,
            node_timeout=args.node_timeout,
            max_runs=args.max_runs,
        )
        server = create_mcp_server(config)
        if args.transport == "stdio":
            await server.run_stdio_async()
        else:
            host, port = args.host or "127.0.0.1", args.port or DEFAULT_PORT
            await server.run_streamable_http_async(host=host, port=port)
    finally:
        for pooled in tools:
            if isinstance(pooled, PooledSource):
                await pooled.aclose()
        await model.aclose()


def _require_mcp() -> None:
    """A one-line error naming the extra when the `mcp` package is missing."""
    try:
        import agentflow.mcp_server  # noqa: F401
    except ImportError as exc:
        raise UserError(str(exc)) from None
