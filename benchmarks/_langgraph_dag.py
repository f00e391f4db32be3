"""The benchmark's DAGs as LangGraph `StateGraph`s, written the way LangGraph's docs show.

Each DAG node is a graph node whose outputs land in one state key through a dict-merge reducer
(parallel branches may write in the same step). Dependencies are static edges: a node with one
input gets `add_edge(dep, node)`, a node with several gets the waiting edge
`add_edge([dep1, dep2, ...], node)`, which runs it once, after all of them. The wide fan-out is
the map-reduce idiom instead: the root returns one `Send("leaf", ...)` per leaf, and the join
follows the leaf node. langgraph is not a project dependency, hence the import ignores (mypy
checks this file fully wherever langgraph is installed).
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Protocol, TypedDict

from langgraph.graph import START, StateGraph  # type: ignore[import-not-found, unused-ignore]
from langgraph.types import Send  # type: ignore[import-not-found, unused-ignore]

Ask = Callable[[str, list[str]], Awaitable[str]]
"""Makes one node's request: `ask(node_id, context outputs)` -> the node's output."""

Update = dict[str, dict[str, str]]


class State(TypedDict):
    results: Annotated[dict[str, str], operator.or_]
    """Node id -> output; every node adds its own entry."""


class LeafPacket(TypedDict):
    node_id: str
    context: list[str]


class Step(Protocol):
    """A graph node; LangGraph matches node functions by their parameter name, `state`."""

    def __call__(self, state: State) -> Awaitable[Update]: ...


def static_graph(deps: Mapping[str, Sequence[str]], ask: Ask) -> Any:
    """A compiled graph with one node per DAG node and one edge (or waiting edge) per input."""
    builder = StateGraph(State)
    for node_id, inputs in deps.items():
        builder.add_node(node_id, _step(node_id, inputs, ask))
    for node_id, inputs in deps.items():
        if not inputs:
            builder.add_edge(START, node_id)
        elif len(inputs) == 1:
            builder.add_edge(inputs[0], node_id)
        else:
            builder.add_edge(list(inputs), node_id)
    return builder.compile()


def fan_out_graph(root: str, leaves: Sequence[str], join: str, ask: Ask) -> Any:
    """root -> `Send` to one leaf node per leaf -> join: LangGraph's map-reduce idiom."""

    async def leaf(state: LeafPacket) -> Update:
        return {"results": {state["node_id"]: await ask(state["node_id"], state["context"])}}

    def fan_out(state: State) -> list[Any]:
        context = [state["results"][root]]
        return [Send("leaf", {"node_id": name, "context": context}) for name in leaves]

    builder = StateGraph(State)
    builder.add_node(root, _step(root, (), ask))
    builder.add_node("leaf", leaf)
    builder.add_node(join, _step(join, leaves, ask))
    builder.add_edge(START, root)
    builder.add_conditional_edges(root, fan_out, ["leaf"])
    builder.add_edge("leaf", join)
    return builder.compile()


async def run_graph(graph: Any, nodes: int) -> dict[str, str]:
    """Run a compiled graph from an empty state; the node outputs it ends with."""
    # One superstep per level: the default recursion limit (25) would stop a 64-node chain.
    final = await graph.ainvoke({"results": {}}, {"recursion_limit": nodes + 10})
    results: dict[str, str] = final["results"]
    return results


def _step(node_id: str, inputs: Sequence[str], ask: Ask) -> Step:
    async def step(state: State) -> Update:
        context = [state["results"][name] for name in inputs]
        return {"results": {node_id: await ask(node_id, context)}}

    return step
