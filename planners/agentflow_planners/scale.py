"""`scale` (SCALE, AAAI 2026): decompose, rate each step, think only where it is hard.

1. Decompose the problem in fast mode into 2-5 steps that say what to find, not how.
2.-3. Each step is an `llm` node; the allocator rates it (by default the `score` estimator, a
   short rating call that sees the problem and the earlier steps with their answers) and runs it
   in System 1 or System 2 by the threshold tau.
4. The steps run in order, each seeing every earlier step and its answer; the last one writes the
   final answer in `\\boxed{}`.

The reply scorers read is the last step's whole output, exactly as the model wrote it: a box the
model did not write is never added, and a box cut off by `max_tokens` is never closed, so a
reply that holds no answer scores nothing (an `Answer: 12` line is read by the scorers as is).
The short answer is the last box's content, else the extracted `Answer:` line or last line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from agentflow.allocation import adapter_for, last_boxed
from agentflow.answers import extract_answer
from agentflow.context import RunContext
from agentflow.exceptions import ExecutionError, ModelOutputError
from agentflow.model import ModelSettings
from agentflow.plan import LLM_KIND, TaskId, TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState
from agentflow.tool import render_output
from agentflow_planners._common import prompt

__all__ = ["ScalePlanner"]

MAX_STEPS = 5
StepText = Annotated[str, StringConstraints(max_length=300)]

LAST_STEP = (
    "This is the last step: give the final answer to the problem, written as \\boxed{answer}."
)
MIDDLE_STEP = 'Do only this step. End with its result on one line as "Answer: <result>".'


class Decomposition(BaseModel):
    steps: list[StepText] = Field(max_length=MAX_STEPS)


class ScalePlanner(Planner):
    name = "scale"
    max_rounds = 1
    default_allocation = "score"
    """What `Agent` allocates with when not told: SCALE's rating call."""
    decompose_settings = ModelSettings(temperature=0.0, max_tokens=400)
    step_settings = ModelSettings(temperature=0.0, max_tokens=512)

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        steps = await self._decompose(state, ctx)
        for index, text in enumerate(steps, start=1):
            earlier = [{"$ref": f"s{k}"} for k in range(1, index)]
            yield TaskNode(
                id=TaskId(f"s{index}"),
                kind=LLM_KIND,
                args={
                    "question": text,
                    "steps": steps[: index - 1],
                    "context": earlier,
                    "final": index == len(steps),
                },
            )

    async def _decompose(self, state: RunState, ctx: RunContext) -> list[str]:
        """The steps, decomposed in fast mode; the whole problem as one step when the model
        gives none (recorded in the trace, not hidden)."""
        messages = [
            {"role": "user", "content": prompt("scale_decompose.md", problem=state.question)}
        ]
        # Thinking off, the decomposition's own token cap kept (not the fast budget's 160).
        settings = adapter_for(ctx.model.name).quiet(self.decompose_settings)
        try:
            decomposition, _ = await ctx.complete_structured(messages, Decomposition, settings)
            steps = [s.strip() for s in decomposition.steps if s.strip()]
        except ModelOutputError as exc:
            ctx.trace.emit("plan", raw=exc.body[:500], repairs=["unparseable decomposition"])
            steps = []
        if not steps:
            steps = [state.question]
        ctx.trace.emit("plan", steps=steps)
        return steps

    async def run_llm_node(self, node: TaskNode, args: dict[str, Any], ctx: RunContext) -> str:
        done = zip(args.get("steps") or [], args.get("context") or [], strict=False)
        earlier = "\n".join(
            f"{k}. {step}\n   Result: {render_output(result, 600)}"
            for k, (step, result) in enumerate(done, start=1)
        )
        text = prompt(
            "scale_step.md",
            problem=ctx.trace.question,
            earlier=earlier or "(none yet)",
            step=str(args["question"]),
            instruction=LAST_STEP if args.get("final") else MIDDLE_STEP,
        )
        response = await ctx.complete(
            [{"role": "user", "content": text}], self.step_settings, node_id=node.id
        )
        return response.text

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        last = state.results[max(state.results, key=lambda k: int(k[1:]))]
        if not last.ok:  # no final step, no answer to score
            message = f"the final step {last.status}: {last.error}"
            raise ExecutionError(message, trace=ctx.trace) from last.exception
        reply = str(last.output).strip()
        boxed = last_boxed(reply)
        answer = extract_answer(reply) if boxed is None else boxed
        return Answer(text=answer.strip(), reply=reply)
