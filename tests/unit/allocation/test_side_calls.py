"""Side calls of the allocation in fast mode: the `score` rating and the `scale` decomposition,
through the `scale` planner over real HTTP, against a server that behaves like Qwen3 with a
reasoning parser: it thinks unless `enable_thinking` is false, its thinking eats `max_tokens`,
and an answer longer than what is left is cut off."""

from __future__ import annotations

import json
from typing import Any

from agentflow import Agent
from agentflow.models import OpenAIModel, RetryPolicy
from tests.unit.scripted_server import Reply, reply_json, scripted_server

THINKING = 100
"""Tokens the model thinks for when thinking is on."""
STEPS = json.dumps({"steps": ["Find x.", "Double x."]})
STEPS_TOKENS = 250
"""What the decomposition costs: more than the fast budget (160), less than its own cap (400)."""


def _qwen3(path: str, body: dict[str, Any]) -> Reply:
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") or {}
    if "steps" in properties:
        text, cost = STEPS, STEPS_TOKENS
    elif "difficulty" in properties:
        text, cost = json.dumps({"difficulty": 0.2}), 8
    else:
        text, cost = "x is 3, so 2x is \\boxed{6}", 12
    thinks = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
    left = int(body.get("max_tokens") or 10_000) - (THINKING if thinks else 0)
    finish = "stop" if left >= cost else "length"
    if left < cost:  # cut off: nothing when the thinking ate it all, else half the answer
        text = text[: len(text) // 2] if left > 0 else ""
    message = {
        "role": "assistant",
        "content": text,
        "reasoning": "hmm " * THINKING if thinks else None,
    }
    usage = {"prompt_tokens": 10, "completion_tokens": min(cost, max(left, 0)) + THINKING * thinks}
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return reply_json({"model": "m", "choices": [choice], "usage": usage})


async def _scale_run() -> tuple[Any, list[dict[str, Any]]]:
    with scripted_server(_qwen3) as server:
        model = OpenAIModel("Qwen/Qwen3-8B", server.base_url, retry=RetryPolicy(max_retries=0))
        try:
            result = await Agent(model=model, planner="scale").run("x is 3. What is 2x?")
        finally:
            await model.aclose()
    return result, server.requests


def _kind(request: dict[str, Any]) -> str:
    schema = (request.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    return str(next(iter(schema.get("properties", {"step": 0}))))


async def test_the_score_rating_is_sent_with_thinking_off() -> None:
    """Before: the rating went out with no switch, the thinking ate its 64 tokens, and every
    step fell back to difficulty 1.0 (think everywhere)."""
    result, requests = await _scale_run()
    ratings = [r for r in requests if _kind(r) == "difficulty"]
    assert len(ratings) == 2
    assert all(r["chat_template_kwargs"] == {"enable_thinking": False} for r in ratings)
    assert all(r["max_tokens"] == 64 for r in ratings)
    records = [n.allocation or {} for n in result.trace.nodes.values()]
    assert [(r["difficulty"], r["mode"]) for r in records] == [(0.2, "fast"), (0.2, "fast")]
    assert not any(r["notes"] for r in records)


async def test_the_scale_decomposition_keeps_its_own_token_cap() -> None:
    """Before: the fast budget's 160 tokens replaced the decomposition's 400, the plan was cut
    and the problem ran as one step."""
    result, requests = await _scale_run()
    (decomposition,) = [r for r in requests if _kind(r) == "steps"]
    assert decomposition["max_tokens"] == 400
    assert decomposition["chat_template_kwargs"] == {"enable_thinking": False}
    assert sorted(result.trace.nodes) == ["s1", "s2"]
    assert result.answer == "6"
