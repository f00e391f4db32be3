"""A real HTTP server on loopback that answers from scripts: for what a MockTransport cannot
show, such as a server that stops sending in the middle of a stream (timeouts are enforced by
the network layer, which a MockTransport skips)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

STALL = -1.0
"""A pause that never ends: the server keeps the connection open and sends nothing more."""

Pause = float | Callable[[], Awaitable[object]]
"""Seconds to wait before a piece, or a gate to await (an `asyncio.Event`'s or `Barrier`'s
`wait`): a gate orders the server after something else happened, where a pause only hopes to."""

Script = Sequence[tuple[Pause, bytes]]
"""What to send for one request: (pause, bytes) pieces, in order."""


def json_reply(data: Any, status: str = "200 OK") -> Script:
    body = json.dumps(data).encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return [(0.0, f"{head}\r\n\r\n".encode() + body)]


def sse_head() -> bytes:
    """Headers of a stream whose end is the connection's close."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def sse_event(content: str | None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    data = {"object": "chat.completion.chunk", "model": "m", "choices": choices, "usage": usage}
    return f"data: {json.dumps(data)}\n\n".encode()


class Loopback:
    """Answers the n-th request with the n-th script; records every request's JSON body."""

    def __init__(self, scripts: Sequence[Script]) -> None:
        self.scripts = list(scripts)
        self.bodies: list[dict[str, Any]] = []
        self.received = asyncio.Event()
        """Set once a request's body has been read."""
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.base_url = ""

    async def __aenter__(self) -> Loopback:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._answer_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n"):
            if line.startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        self.bodies.append(json.loads(await reader.readexactly(length)) if length else {})
        self.received.set()
        script = self.scripts.pop(0)
        for pause, piece in script:
            if callable(pause):
                await pause()
            elif pause == STALL:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
        return not any(b"connection: close" in piece for _, piece in script)
