"""Helpers for tests of the OpenAI wire format on httpx2.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2

from agentflow.endpoints import EndpointPool
from agentflow.models import OpenAIModel, RetryPolicy

Handler = Callable[[httpx2.Request], httpx2.Response]


def completion(
    content: str = "hello",
    *,
    n: int = 1,
    reasoning: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    logprobs: list[float] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": lp} for lp in logprobs]}
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "m",
        "choices": [dict(choice, index=i) for i in range(n)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def model_on(
    handler: Handler | dict[str, Handler],
    *,
    retries: int = 3,
    timeout: float = 5.0,
    name: str = "m",
) -> OpenAIModel:
    """An OpenAIModel whose servers are `handler` (one URL) or a URL-to-handler mapping."""
    handlers = handler if isinstance(handler, dict) else {"http://server-a/v1": handler}

    def client_for(url: str) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(handlers[url.rstrip("/")]))

    pool = EndpointPool(list(handlers), http_client_factory=client_for, cooldown=60)
    return OpenAIModel(
        name, pool, retry=RetryPolicy(max_retries=retries, base_delay=0.0), timeout=timeout
    )


def json_response(data: Any, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, content=json.dumps(data).encode())
