"""Write your own strategy by subclassing `Planner`: here, ask the same question three ways at
once and let the joiner pick the answer most of them agree on.

    python examples/custom_planner.py
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

from agentflow import (
    Agent,
    Answer,
    Continue,
    Model,
    OpenAIModel,
    Planner,
    Replan,
    RunContext,
    RunState,
    TaskId,
    TaskNode,
)
from agentflow.settings import Settings

PHRASINGS = ["{q}", "Answer briefly: {q}", "Think about it, then answer: {q}"]


class VotePlanner(Planner):
    name = "vote"
    max_rounds = 1

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        for index, phrasing in enumerate(PHRASINGS, start=1):
            question = phrasing.format(q=state.question)
            yield TaskNode(id=TaskId(f"v{index}"), kind="llm", args={"question": question})

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        answers = [str(r.output).strip() for r in state.results.values() if r.ok]
        if not answers:
            return Answer(text="(every branch failed)")
        return Answer(text=Counter(answers).most_common(1)[0][0])


def main(model: Model | None = None) -> str:
    if model is None:
        settings = Settings.from_env()
        model = OpenAIModel(settings.model, settings.base_url)
    result = Agent(model=model, planner=VotePlanner()).run_sync("What is the capital of Italy?")
    print(result.trace.render())
    print("answer:", result.answer)
    return result.answer


if __name__ == "__main__":
    main()
