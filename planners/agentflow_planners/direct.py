"""`direct`: no tools, one chain-of-thought call. The baseline every other planner must beat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agentflow.answers import extract_answer
from agentflow.context import RunContext
from agentflow.exceptions import ExecutionError
from agentflow.model import ModelSettings
from agentflow.plan import LLM_KIND, TaskId, TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState, load_prompt

__all__ = ["DirectPlanner"]


class DirectPlanner(Planner):
    name = "direct"
    max_rounds = 1
    step_settings = ModelSettings(temperature=0.0, max_tokens=512)

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        yield TaskNode(id=TaskId("answer"), kind=LLM_KIND, args={"question": state.question})

    async def run_llm_node(self, node: TaskNode, args: dict[str, Any], ctx: RunContext) -> str:
        prompt = load_prompt("agentflow_planners", "direct.md").format(question=args["question"])
        response = await ctx.complete(
            [{"role": "user", "content": prompt}], self.step_settings, node_id=node.id
        )
        return response.text

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        result = state.results[TaskId("answer")]
        if not result.ok:  # a failure is an error, never an answer to score
            message = f"the answer step {result.status}: {result.error}"
            raise ExecutionError(message, trace=ctx.trace) from result.exception
        reply = str(result.output)
        return Answer(text=extract_answer(reply), reply=reply)
