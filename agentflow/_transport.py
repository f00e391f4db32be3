"""The lean HTTP path under `OpenAIModel`: JSON bytes out, a body or a stream of bytes back.

The openai SDK's request path (request options, typed responses, its own retry machinery that
agentflow turns off) costs about 2 ms of CPU per call on the project's 2-core machines, which is
more than the executor's whole budget on a 1,000-node plan. Posting the encoded body and parsing
only the fields agentflow reads costs about 0.4 ms with aiohttp.

`Transport` hides the library: `AiohttpTransport` (`agentflow._aiohttp`) normally,
`HttpxTransport` whenever a caller injects an httpx2 client (tests use `httpx2.MockTransport`);
`agentflow.endpoints` picks. Both raise
only `TransportTimeout` and `TransportUnreachable`; statuses, error bodies included, are the
caller's to read.

A request's `time_limit` is a deadline for the whole exchange: connecting, the headers and the
whole body, or the whole stream. A server that trickles a byte at a time therefore cannot hold a
request past it, as it could when the limit bounded only each wait for bytes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2

__all__ = [
    "HttpxTransport",
    "Reply",
    "StreamReply",
    "Transport",
    "TransportTimeout",
    "TransportUnreachable",
]


class TransportTimeout(Exception):
    """The request's deadline passed, or no byte arrived within the read limit."""


class TransportUnreachable(Exception):
    """The connection failed or broke off."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


class StreamReply(ABC):
    """An open streamed response: its status, then its body as it arrives."""

    status: int

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive; a read that waits longer than the stream's read
        limit, or goes past the request's deadline, raises `TransportTimeout`."""

    @abstractmethod
    async def read(self) -> bytes:
        """The whole (error) body."""

    @abstractmethod
    async def aclose(self) -> None: ...


class Transport(ABC):
    """Posts to one server. Safe to share between concurrent requests of one event loop."""

    @abstractmethod
    async def post(self, url: str, body: bytes, time_limit: float) -> Reply:
        """The whole reply; `time_limit` bounds the whole request, body included."""

    @abstractmethod
    async def open_stream(
        self, url: str, body: bytes, time_limit: float, read_timeout: float
    ) -> StreamReply:
        """The response once its headers arrived. `time_limit` bounds the whole request, from
        now to the stream's last byte; `read_timeout` bounds every wait for bytes."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connections; the transport opens new ones if used again."""


HttpxClientFactory = Callable[[], httpx2.AsyncClient]


def _default_httpx_client() -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    return httpx2.AsyncClient(limits=limits)


class HttpxTransport(Transport):
    def __init__(self, headers: dict[str, str], make_client: HttpxClientFactory | None) -> None:
        self.headers = headers
        self.make_client = make_client or _default_httpx_client
        self._client: httpx2.AsyncClient | None = None

    def _get_client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    async def post(self, url: str, body: bytes, time_limit: float) -> Reply:
        # httpx has no total timeout: its one timeout bounds each wait for bytes.
        with _translated():
            async with asyncio.timeout(time_limit):
                response = await self._get_client().post(
                    url, content=body, headers=self.headers, timeout=time_limit
                )
        return Reply(response.status_code, response.content)

    async def open_stream(
        self, url: str, body: bytes, time_limit: float, read_timeout: float
    ) -> StreamReply:
        client = self._get_client()
        request = client.build_request(
            "POST",
            url,
            content=body,
            headers=self.headers,
            timeout=httpx2.Timeout(time_limit, read=read_timeout),
        )
        deadline = asyncio.get_running_loop().time() + time_limit
        with _translated():
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        return _HttpxStream(response, deadline)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class _HttpxStream(StreamReply):
    """Each read is bounded by the request's deadline (a few microseconds per piece: this path
    serves injected clients, tests mostly; aiohttp's total timeout costs nothing per piece)."""

    def __init__(self, response: httpx2.Response, deadline: float) -> None:
        self.response = response
        self.status = response.status_code
        self.deadline = deadline

    async def chunks(self) -> AsyncIterator[bytes]:
        pieces = self.response.aiter_bytes()
        while True:
            with _translated():
                async with asyncio.timeout_at(self.deadline):
                    chunk = await anext(pieces, None)
            if chunk is None:
                return
            yield chunk

    async def read(self) -> bytes:
        with _translated():
            async with asyncio.timeout_at(self.deadline):
                return await self.response.aread()

    async def aclose(self) -> None:
        await self.response.aclose()


class _translated:
    """httpx2's exceptions as the transport's own."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if isinstance(exc, httpx2.TimeoutException | TimeoutError):
            raise TransportTimeout(str(exc) or type(exc).__name__) from exc
        if isinstance(exc, httpx2.TransportError):
            raise TransportUnreachable(str(exc) or type(exc).__name__) from exc
