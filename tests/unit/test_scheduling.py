"""Critical-path priorities: the lengths the executor computes and the priority each call sees."""

from __future__ import annotations

from typing import Any

from agentflow import Agent, TaskId, TaskNode
from agentflow.model import ModelSettings
from agentflow.scheduling import PLANNER, RemainingPaths, current_priority, node_priority
from agentflow.testing import FunctionModel, StaticPlanner


def test_a_chain_counts_every_node_still_to_run() -> None:
    paths = RemainingPaths()
    paths.add("a", [])
    paths.add("b", ["a"])
    paths.add("c", ["b"])
    assert [paths.length(n) for n in "abc"] == [3, 2, 1]


def test_the_longest_branch_wins_at_a_fork() -> None:
    paths = RemainingPaths()
    for node, deps in [("r", []), ("short", ["r"]), ("x", ["r"]), ("y", ["x"]), ("z", ["y"])]:
        paths.add(node, deps)
    assert paths.length("r") == 4  # r -> x -> y -> z, not r -> short
    assert paths.length("short") == 1


def test_a_node_planned_later_lengthens_the_path_of_what_it_needs() -> None:
    paths = RemainingPaths()
    paths.add("l1", [])
    assert paths.length("l1") == 1
    paths.add("s1", ["l1"])  # the plan streams on: the memo must not keep the old answer
    assert paths.length("l1") == 2


def test_a_deep_chain_and_a_cycle_both_end() -> None:
    paths = RemainingPaths()
    paths.add("n0", [])
    for i in range(1, 3000):
        paths.add(f"n{i}", [f"n{i - 1}"])
    assert paths.length("n0") == 3000
    cyclic = RemainingPaths()
    cyclic.add("a", ["b"])
    cyclic.add("b", ["a"])
    assert cyclic.length("a") == 2


def test_longer_remaining_paths_are_served_first() -> None:
    assert node_priority(5) < node_priority(2) < node_priority(1)
    assert PLANNER < node_priority(10_000)


def llm(node_id: str, **refs: str) -> TaskNode:
    args: dict[str, Any] = {"question": f"step {node_id}"}
    if refs:
        args["context"] = [{"$ref": r} for r in refs.values()]
    return TaskNode(id=TaskId(node_id), kind="llm", args=args)


async def test_each_model_call_carries_its_nodes_priority_and_the_rest_the_planners() -> None:
    seen: dict[str, int] = {}

    def reply(messages: Any, settings: ModelSettings, schema: Any) -> str:
        text = str(messages[-1]["content"])
        step = next(w for w in ("l1", "s1", "s2", "x") if f"step {w}\n" in text + "\n")
        seen[step] = current_priority()
        return f"Answer: {step}"

    # l1 -> s1 -> s2 is the critical path; x is a leaf beside it.
    plan = [llm("l1"), llm("x"), llm("s1", a="l1"), llm("s2", a="s1")]
    agent = Agent(model=FunctionModel(reply), planner=StaticPlanner([plan]))
    result = await agent.run("q")
    assert all(record.status == "ok" for record in result.trace.nodes.values())
    assert seen["l1"] < seen["s1"] < seen["s2"] == seen["x"]
    assert seen["l1"] == node_priority(3)
    assert current_priority() == PLANNER  # a node's priority never leaks out of its task
