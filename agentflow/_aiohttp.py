"""`Transport` over aiohttp: the cheap request path, used whenever aiohttp is installed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from agentflow._transport import (
    Reply,
    StreamReply,
    Transport,
    TransportTimeout,
    TransportUnreachable,
)

__all__ = ["AiohttpTransport"]

_KEEPALIVE_S = 3.0
"""Seconds an idle connection is kept for reuse: under uvicorn's 5."""
_CACHED_TIMEOUTS = 64
"""Distinct (total, read) limits kept built: the settings' few, not every remaining time."""


class AiohttpTransport(Transport):
    """One `aiohttp.ClientSession` per event loop (a session belongs to the loop it was made in;
    each `run_sync` has its own). The endpoint pool's semaphore caps the connections."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._targets: dict[str, _Target] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                # uvicorn (vLLM's server) closes an idle connection after 5 s; reusing one it is
                # closing gives "Server disconnected" on a POST aiohttp will not resend. Keep
                # idle connections for less than that (httpx keeps them 5 s).
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=_KEEPALIVE_S),
                auto_decompress=False,  # vLLM does not compress; asking it not to is cheaper
                skip_auto_headers=("Accept-Encoding",),
            )
            self._loop = loop
        return self._session

    def _timeout(self, total: float, read: float) -> aiohttp.ClientTimeout:
        """`total` bounds the whole request, the body or the stream to its last byte included
        (aiohttp keeps that timer running until the response is released), so a server that
        trickles bytes cannot hold it longer; `read` bounds each wait for bytes."""
        key = (total, read)
        limits = self._timeouts.get(key)
        if limits is None:
            limits = aiohttp.ClientTimeout(
                total=total, connect=total, sock_connect=total, sock_read=read
            )
            if len(self._timeouts) < _CACHED_TIMEOUTS:  # a resend's remaining time: not kept
                self._timeouts[key] = limits
        return limits

    def _target(self, url: str) -> _Target:
        """The parsed URL and the proxy the environment names for it (as httpx's `trust_env`
        does), worked out once per URL: aiohttp's own `trust_env` reads them on every request."""
        target = self._targets.get(url)
        if target is None:
            parsed = URL(url)
            try:
                proxy, auth = get_env_proxy_for_url(parsed)
            except LookupError:
                target = _Target(parsed)
            else:
                target = _Target(parsed, proxy, auth)
            self._targets[url] = target
        return target

    async def post(self, url: str, body: bytes, time_limit: float) -> Reply:
        session = self._get_session()
        to = self._target(url)
        limits = self._timeout(time_limit, time_limit)
        try:
            async with session.post(
                to.url, data=body, timeout=limits, proxy=to.proxy, proxy_auth=to.auth
            ) as r:
                return Reply(r.status, await r.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc) from exc

    async def open_stream(
        self, url: str, body: bytes, time_limit: float, read_timeout: float
    ) -> StreamReply:
        session = self._get_session()
        to = self._target(url)
        try:
            response = await session.post(
                to.url,
                data=body,
                timeout=self._timeout(time_limit, read_timeout),
                proxy=to.proxy,
                proxy_auth=to.auth,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translated(exc) from exc
        return _AiohttpStream(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is _running_loop():
            await session.close()


@dataclass(frozen=True)
class _Target:
    url: URL
    proxy: URL | None = None
    auth: aiohttp.BasicAuth | None = None


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
        if self.response.content.at_eof():
            self.response.release()  # the connection can serve the next request
        else:
            self.response.close()  # abandoned midway: the server sees the disconnect


def _translated(exc: BaseException) -> Exception:
    if isinstance(exc, TimeoutError):  # aiohttp's timeout errors are TimeoutErrors too
        return TransportTimeout(str(exc) or "timed out")
    return TransportUnreachable(str(exc) or type(exc).__name__)


def _running_loop() -> Any:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
