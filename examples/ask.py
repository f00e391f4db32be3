"""Answer a question with the DAG planner and print the answer and what it cost.

    python examples/ask.py "Which was founded first, Oxford or Cambridge?"

Uses AGENTFLOW_BASE_URL / AGENTFLOW_MODEL, or the embedded model (`agentflow model up`).
"""

from __future__ import annotations

import sys

from agentflow import Agent, Model, OpenAIModel
from agentflow.settings import Settings


def main(question: str, model: Model | None = None) -> str:
    if model is None:
        settings = Settings.from_env()
        model = OpenAIModel(settings.model, settings.base_url)
    result = Agent(model=model, planner="dag").run_sync(question)
    print(result.answer)
    print(f"{result.usage.calls} model calls, {result.usage.total_tokens} tokens")
    return result.answer


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "Which was founded first, Oxford or Cambridge?")
