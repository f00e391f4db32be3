"""A client that goes away takes its run down, down to the request to the model server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from agentflow.models import OpenAIModel
from agentflow.server import AgentSpec, ServerConfig

from .conftest import serving, serving_app


def slow_model_server(requested: threading.Event, dropped: threading.Event) -> Starlette:
    """An OpenAI-compatible server that never finishes its answer: it sends JSON's leading
    whitespace until the client hangs up, and notes that it did."""

    async def trickle() -> AsyncIterator[bytes]:
        requested.set()
        try:
            for _ in range(600):
                yield b" "
                await asyncio.sleep(0.05)
        finally:
            dropped.set()

    async def completions(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(trickle(), media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def test_a_disconnect_drops_the_request_to_the_model_server() -> None:
    requested, dropped = threading.Event(), threading.Event()
    with serving_app(slow_model_server(requested, dropped)) as model_root:
        model = OpenAIModel("m", f"{model_root}/v1", timeout=30)
        agents = (AgentSpec(id="agentflow-direct", model=model, planner="direct"),)
        with serving(ServerConfig(agents=agents, keepalive=0.05)) as base_url:
            body = {
                "model": "agentflow-direct",
                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                "stream": True,
            }
            with httpx2.stream("POST", f"{base_url}/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if requested.is_set() and line == ": keepalive":
                        break
            assert dropped.wait(timeout=10), "the model server kept generating for nobody"
