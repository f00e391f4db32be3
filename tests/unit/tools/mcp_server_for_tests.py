"""An MCP server for the MCP client's tests, written with the `mcp` SDK's server API.

    python mcp_server_for_tests.py                # stdio, the well-behaved tools
    python mcp_server_for_tests.py --http PORT    # the same over streamable HTTP on 127.0.0.1
    python mcp_server_for_tests.py --broken       # stdio, tools that answer off their schema

With `MCP_TEST_PIDFILE` set, the server writes its pid there first, so a test can check that
the process is gone once the session is closed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import warnings
from typing import Any

FACTS = {"oxford founded": "Oxford: founded 1096", "cambridge founded": "Cambridge: founded 1209"}


def well_behaved() -> Any:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    mcp = MCPServer("agentflow-test", log_level="WARNING")

    @mcp.tool()
    def search_facts(query: str) -> str:
        """Look up a fact about a university."""
        return FACTS.get(query.strip().lower(), "no idea")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two whole numbers."""
        return a + b

    @mcp.tool()
    async def nap(seconds: float) -> str:
        """Sleep, then say when the nap started and ended (this process's clock)."""
        started = time.monotonic()
        await asyncio.sleep(seconds)
        return f"{started:.4f} {time.monotonic():.4f}"

    @mcp.tool()
    def pid() -> int:
        """This server's process id."""
        return os.getpid()

    @mcp.tool()
    def exit_now() -> str:
        """Exit the server in the middle of the call."""
        os._exit(3)

    @mcp.tool()
    async def hang() -> str:
        """Never answer."""
        await asyncio.sleep(3600)
        return "woke up"

    @mcp.tool()
    def fail(reason: str) -> str:
        """Fail with `reason` (an isError result)."""
        raise ToolError(reason)

    return mcp


def broken() -> Any:
    import mcp_types as types
    from mcp.server.lowlevel import Server

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        anything = {"type": "object"}
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name="off_schema",
                    description="Answers off its output schema.",
                    input_schema=anything,
                    output_schema=schema,
                ),
                types.Tool(
                    name="malformed",
                    description="Answers a malformed result.",
                    input_schema=anything,
                ),
            ]
        )

    async def call_tool(ctx: Any, params: Any) -> types.CallToolResult:
        if params.name == "off_schema":
            text = types.TextContent(type="text", text='{"n": "many"}')
            return types.CallToolResult(content=[text], structured_content={"n": "many"})
        # Not a CallToolResult on the wire: `content` must be a list of blocks.
        return types.CallToolResult.model_construct(content="not a list of blocks")

    return Server("agentflow-broken", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_broken() -> None:
    from mcp.server.stdio import stdio_server

    server = broken()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main(argv: list[str]) -> None:
    pidfile = os.environ.get("MCP_TEST_PIDFILE")
    if pidfile:
        with open(pidfile, "w", encoding="utf-8") as file:
            file.write(str(os.getpid()))
    warnings.simplefilter("ignore")  # the malformed result's serializer warning
    if argv[:1] == ["--broken"]:
        import anyio

        anyio.run(serve_broken)
    elif argv[:1] == ["--http"]:
        well_behaved().run("streamable-http", host="127.0.0.1", port=int(argv[1]))
    else:
        well_behaved().run()


if __name__ == "__main__":
    main(sys.argv[1:])
