"""Estimators, adapters and an allocated run through `Agent` against function models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agentflow import Agent, ModelSettings
from agentflow.allocation import (
    FAST,
    THINK,
    Allocator,
    Constant,
    Score,
    Step,
    adapter_for,
    load_allocator,
    parse_score,
)
from agentflow.allocation._adapters import STEP_BY_STEP, TERSE
from agentflow.exceptions import ModelHTTPError, UserError
from agentflow.model import Choice, Message, ModelResponse, Usage
from agentflow.testing import FunctionModel

STEP = Step(problem="What is 2+3?", question="Add 2 and 3.")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"difficulty": 0.3}', 0.3),
        ("0.7", 0.7),
        ('{"difficulty": 1.5}', None),
        ('{"difficulty": true}', None),
        ('{"difficulty": "hard"}', None),
        ("NaN", None),
        ("very hard", None),
    ],
)
def test_parse_score_takes_only_a_number_from_0_to_1(text: str, value: float | None) -> None:
    assert parse_score(text) == value


async def _no_fast(extra: ModelSettings) -> ModelResponse:
    raise AssertionError("the score estimator never draws the node's answer")


async def test_score_retries_once_then_records_the_default() -> None:
    replies = iter(["hard", '{"difficulty": 0.2}', "hmm", "no idea"])
    calls: list[Mapping[str, Any] | None] = []

    async def complete(
        messages: Sequence[Message],
        settings: ModelSettings,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        calls.append(json_schema)
        return ModelResponse(choices=(Choice(text=next(replies)),), usage=Usage(), model="m")

    second_try = await Score().estimate(STEP, complete, _no_fast)
    assert (second_try.difficulty, second_try.note) == (0.2, "first rating unusable: 'hard'")
    gave_up = await Score().estimate(STEP, complete, _no_fast)
    assert gave_up.difficulty == 1.0 and "no usable rating in 2 tries" in str(gave_up.note)
    assert len(calls) == 4 and all(schema is not None for schema in calls)


def test_adapters_set_each_family_switch_and_caps() -> None:
    user = [{"role": "user", "content": "q"}]
    base = ModelSettings(temperature=0.0, max_tokens=512)
    _, qwen_think = adapter_for("Qwen/Qwen3-8B").apply(user, base, THINK)
    assert qwen_think.chat_template_kwargs == {"enable_thinking": True}
    assert (qwen_think.thinking_token_budget, qwen_think.max_tokens) == (4096, 640 + 4096)
    _, qwen_fast = adapter_for("Qwen/Qwen3-8B").apply(user, base, FAST)
    assert qwen_fast.chat_template_kwargs == {"enable_thinking": False}
    assert (qwen_fast.thinking_token_budget, qwen_fast.max_tokens) == (None, 160)
    _, flag = adapter_for("x", "thinking-flag").apply(user, base, THINK)
    assert flag.chat_template_kwargs == {"thinking": True}
    _, effort = adapter_for("openai/gpt-oss-20b").apply(user, base, FAST)
    assert effort.reasoning_effort == "low"
    _, r1_fast = adapter_for("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").apply(user, base, FAST)
    assert (r1_fast.thinking_token_budget, r1_fast.max_tokens) == (256, 160 + 256)
    smol_msgs, smol = adapter_for("SmolLM2-135M-Instruct").apply(user, base, THINK)
    assert smol_msgs[0] == {"role": "system", "content": STEP_BY_STEP} and smol_msgs[1:] == user
    assert (smol.max_tokens, smol.thinking_token_budget, smol.chat_template_kwargs) == (
        640,
        None,
        None,
    )
    with pytest.raises(UserError, match="unknown thinking adapter"):
        adapter_for("x", "telepathy")


def _mode(messages: Sequence[Message]) -> str:
    first = str(messages[0].get("content", ""))
    return {TERSE: "fast", STEP_BY_STEP: "think"}.get(first, "plain")


def _scripted(rating: str, seen: list[tuple[str, ModelSettings]]) -> FunctionModel:
    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        if schema is not None:
            seen.append(("rate", settings))
            return rating
        seen.append((_mode(messages), settings))
        return "Answer: 5"

    return FunctionModel(reply, name="SmolLM2-135M-Instruct")


@pytest.mark.parametrize(("rating", "mode"), [('{"difficulty": 0.9}', "think"), ("0.1", "fast")])
async def test_a_scored_node_runs_in_the_mode_tau_picks(rating: str, mode: str) -> None:
    seen: list[tuple[str, ModelSettings]] = []
    allocator = Allocator.named("score", tau=0.5)
    agent = Agent(model=_scripted(rating, seen), planner="direct", allocation=allocator)
    result = await agent.run("What is 2+3?")
    assert result.answer == "5"
    assert [m for m, _ in seen] == ["rate", mode]
    assert seen[1][1].max_tokens == (640 if mode == "think" else 160)
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert (record["mode"], record["estimator"], record["tau"], record["samples"]) == (
        mode,
        "score",
        0.5,
        1,
    )
    assert set(record["tokens"]) == {"estimate", mode}
    assert f"[{mode}, difficulty" in result.trace.render()
    assert result.as_dict()["trace"]["nodes"][0]["allocation"]["budget"]["mode"] == mode


async def test_agreeing_fast_samples_answer_the_node_without_thinking() -> None:
    seen: list[ModelSettings] = []

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> ModelResponse:
        seen.append(settings)
        choices = tuple(Choice(text="Answer: 5") for _ in range(settings.n))
        return ModelResponse(choices=choices, usage=Usage(completion_tokens=6, calls=1), model="m")

    agent = Agent(model=FunctionModel(reply), planner="direct", allocation="agreement")
    result = await agent.run("What is 2+3?")
    assert result.answer == "5"
    assert [(s.n, s.temperature) for s in seen] == [(3, 0.7)]  # one n=3 request, no think call
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert (record["mode"], record["difficulty"], record["samples"]) == ("fast", 0.0, 3)


async def test_a_think_vote_stops_early_and_the_trace_says_so() -> None:
    seen: list[ModelSettings] = []

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        seen.append(settings)
        return "Answer: 5"

    allocator = Allocator.named("uniform-think", vote="adaptive", samples=8)
    agent = Agent(model=FunctionModel(reply), planner="direct", allocation=allocator)
    result = await agent.run("What is 2+3?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    # Windows of 3 in flight; these replies arrive at once, so the second window lands whole:
    # the 4th vote settles it (31/32 > 0.95) and the 5th and 6th, already paid for, count too.
    assert (record["samples"], record["stopped_early"], record["votes"]) == (6, True, {"5": 6})
    assert all(s.temperature == 0.7 for s in seen) and len(seen) == 6


async def test_a_refused_thinking_budget_is_dropped_and_noted() -> None:
    seen: list[ModelSettings] = []

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> ModelResponse:
        seen.append(settings)
        if settings.thinking_token_budget is not None:
            raise ModelHTTPError("400", status_code=400, body="unknown field thinking_token_budget")
        choice = Choice(text="Answer: 5", reasoning=None)
        return ModelResponse(choices=(choice,), usage=Usage(calls=1), model="m")

    allocator = Allocator(estimator=Constant("uniform-think", 1.0), adapter="chat-template")
    model = FunctionModel(reply, name="Qwen3-8B")
    agent = Agent(model=model, planner="direct", allocation=allocator)
    result = await agent.run("What is 2+3?")
    assert [s.thinking_token_budget for s in seen] == [4096, None]
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert record["notes"] == [
        "server refused thinking_token_budget: thinking capped by max_tokens only",
        "no thinking came back in think mode: the switch may be ignored",
    ]


def test_load_allocator_reads_the_calibrated_tau(tmp_path: Any) -> None:
    config = tmp_path / "allocation.json"
    assert load_allocator("off") is None
    assert load_allocator("score", config=config).tau == 0.5  # type: ignore[union-attr]
    config.write_text(
        '{"estimators": {"score": {"tau": 0.2, "dev_split": "d", "model": "m", "items": 4}}}'
    )
    assert load_allocator("score", config=config).tau == 0.2  # type: ignore[union-attr]
    assert load_allocator("score", tau=0.7, config=config).tau == 0.7  # type: ignore[union-attr]
    config.write_text('{"estimators": {"score": {"tau": 3}}}')
    with pytest.raises(UserError, match="is not an allocation config"):
        load_allocator("score", config=config)
    with pytest.raises(UserError, match="unknown allocation"):
        load_allocator("vibes")


async def test_disagreeing_fast_samples_send_the_node_to_think_and_all_are_counted() -> None:
    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> ModelResponse:
        texts = [f"Answer: {k}" for k in range(settings.n)] if settings.n > 1 else ["Answer: 5"]
        choices = tuple(Choice(text=t) for t in texts)
        return ModelResponse(choices=choices, usage=Usage(completion_tokens=3, calls=1), model="m")

    agent = Agent(model=FunctionModel(reply), planner="direct", allocation="agreement")
    result = await agent.run("What is 2+3?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert (record["mode"], record["samples"], result.answer) == ("think", 4, "5")
    assert record["difficulty"] == round(2 / 3, 4)  # three answers, the leader has one
    assert record["tokens"] == {"fast": 3, "think": 3}
