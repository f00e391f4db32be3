"""`agentflow serve` as a process: SIGTERM lets a running answer finish within the grace period."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..scripted_server import Reply, reply_sse, scripted_server
from .conftest import serving_app
from .model_server import BODY, answering

DELAY = 0.5
"""Seconds the fake model server takes per completion."""


def delayed_model_server(seen: threading.Event) -> Starlette:
    """Answers every completion after DELAY seconds, streamed when asked."""

    async def completions(request: Request) -> Response:
        body = await request.json()
        seen.set()
        await asyncio.sleep(DELAY)
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "Answer: Paris"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse({"id": "c", "object": "chat.completion", "created": 0,
                                 "model": "m", "choices": [choice], "usage": usage})  # fmt: skip

        async def chunks() -> AsyncIterator[str]:
            for piece in ("Paris", " it is."):
                delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'id': 'c', 'created': 0, 'model': 'm', 'choices': [delta]})}\n\n"  # noqa: E501
            last = {"object": "chat.completion.chunk", "id": "c", "created": 0, "model": "m",
                    "choices": [], "usage": usage}  # fmt: skip
            yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_lets_the_running_answer_finish(tmp_path: Path) -> None:
    seen = threading.Event()
    with serving_app(delayed_model_server(seen)) as model_root:
        port = _free_port()
        command = [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)]
        command += ["--base-url", f"{model_root}/v1", "--model", "m", "--planner", "direct"]
        command += ["--grace", "10"]
        log = tmp_path / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen(command, stdout=sink, stderr=sink)
        try:
            base_url = _wait_healthy(port, server, log)
            api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
            stream = api.chat.completions.create(
                model="agentflow-direct",
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                stream=True,
            )
            assert seen.wait(timeout=10)
            server.send_signal(signal.SIGTERM)
            answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            # uvicorn re-raises the signal once it has shut down, as a process killed by it
            assert server.wait(timeout=15) == -signal.SIGTERM, log.read_text()
        finally:
            server.kill()
            server.wait()
    assert answer == "Paris it is."


def _wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path) -> str:
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            if httpx2.get(f"{root}/health", timeout=1).status_code == 200:
                return f"{root}/v1"
        except httpx2.TransportError:
            time.sleep(0.1)


@contextmanager
def _streaming_a_trickle(
    tmp_path: Path, *options: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, openai.Stream[Any], Path]]:
    """`agentflow serve OPTIONS` (its own process) with one streamed chat whose answer
    trickles forever: (the server, its base URL, the chat's stream, the server's log)."""
    answering_started = threading.Event()

    def trickling(body: dict[str, Any]) -> Reply:
        answering_started.set()
        return reply_sse(b": ping\n\n" for _ in iter(lambda: time.sleep(0.05), 1))

    with scripted_server(answering(trickling)) as model:
        port = _free_port()
        command = [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)]
        command += ["--base-url", model.base_url, "--model", "m", "--planner", "direct"]
        log = tmp_path / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen([*command, *options], stdout=sink, stderr=sink)
        try:
            base_url = _wait_healthy(port, server, log)
            api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
            stream = api.chat.completions.create(**BODY, stream=True)
            assert answering_started.wait(timeout=10)
            yield server, base_url, stream, log
        finally:
            server.kill()
            server.wait()


def test_sigterm_past_the_grace_drains_then_ends_streams_with_an_error(tmp_path: Path) -> None:
    """While draining the server still listens: /ready is 503 (a load balancer moves on),
    /health 200, a new chat 503; an answer still running at the grace's end gets an error
    frame the openai client raises, not a cut connection; the process is gone soon after."""
    with _streaming_a_trickle(tmp_path, "--grace", "2") as (server, base_url, stream, log):
        server.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        root = base_url.removesuffix("/v1")
        ready = _first_status(f"{root}/ready", until=503)
        health = httpx2.get(f"{root}/health", timeout=5)
        refused = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=5)
        with pytest.raises(openai.APIError, match="the server is shutting down"):
            for _ in stream:
                pass
        code = server.wait(timeout=15)
        took = time.monotonic() - signalled
    assert ready == 503 and health.status_code == 200 and health.json()["status"] == "draining"
    assert refused.status_code == 503
    assert code == -signal.SIGTERM and took < 2 + 4, (code, took)
    assert "Traceback" not in log.read_text()


def _first_status(url: str, until: int) -> int:
    """GET `url` until it answers `until` (the signal takes a moment to arrive), at most 1 s."""
    deadline = time.monotonic() + 1
    status = httpx2.get(url, timeout=5).status_code
    while status != until and time.monotonic() < deadline:
        time.sleep(0.05)
        status = httpx2.get(url, timeout=5).status_code
    return status


def test_a_second_sigterm_stops_at_once_with_the_error_frame(tmp_path: Path) -> None:
    """The first SIGTERM drains with the default grace (30 s); a second ends the grace now:
    the running answer gets the shutting-down error frame, the process exits in moments and
    the log has no traceback (uvicorn's backstop did not have to cancel anything)."""
    with _streaming_a_trickle(tmp_path) as (server, _, stream, log):
        server.send_signal(signal.SIGTERM)
        time.sleep(1)
        server.send_signal(signal.SIGTERM)
        again = time.monotonic()
        with pytest.raises(openai.APIError, match="the server is shutting down"):
            for _ in stream:
                pass
        code = server.wait(timeout=15)
        took = time.monotonic() - again
    assert code == -signal.SIGTERM and took < 2, (code, took, log.read_text())
    assert "Traceback" not in log.read_text()
