"""Spreading model requests over one or more OpenAI-compatible servers.

An `EndpointPool` hands out the healthy endpoint with the fewest outstanding requests, throttles
each endpoint (a concurrency cap, and optionally a rate cap through asyncio-throttle), and takes an
endpoint out of rotation for a cool-down after it fails to connect, so requests fail over to the
others.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
from asyncio_throttle.throttler import Throttler
from openai import AsyncOpenAI

from agentflow._aiohttp import AiohttpTransport
from agentflow._transport import HttpxTransport, Transport
from agentflow.exceptions import UserError

__all__ = ["Endpoint", "EndpointPool"]

HttpClientFactory = Callable[[str], httpx2.AsyncClient]
"""Builds the HTTP client for one base URL; tests inject a `MockTransport` through it. Given one,
the pool's requests go through httpx2 clients it builds, instead of aiohttp."""


@dataclass(kw_only=True, eq=False)
class Endpoint:
    """One server: its transport, its throttle and its health as the pool sees it.

    The transport (the lean request path), the openai SDK client (for the rare call that wants
    its types) and the concurrency semaphore are made on first use and dropped by `aclose`, so
    the same endpoint works again under a new event loop (each `run_sync` has its own).
    """

    base_url: str
    make_client: Callable[[], AsyncOpenAI] = field(repr=False)
    make_transport: Callable[[], Transport] = field(repr=False)
    max_concurrency: int
    throttler: Throttler | None = None
    outstanding: int = 0
    down_until: float = 0.0
    """Monotonic time before which the endpoint is skipped; 0 when healthy."""
    takes_priority: bool = True
    """False once the server refused a request `priority` (no priority scheduling)."""
    _client: AsyncOpenAI | None = field(default=None, repr=False)
    _transport: Transport | None = field(default=None, repr=False)
    _semaphore: asyncio.Semaphore | None = field(default=None, repr=False)

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = self.make_transport()
        return self._transport

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._semaphore

    def is_up(self, now: float) -> bool:
        return self.down_until <= now

    async def aclose(self) -> None:
        client, self._client, self._semaphore = self._client, None, None
        transport, self._transport = self._transport, None
        if client is not None:
            await client.close()
        if transport is not None:
            await transport.aclose()


class EndpointPool:
    """Least-outstanding-requests balancing with failover over several base URLs."""

    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        api_key: str = "EMPTY",
        max_concurrency: int = 64,
        rate_limit: int | None = None,
        cooldown: float = 5.0,
        http_client_factory: HttpClientFactory | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise UserError("EndpointPool needs at least one base URL")
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.cooldown = cooldown
        self.endpoints = [
            Endpoint(
                base_url=url.rstrip("/"),
                make_client=functools.partial(
                    _make_client, url.rstrip("/"), api_key, http_client_factory
                ),
                make_transport=functools.partial(
                    _make_transport, url.rstrip("/"), api_key, http_client_factory
                ),
                max_concurrency=max_concurrency,
                throttler=Throttler(rate_limit=rate_limit, period=1.0) if rate_limit else None,
            )
            for url in urls
        ]

    @property
    def base_urls(self) -> list[str]:
        return [e.base_url for e in self.endpoints]

    def choose(self, avoid: set[str] | frozenset[str] = frozenset()) -> Endpoint:
        """The endpoint to use next: healthy and not in `avoid` first, fewest outstanding."""
        if len(self.endpoints) == 1:  # the usual case, asked once per request: no choice
            return self.endpoints[0]
        now = time.monotonic()
        fresh = [e for e in self.endpoints if e.base_url not in avoid] or self.endpoints
        healthy = [e for e in fresh if e.is_up(now)]
        if healthy:
            return min(healthy, key=lambda e: e.outstanding)
        # Every candidate is cooling down: try the one that went down first rather than fail.
        return min(fresh, key=lambda e: e.down_until)

    def acquire(self, avoid: set[str] | frozenset[str] = frozenset()) -> _Reservation:
        """Reserve an endpoint for one request (`async with`), waiting for its throttle."""
        return _Reservation(self, avoid)

    def mark_down(self, endpoint: Endpoint) -> None:
        endpoint.down_until = time.monotonic() + self.cooldown

    def mark_up(self, endpoint: Endpoint) -> None:
        endpoint.down_until = 0.0

    async def aclose(self) -> None:
        """Close every connection; the pool opens new ones if it is used again."""
        for endpoint in self.endpoints:
            await endpoint.aclose()


class _Reservation:
    """One request's hold on an endpoint: counted as outstanding from the choice on, then a slot
    of its semaphore and a pass of its throttle. A class rather than an `asynccontextmanager`
    generator: every request enters one, and the generator machinery costs several times more."""

    def __init__(self, pool: EndpointPool, avoid: set[str] | frozenset[str]) -> None:
        self._pool = pool
        self._avoid = avoid

    async def __aenter__(self) -> Endpoint:
        endpoint = self._endpoint = self._pool.choose(self._avoid)
        # The semaphore taken is the one given back, even if `aclose` drops it meanwhile.
        semaphore = self._semaphore = endpoint.semaphore
        endpoint.outstanding += 1
        try:
            await semaphore.acquire()
            try:
                if endpoint.throttler is not None:
                    throttler: Any = endpoint.throttler  # asyncio-throttle is untyped
                    await throttler.__aenter__()
            except BaseException:
                semaphore.release()
                raise
        except BaseException:
            endpoint.outstanding -= 1
            raise
        return endpoint

    async def __aexit__(self, *exc_info: Any) -> None:
        endpoint = self._endpoint
        try:
            if endpoint.throttler is not None:
                throttler: Any = endpoint.throttler
                await throttler.__aexit__(*exc_info)
        finally:
            self._semaphore.release()
            endpoint.outstanding -= 1


def _make_transport(
    base_url: str, api_key: str, http_client_factory: HttpClientFactory | None
) -> Transport:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    if http_client_factory is not None:
        return HttpxTransport(headers, functools.partial(http_client_factory, base_url))
    return AiohttpTransport(headers)  # about 4x less CPU per request than httpx2


def _make_client(
    base_url: str, api_key: str, http_client_factory: HttpClientFactory | None
) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,  # agentflow retries itself: only on connection errors, 429, 5xx
        http_client=http_client_factory(base_url) if http_client_factory else None,
    )
