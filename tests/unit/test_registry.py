import pytest

from agentflow.exceptions import UserError
from agentflow.registry import load_planner, load_tool, planner_names, tool_names


def test_shipped_planners_and_tools_are_registered() -> None:
    assert planner_names() == ["dag", "direct", "hybrid", "react", "scale"]
    assert {"calculator", "fetch_page", "run_python"} <= set(tool_names())
    assert load_planner("dag").name == "dag"
    assert load_tool("calculator").name == "calculator"


@pytest.mark.parametrize(("loader", "what"), [(load_planner, "planner"), (load_tool, "tool")])
def test_unknown_names_list_the_known_ones(loader: object, what: str) -> None:
    with pytest.raises(UserError, match=f"unknown {what} 'nope'; available: "):
        loader("nope")  # type: ignore[operator]
