"""`react`: the sequential baseline. One thought and one tool call per step until it finishes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from agentflow.context import RunContext
from agentflow.exceptions import ModelOutputError
from agentflow.model import Message, ModelSettings
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


class Step(BaseModel):
    """One ReAct step as the model writes it (`step_schema` narrows `tool` to the run's tools)."""

    thought: str = ""
    tool: str
    input: str


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
        step = await self._choose_step([{"role": "user", "content": text}], ctx)
        if step.tool == "finish":
            state.notes["answer"] = final_answer(step.input)
            return
        yield step_to_node(f"s{state.round + 1}", step.tool, step.input, ctx.tools)

    async def _choose_step(self, messages: list[Message], ctx: RunContext) -> Step:
        """The model's next step. A reply cut off or looping inside its JSON is salvaged or asked
        again (`RunContext.complete_structured`), and if still unusable is the model's failure,
        never an answer; a reply that is not JSON at all (a server without structured outputs)
        is taken as the final answer, as such a model writes one."""
        schema = step_schema([*ctx.tools.names, "llm", "finish"])
        try:
            step, _ = await ctx.complete_structured(
                messages, Step, self.step_choice_settings, json_schema=schema
            )
        except ModelOutputError as exc:
            if _attempted_json(exc.body):
                raise
            return Step(tool="finish", input=exc.body)
        return step

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


def _attempted_json(text: str) -> bool:
    """The reply set out to be the JSON step (perhaps in a code fence), whatever became of it."""
    return text.strip().removeprefix("```json").removeprefix("```").lstrip().startswith("{")
