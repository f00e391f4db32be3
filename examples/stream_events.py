"""Watch a run as it happens: `run_stream` yields trace events, then the result.

python examples/stream_events.py
"""

from __future__ import annotations

import asyncio
import contextlib

from agentflow import Agent, Model, OpenAIModel, RunResult
from agentflow.settings import Settings


async def watch(model: Model, question: str) -> RunResult:
    agent = Agent(model=model, planner="dag")
    try:
        async with contextlib.aclosing(agent.run_stream(question)) as stream:
            async for item in stream:
                if isinstance(item, RunResult):
                    print("answer:", item.answer)
                    return item
                print(f"{item.at:6.2f}s  {item.type:<9} {item.node_id or ''}")
    finally:
        await model.aclose()
    raise RuntimeError("the stream ended without a result")


def main(model: Model | None = None) -> str:
    if model is None:
        settings = Settings.from_env()
        model = OpenAIModel(settings.model, settings.base_url)
    return asyncio.run(
        watch(model, "Who is older, the Eiffel Tower or the Statue of Liberty?")
    ).answer


if __name__ == "__main__":
    main()
