"""A real vLLM server's answers carry a plausible timing record, and request priorities are
either taken or dropped without a word, whichever scheduling policy the server runs."""

from __future__ import annotations

from agentflow.model import ModelSettings
from agentflow.models import OpenAIModel

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
SHORT = ModelSettings(max_tokens=8, temperature=0)


async def test_a_live_response_carries_its_timing(live_model: OpenAIModel) -> None:
    response = await live_model.complete(QUESTION, SHORT)
    timing = response.timing
    assert timing is not None
    assert timing.attempts == 1 and timing.endpoint == live_model.pool.base_urls[0]
    assert 0 <= timing.queued_s <= timing.total_s < live_model.timeout
    assert timing.ttft_s is None
    assert timing.prompt_tokens == response.usage.prompt_tokens > 0
    assert 0 < timing.completion_tokens <= 8
    assert timing.cached_tokens is None or 0 <= timing.cached_tokens <= timing.prompt_tokens


async def test_a_live_stream_times_its_first_piece(live_model: OpenAIModel) -> None:
    deltas = [d async for d in live_model.stream(QUESTION, SHORT)]
    timing = deltas[-1].timing
    assert timing is not None and timing.ttft_s is not None
    assert 0 < timing.ttft_s <= timing.total_s
    assert timing.completion_tokens == deltas[-1].usage.completion_tokens  # type: ignore[union-attr]


async def test_a_priority_is_served_whatever_the_servers_policy(live_model: OpenAIModel) -> None:
    first = await live_model.complete(QUESTION, ModelSettings(max_tokens=4, priority=5))
    second = await live_model.complete(QUESTION, ModelSettings(max_tokens=4, priority=5))
    assert first.usage.completion_tokens > 0 and second.usage.completion_tokens > 0
    assert first.timing is not None and first.timing.attempts == 1  # a refusal is no retry
    # The endpoint remembers whether the server took the field: a refusal is asked once only.
    assert isinstance(live_model.pool.endpoints[0].takes_priority, bool)
