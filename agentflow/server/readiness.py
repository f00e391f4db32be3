"""Readiness: whether this server can answer a chat now, as opposed to whether it is alive.

`/health` is liveness (the process answers: restarting it would not help a down model
server); `/ready` is what a load balancer routes by: not while draining at shutdown, and not
while no model server of an agent answers. A model server counts as up when `GET /models`
answers (any status below 500) within a short timeout; the verdict is kept a moment so
frequent probes do not each cost a request per model server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import httpx2

from agentflow.model import Model
from agentflow.models import OpenAIModel

__all__ = ["ModelProbe"]


class ModelProbe:
    """Asks the agents' model servers whether they answer; one per service."""

    def __init__(self, models: Iterable[Model], *, timeout: float = 2.0, keep: float = 2.0):
        self.timeout = timeout
        self.keep = keep
        """Seconds a verdict is reused."""
        self._models = list({id(m): m for m in models}.values())
        self._verdict: tuple[float, list[str]] | None = None
        self._lock = asyncio.Lock()

    async def unreachable(self) -> list[str]:
        """The names of the models none of whose servers answer (empty: all can be used).
        Names, not URLs: the answer is shown on an open endpoint."""
        async with self._lock:
            now = time.monotonic()
            if self._verdict is None or now - self._verdict[0] > self.keep:
                down = await asyncio.gather(*(self._down(m) for m in self._models))
                names = [m.name for m, d in zip(self._models, down, strict=True) if d]
                self._verdict = (time.monotonic(), names)
            return self._verdict[1]

    async def _down(self, model: Model) -> bool:
        served = _served(model)
        if served is None:
            return False  # an in-process model (tests, fakes) has no server to lose
        headers = {"Authorization": f"Bearer {served.api_key}"}
        async with httpx2.AsyncClient(timeout=self.timeout, headers=headers) as client:
            for url in served.pool.base_urls:
                try:
                    if (await client.get(f"{url}/models")).status_code < 500:
                        return False
                except httpx2.HTTPError:
                    continue
        return True


def _served(model: Model) -> OpenAIModel | None:
    """The `OpenAIModel` behind `model`, through `with_overrides` wrappers; None if none."""
    inner: object = model
    while not isinstance(inner, OpenAIModel) and isinstance(getattr(inner, "inner", None), Model):
        inner = getattr(inner, "inner")  # noqa: B009 - a wrapper's attribute, not in Model's type
    return inner if isinstance(inner, OpenAIModel) else None
