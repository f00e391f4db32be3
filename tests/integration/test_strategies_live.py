"""The `threads` strategy on the embedded model: one node's threads overlap in time, and the server
reports prefix-cache hits for them (vLLM's `/metrics`, read just before the first thread is sent
and just after the last one returns).

The outline is fixed here (SmolLM2-135M may outline one thread, or the same one twice, and the
test must not depend on that): the outline request is still sent, for one token under the
schema, so the server sees the prompt the threads continue exactly as a real outline would leave
it. Budgets are tiny: this checks the wiring and the cache on a real server, not answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from agentflow import Agent
from agentflow.allocation import Allocator, Budget, Constant, parse_outline
from agentflow.allocation._threads import join_instruction, outline_schema
from agentflow.model import Choice, Message, ModelResponse, ModelSettings
from agentflow.models import OpenAIModel
from agentflow.runtime.vllm_metrics import snapshot
from agentflow.settings import Settings

OUTLINE = [
    "Count the legs of the 3 cows (each cow has 4 legs).",
    "Count the legs of the 4 hens (each hen has 2 legs).",
]
QUESTION = "A farm has 3 cows and 4 hens. How many legs do they have in total?"
COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")


async def _counters(base_url: str) -> dict[str, float]:
    now = await snapshot(base_url)
    assert now is not None, f"no vLLM metrics at {base_url}"
    return {name: now.totals.get(name, 0.0) for name in COUNTERS}


class FixedOutline(OpenAIModel):
    """The live model, with a fixed outline and the server's counters read around the threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_url = self.pool.base_urls[0]
        self.before: dict[str, float] = {}
        self.window: dict[str, float] = {}

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        if json_schema is None:
            return await super().complete(messages, settings, json_schema=json_schema)
        one_token = replace(settings or ModelSettings(), max_tokens=1)
        sent = await super().complete(messages, one_token, json_schema=json_schema)
        text = json.dumps({"threads": OUTLINE})
        return replace(sent, choices=(Choice(text=text),))

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        prompt = await super().render_prompt(messages, chat_template_kwargs)
        self.before = await _counters(self.base_url)
        return prompt

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        if prompt.endswith(join_instruction()):
            after = await _counters(self.base_url)
            self.window = {k: after[k] - self.before[k] for k in COUNTERS}
        return await super().complete_text(prompt, settings)


@pytest.fixture
async def fixed_outline(live_settings: Settings) -> AsyncIterator[FixedOutline]:
    model = FixedOutline(live_settings.model, live_settings.base_url, timeout=120)
    yield model
    await model.aclose()


async def test_threads_overlap_and_hit_the_prefix_cache(fixed_outline: FixedOutline) -> None:
    think = Budget(mode="think", max_tokens=64, temperature=0.0, strategy="threads", threads=3)
    allocator = Allocator(estimator=Constant("uniform-think", 1.0), think=think)
    agent = Agent(model=fixed_outline, planner="direct", allocation=allocator)
    result = await agent.run(QUESTION)

    record = result.trace.nodes["answer"].allocation
    assert record is not None and record["strategy"] == "threads", record
    assert record["threads"]["ran"] == 2 and record["notes"] == [], record
    first, second = (n for n in result.trace.nodes.values() if n.parent == "answer")
    assert first.status == second.status == "ok"
    assert first.started_at is not None and second.started_at is not None
    assert first.finished_at is not None and second.finished_at is not None
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    queries, hits = (fixed_outline.window.get(k, 0.0) for k in COUNTERS)
    print(f"thread requests: {hits:.0f} of {queries:.0f} prompt tokens from the prefix cache")
    assert queries > 0 and hits > 0, fixed_outline.window


async def test_the_outline_call_parses_under_its_schema(live_model: OpenAIModel) -> None:
    asked = [{"role": "user", "content": f"{QUESTION}\n\nSplit the work into at most 3 threads."}]
    settings = ModelSettings(temperature=0.0, max_tokens=32)
    response = await live_model.complete(asked, settings, json_schema=outline_schema(3))
    outline = parse_outline(response.text, 3)
    assert len(outline.items) <= 3, response.text
    assert outline.items or outline.malformed, response.text  # cut off at 32 tokens: salvaged
