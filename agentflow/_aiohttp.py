"""`Transport` over aiohttp: the cheap request path, used whenever aiohttp is installed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from agentflow._transport import (
    Reply,
    StreamReply,
    Transport,
    TransportTimeout,
    TransportUnreachable,
)

__all__ = ["AiohttpTransport"]


class AiohttpTransport(Transport):
    """One `aiohttp.ClientSession` per event loop (a session belongs to the loop it was made in;
    each `run_sync` has its own). The endpoint pool's semaphore caps the connections."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,  # vLLM does not compress; asking it not to is cheaper
                skip_auto_headers=("Accept-Encoding",),
            )
            self._loop = loop
        return self._session

    def _timeout(self, connect: float, read: float) -> aiohttp.ClientTimeout:
        """httpx's meaning of one timeout: connecting, and each wait for bytes (no total)."""
        key = (connect, read)
        if key not in self._timeouts:
            self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
        return self._timeouts[key]

    async def post(self, url: str, body: bytes, time_limit: float) -> Reply:
        session = self._get_session()
        try:
            async with session.post(
                url, data=body, timeout=self._timeout(time_limit, time_limit)
            ) as r:
                return Reply(r.status, await r.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc) from exc

    async def open_stream(
        self, url: str, body: bytes, time_limit: float, read_timeout: float
    ) -> StreamReply:
        session = self._get_session()
        try:
            response = await session.post(
                url, data=body, timeout=self._timeout(time_limit, read_timeout)
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc) from exc
        return _AiohttpStream(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is _running_loop():
            await session.close()


class _AiohttpStream(StreamReply):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc) from exc

    async def read(self) -> bytes:
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc) from exc

    async def aclose(self) -> None:
        self.response.release()


def _translated(exc: BaseException) -> Exception:
    if isinstance(exc, TimeoutError):  # aiohttp's timeout errors are TimeoutErrors too
        return TransportTimeout(str(exc) or "timed out")
    return TransportUnreachable(str(exc) or type(exc).__name__)


def _running_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
