"""The `scale` planner: fast decomposition, a rating per step, steps in order, a boxed answer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agentflow import Agent, ExecutionError, ModelSettings
from agentflow.allocation._adapters import STEP_BY_STEP, TERSE
from agentflow.model import Message
from agentflow.testing import FunctionModel


def _model(step_replies: list[str], ratings: list[float], log: list[str]) -> FunctionModel:
    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        text = str(messages[-1]["content"])
        if schema is not None and "difficulty" in schema["properties"]:
            log.append(f"rate: {text.split('Step to rate:')[1].split()[0]}")
            return json.dumps({"difficulty": ratings.pop(0)})
        if schema is not None:
            log.append("decompose")
            return json.dumps({"steps": ["Find x.", "Double x."]})
        mode = {TERSE: "fast", STEP_BY_STEP: "think"}[str(messages[0]["content"])]
        log.append(f"{mode}: {text.split('Current step: ')[1].splitlines()[0]}")
        return step_replies.pop(0)

    return FunctionModel(reply, name="SmolLM2-135M-Instruct")


async def test_steps_run_in_order_each_in_the_mode_its_rating_gives() -> None:
    log: list[str] = []
    model = _model(["x is 3.\nAnswer: 3", "Double 3: \\boxed{6}"], [0.1, 0.9], log)
    result = await Agent(model=model, planner="scale").run("x is 3. What is 2x?")
    assert log == ["decompose", "rate: Find", "fast: Find x.", "rate: Double", "think: Double x."]
    assert (result.answer, result.reply) == ("6", "Double 3: \\boxed{6}")
    modes = {n.id: (n.allocation or {}).get("mode") for n in result.trace.nodes.values()}
    assert modes == {"s1": "fast", "s2": "think"}
    second = model.calls[-1][-1]["content"]
    assert "1. Find x.\n   Result: x is 3.\nAnswer: 3" in str(second)  # earlier answers seen


async def test_an_unboxed_final_answer_is_left_as_the_model_wrote_it() -> None:
    log: list[str] = []
    model = _model(["Answer: 3", "Answer: 6"], [0.1, 0.1], log)
    result = await Agent(model=model, planner="scale").run("x is 3. What is 2x?")
    assert (result.answer, result.reply) == ("6", "Answer: 6")  # no box manufactured


async def test_allocation_off_runs_the_steps_unrated() -> None:
    log: list[str] = []

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        log.append("decompose" if schema else "step")
        return '{"steps": []}' if schema else "\\boxed{4}"

    agent = Agent(model=FunctionModel(reply), planner="scale", allocation="off")
    result = await agent.run("2+2?")
    assert log == ["decompose", "step"]  # no steps given: the problem is the one step
    assert result.answer == "4"


async def test_a_failed_final_step_is_an_error_not_an_answer() -> None:
    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        if schema:
            return '{"steps": ["All of it."]}'
        raise ValueError("boom")

    agent = Agent(model=FunctionModel(reply), planner="scale", allocation="off")
    with pytest.raises(ExecutionError, match="the final step failed"):
        await agent.run("2+2?")
