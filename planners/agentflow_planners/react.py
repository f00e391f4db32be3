"""`react`: the sequential baseline. One thought and one tool call per step until it finishes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agentflow.context import RunContext
from agentflow.model import ModelSettings
from agentflow.plan import TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState
from agentflow_planners._common import (
    MAX_REPLY_CHARS,
    final_answer,
    findings,
    join,
    prompt,
    step_to_node,
    summarize_if_long,
)

__all__ = ["ReactPlanner"]


class ReactPlanner(Planner):
    name = "react"
    max_rounds = 8
    """Steps before the answer is forced from what was found."""
    step_choice_settings = ModelSettings(temperature=0.0, max_tokens=200)

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        if state.final_round:
            return  # out of steps: `join` answers from the findings
        await summarize_if_long(state, ctx)
        text = prompt(
            "react_step.md",
            tools=ctx.tools.describe(),
            question=state.question,
            findings=findings(state),
        )
        schema = step_schema([*ctx.tools.names, "llm", "finish"])
        response = await ctx.complete(
            [{"role": "user", "content": text}], self.step_choice_settings, json_schema=schema
        )
        step = _parse_step(response.text)
        if step["tool"] == "finish":
            state.notes["answer"] = final_answer(step["input"])
            return
        yield step_to_node(f"s{state.round + 1}", step["tool"], step["input"], ctx.tools)

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        written: Answer | None = state.notes.get("answer")
        if written is not None:
            return written
        if state.final_round:
            answer = await join(state, ctx, allow_replan=False)
            assert isinstance(answer, Answer)
            return answer
        return Continue()


def step_schema(tools: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "thought": {"type": "string", "maxLength": 300},
            "tool": {"type": "string", "enum": tools},
            "input": {"type": "string", "maxLength": MAX_REPLY_CHARS},
        },
        "required": ["thought", "tool", "input"],
        "additionalProperties": False,
    }


def _parse_step(text: str) -> dict[str, str]:
    """The step the model chose; off-schema output (a model without constrained decoding)
    becomes a final answer made of the text itself rather than an error."""
    try:
        data = json.loads(text)
        return {"tool": str(data["tool"]), "input": str(data["input"])}
    except (ValueError, KeyError, TypeError):
        return {"tool": "finish", "input": text}
