"""`agentflow mcp` over stdio against the live model server: an MCP client (the `mcp` SDK's)
starts it, lists `ask` and calls it once. Checks the protocol, never the model's words."""

from __future__ import annotations

import sys

from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from agentflow.settings import Settings


async def test_ask_over_stdio_answers_with_usage_and_progress(live_settings: Settings) -> None:
    args = ["-m", "agentflow.cli", "mcp", "--base-url", live_settings.base_url]
    args += ["--model", live_settings.model, "--planner", "direct"]
    server = StdioServerParameters(command=sys.executable, args=args)
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with Client(server) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["ask"]
        result = await client.call_tool(
            "ask",
            {"question": "What is the capital of France?", "max_model_calls": 4},
            progress_callback=on_progress,
        )
    assert not result.is_error, result.content
    (block,) = result.content
    assert isinstance(block, TextContent)  # the answer, as text
    content = result.structured_content or {}
    assert content["status"] == "answered" and content["planner"] == "direct"
    assert content["usage"]["model_calls"] == 1
    assert content["usage"]["prompt_tokens"] > 0 and content["usage"]["completion_tokens"] > 0
    assert content["seconds"] > 0
    assert content["answer"] == block.text
    messages = [message for _, _, message in sorted(updates)]
    assert messages[0] == 'planned answer: llm("What is the capital of France?") (1 step planned)'
    assert messages[-1] == "answered"
    final, total, _ = max(updates)
    assert final == total  # progress reaches its total with the answer
