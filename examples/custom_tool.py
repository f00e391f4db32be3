"""Give the agent a tool of your own: a typed, docstringed function becomes a tool with `@tool`.

python examples/custom_tool.py
"""

from __future__ import annotations

from agentflow import Agent, Model, OpenAIModel, tool
from agentflow.settings import Settings

POPULATION_MILLIONS = {"france": 68.4, "germany": 84.5, "spain": 48.6, "italy": 58.9}


@tool(timeout=5.0)
def population(country: str) -> str:
    """Population of a European country, in millions."""
    key = country.strip().lower()
    if key not in POPULATION_MILLIONS:
        return f"unknown country {country!r}; known: {', '.join(POPULATION_MILLIONS)}"
    return f"{country}: {POPULATION_MILLIONS[key]} million people"


def main(model: Model | None = None) -> str:
    if model is None:
        settings = Settings.from_env()
        model = OpenAIModel(settings.model, settings.base_url)
    agent = Agent(model=model, planner="dag", tools=[population])
    result = agent.run_sync("Which has more people, France or Germany?")
    print(result.trace.render())
    print("answer:", result.answer)
    return result.answer


if __name__ == "__main__":
    main()
