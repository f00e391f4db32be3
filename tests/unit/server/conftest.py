"""A real uvicorn server on loopback, in a thread, with a fake model behind the agents."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp

from agentflow.model import Message, ModelSettings, StreamDelta
from agentflow.planner import Planner
from agentflow.server import AgentSpec, ServerConfig, create_app
from agentflow.testing import FunctionModel, ReplyFunction
from agentflow.tool import Tool

REWRITTEN = "Which is older, Oxford or Cambridge?"
MARKER = re.compile(r"marker-\d+")


def fake_reply(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
    """Plays every role of a run: rewriter, the direct planner's step and the answer writer.
    The answer repeats the question's marker, so concurrent chats can be told apart."""
    prompt = str(messages[-1]["content"])
    if "Standalone question:" in prompt:
        return REWRITTEN
    if "Proposed answer:" in prompt:
        proposed = prompt.split('<result id="proposed">\n', 1)[1].split("\n</result>", 1)[0]
        return f"The answer is {proposed} as far as I can tell."
    markers = MARKER.findall(prompt)
    return f"Thinking about it.\nAnswer: Paris {' '.join(markers)}".strip()


class WordStreamModel(FunctionModel):
    """A FunctionModel whose `stream` yields its answer a word at a time, as a server would."""

    async def stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        response = await self.complete(messages, settings, json_schema=json_schema)
        for index, word in enumerate(response.text.split(" ")):
            yield StreamDelta(text=word if index == 0 else f" {word}")
        yield StreamDelta(usage=response.usage)


def config(
    fn: ReplyFunction = fake_reply,
    *,
    planner: str | Planner = "direct",
    tools: Sequence[Tool] = (),
    **options: Any,
) -> ServerConfig:
    model = WordStreamModel(fn)
    spec = AgentSpec(id="agentflow-direct", model=model, planner=planner, tools=tuple(tools))
    return ServerConfig(agents=(spec,), **options)


@contextmanager
def serving(server_config: ServerConfig, **app_options: Any) -> Iterator[str]:
    """Run agentflow's app under uvicorn on a free loopback port; yields the `/v1` base URL."""
    with serving_app(create_app(server_config, **app_options)) as root:
        yield f"{root}/v1"


@contextmanager
def serving_app(app: ASGIApp) -> Iterator[str]:
    """Run any ASGI app under uvicorn in a thread on a free loopback port; yields its root."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """One server for the tests that do not need a configuration of their own."""
    with serving(config(api_keys=frozenset({"secret"}), keepalive=0.05)) as url:
        yield url
