"""`RemainingPaths` forgets only what a new node changes: every length it answers while a plan
streams in equals the length a fresh walk of the plan so far gives."""

from __future__ import annotations

import random

from agentflow.scheduling import RemainingPaths


def fresh_length(edges: dict[str, list[str]], node: str) -> int:
    """The longest chain of dependents from `node`, itself included, by brute force."""
    return 1 + max((fresh_length(edges, d) for d in edges.get(node, [])), default=0)


def test_lengths_asked_while_a_plan_streams_in_match_a_fresh_walk() -> None:
    rng = random.Random(7)
    for _ in range(20):
        paths = RemainingPaths()
        dependents: dict[str, list[str]] = {}
        nodes: list[str] = []
        for index in range(60):
            node = f"n{index}"
            deps = rng.sample(nodes, k=min(len(nodes), rng.randint(0, 3)))
            paths.add(node, deps)
            dependents.setdefault(node, [])
            for dep in deps:
                dependents[dep].append(node)
            nodes.append(node)
            for asked in rng.sample(nodes, k=min(len(nodes), 5)):  # memoise some, then add more
                assert paths.length(asked) == fresh_length(dependents, asked)


def test_a_dependency_named_before_it_is_planned_is_counted_when_it_arrives() -> None:
    paths = RemainingPaths()
    paths.add("late_user", ["early"])  # a forward reference: "early" is planned next
    assert paths.length("late_user") == 1
    paths.add("early", ["root"])
    paths.add("root", [])
    assert [paths.length(n) for n in ("root", "early", "late_user")] == [3, 2, 1]
