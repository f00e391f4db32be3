"""The thinking switches reach the wire where vLLM reads them."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from agentflow.model import ModelSettings

from ..wire import completion, json_response, model_on


async def test_reasoning_effort_and_thinking_budget_are_sent() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return json_response(completion("4", reasoning="2+2"))

    settings = ModelSettings(
        reasoning_effort="high",
        thinking_token_budget=128,
        chat_template_kwargs={"enable_thinking": True},
    )
    response = await model_on(handler).complete([{"role": "user", "content": "2+2"}], settings)
    assert (response.text, response.choices[0].reasoning) == ("4", "2+2")
    body = seen[0]
    assert body["reasoning_effort"] == "high"
    assert body["thinking_token_budget"] == 128
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
