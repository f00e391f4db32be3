"""`hybrid` (HybridDeepSearcher style): rounds of parallel queries, each round seeing the last.

A round is one model call that writes up to `max_queries` independent queries (run at once) or
the answer. Successive rounds are the sequential part. Repeated queries cost nothing: the
executor never reruns a finished node, and the same query is merged by the plan builder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from agentflow.context import RunContext
from agentflow.model import ModelSettings
from agentflow.plan import PlanBuilder, PlanLimits, TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState
from agentflow_planners._common import (
    AnswerText,
    final_answer,
    findings,
    join,
    lookup_tool,
    prompt,
    step_to_node,
    summarize_if_long,
)

__all__ = ["HybridPlanner"]


Query = Annotated[str, StringConstraints(max_length=200)]


class Round(BaseModel):
    # Length caps are part of the schema vLLM enforces: a model stuck repeating itself is
    # cut off inside a string and the JSON still closes.
    queries: list[Query] = Field(max_length=5)
    answer: AnswerText


class HybridPlanner(Planner):
    name = "hybrid"
    max_rounds = 4
    max_queries = 4
    round_settings = ModelSettings(temperature=0.0, max_tokens=300)

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        if state.final_round:
            return
        await summarize_if_long(state, ctx)
        text = prompt(
            "hybrid_round.md",
            question=state.question,
            findings=findings(state),
            max_queries=str(self.max_queries),
        )
        decision, _ = await ctx.complete_structured(
            [{"role": "user", "content": text}], Round, self.round_settings
        )
        queries = [q.strip() for q in decision.queries if q.strip()][: self.max_queries]
        if not queries or (decision.answer.strip() and state.round > 0):
            state.notes["answer"] = final_answer(decision.answer)
            return
        tool = lookup_tool(ctx)
        builder = PlanBuilder(
            tools=ctx.tools.names,
            limits=PlanLimits(max_nodes=self.max_queries),
            known=state.results,
        )
        asked: set[str] = state.notes.setdefault("asked", set())
        for index, query in enumerate(queries, start=1):
            key = " ".join(query.lower().split())
            if key in asked:
                continue  # the answer is already among the findings
            asked.add(key)
            node = builder.add(step_to_node(f"r{state.round + 1}q{index}", tool, query, ctx.tools))
            if node is not None:
                yield node

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        written: Answer | None = state.notes.get("answer")
        if written is not None and written.text:
            return written
        if state.final_round or written is not None:
            answer = await join(state, ctx, allow_replan=False)
            assert isinstance(answer, Answer)
            return answer
        return Continue()
