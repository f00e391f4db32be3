from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.exceptions import PlanError
from agentflow.plan import (
    PlanBuilder,
    PlanLimits,
    TaskId,
    TaskNode,
    find_refs,
    resolve_args,
    validate_plan,
)

TOOLS = {"search", "calc"}


def node(node_id: str, *refs: str, tool: str = "search", text: str | None = None) -> TaskNode:
    query = text if text is not None else node_id
    args = {"query": {"$template": query + " " + " ".join("{" + r + "}" for r in refs)}}
    return TaskNode(id=TaskId(node_id), kind="tool", tool=tool, args=args)


def test_deps_come_from_references() -> None:
    n = TaskNode(
        id=TaskId("n3"),
        kind="llm",
        args={"question": {"$template": "compare {n1} and {n2}"}, "x": [{"$ref": "n4.title"}]},
    )
    assert n.deps == {"n1", "n2", "n4"}


def test_resolve_args_keeps_structure() -> None:
    outputs = {TaskId("n1"): {"title": "Oxford", "year": 1096}, TaskId("n2"): "1209"}
    args = {"a": {"$ref": "n1"}, "b": {"$ref": "n1.year"}, "c": {"$template": "in {n2}!"}}
    assert resolve_args(args, outputs) == {
        "a": {"title": "Oxford", "year": 1096},
        "b": 1096,
        "c": "in 1209!",
    }


def test_search_hits_in_a_template_read_as_one_line_each() -> None:
    hits = [{"id": "d1", "title": "Danube", "text": "The Danube is long.", "score": 3.2}]
    outputs = {TaskId("l1"): hits, TaskId("n2"): {"year": 1096}}
    args = {"q": {"$template": "Compare {l1} with {n2}"}, "raw": {"$ref": "l1"}}
    assert resolve_args(args, outputs) == {
        "q": 'Compare [Danube] The Danube is long. with {"year": 1096}',
        "raw": hits,  # a reference hands the value itself to a tool
    }


def test_a_prompt_naming_a_node_twice_gets_its_output_once() -> None:
    outputs = {TaskId("l1"): "Oxford 1096", TaskId("l3"): "Cambridge 1209"}
    prompt = {"$template": "Which is older? {l1} {l3} {l3} {l3}"}
    fenced = resolve_args(prompt, outputs, fence=True)
    assert fenced.count("Cambridge 1209") == 1
    assert fenced.count("[result l3 above]") == 2
    assert fenced.index('<result id="l3">') < fenced.index("[result l3 above]")
    # a tool input takes each output where it is named: a query may mean the repeat
    assert resolve_args({"$template": "{l3} {l3}"}, outputs) == "Cambridge 1209 Cambridge 1209"


def test_cycle_is_broken_at_the_back_edge() -> None:
    plan = validate_plan([node("a", "c"), node("b", "a"), node("c", "b")], tools=TOOLS)
    assert [n.id for n in plan.nodes] == ["a", "b", "c"]
    deps = {n.id: n.deps for n in plan.nodes}
    assert deps == {"a": frozenset(), "b": {"a"}, "c": {"b"}}
    assert any("cycle" in r for r in plan.repairs)


def test_forward_references_are_fine_and_reordered() -> None:
    plan = validate_plan([node("join", "x", "y"), node("x"), node("y")], tools=TOOLS)
    assert [n.id for n in plan.nodes] == ["x", "y", "join"]
    assert plan.repairs == ()


def test_dangling_and_self_references_are_dropped() -> None:
    plan = validate_plan([node("a", "a", "ghost")], tools=TOOLS)
    (a,) = plan.nodes
    assert a.deps == frozenset()
    assert "ghost" in plan.repairs[0]


def test_duplicate_sub_questions_are_merged_and_references_follow() -> None:
    plan = validate_plan(
        [node("a", text="Oxford founded"), node("b", text="oxford   FOUNDED"), node("c", "b")],
        tools=TOOLS,
    )
    assert [n.id for n in plan.nodes] == ["a", "c"]
    assert plan.nodes[1].deps == {"a"}


def test_unknown_tool_becomes_a_reasoning_step() -> None:
    plan = validate_plan([node("a", tool="teleport")], tools=TOOLS)
    assert plan.nodes[0].kind == "llm" and plan.nodes[0].tool is None


def test_ten_thousand_nodes_are_capped_quickly() -> None:
    nodes = [node(f"n{i}", f"n{i - 1}" if i else "n0") for i in range(10_000)]
    plan = validate_plan(nodes, tools=TOOLS, limits=PlanLimits(max_nodes=50, max_depth=100))
    assert len(plan.nodes) == 50


def test_too_deep_nodes_are_dropped() -> None:
    chain = [node("n0")] + [node(f"n{i}", f"n{i - 1}") for i in range(1, 10)]
    plan = validate_plan(chain, tools=TOOLS, limits=PlanLimits(max_depth=4))
    assert [n.id for n in plan.nodes] == ["n0", "n1", "n2", "n3"]


def test_empty_plan_is_a_plan_error_with_the_raw_text() -> None:
    with pytest.raises(PlanError) as caught:
        validate_plan([], tools=TOOLS, raw="I cannot plan this")
    assert caught.value.raw == "I cannot plan this"
    assert "I cannot plan this" in str(caught.value)


def test_builder_accepts_references_to_earlier_rounds() -> None:
    builder = PlanBuilder(tools=TOOLS, known=[TaskId("old")])
    added = builder.add(node("new", "old"))
    assert added is not None and added.deps == {"old"}


def test_builder_merges_a_repeat_of_a_finished_node_and_points_its_users_at_it() -> None:
    done = TaskNode(id=TaskId("l1"), kind="tool", tool="search", args={"query": "Oxford founded"})
    builder = PlanBuilder(tools=TOOLS, known=[done.id], finished=[done])
    repeat = TaskNode(
        id=TaskId("r1l1"), kind="tool", tool="search", args={"query": "oxford  FOUNDED"}
    )
    assert builder.add(repeat) is None
    user = builder.add(node("r1s1", "r1l1"))
    assert user is not None and user.deps == {"l1"}
    assert builder.repairs == ["merged r1l1 into its duplicate l1"]


def test_renders_as_json_and_mermaid() -> None:
    plan = validate_plan([node("a"), node("b"), node("c", "a", "b", tool="calc")], tools=TOOLS)
    assert plan.to_json()["nodes"][2]["deps"] == ["a", "b"]
    mermaid = plan.to_mermaid()
    assert mermaid.startswith("flowchart LR")
    assert "a --> c" in mermaid and "b --> c" in mermaid


ids = st.sampled_from([f"n{i}" for i in range(12)])
random_nodes = st.lists(
    st.builds(
        lambda i, refs, tool, text: node(i, *refs, tool=tool, text=text),
        ids,
        st.lists(st.one_of(ids, st.just("ghost")), max_size=4),
        st.sampled_from(["search", "calc", "unknown"]),
        st.sampled_from(["q1", "q2", "q3", "Q1"]),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(random_nodes, st.integers(1, 20), st.integers(1, 8))
def test_any_plan_is_repaired_into_a_valid_dag_or_rejected(
    nodes: list[TaskNode], max_nodes: int, max_depth: int
) -> None:
    limits = PlanLimits(max_nodes=max_nodes, max_depth=max_depth)
    try:
        plan = validate_plan(nodes, tools=TOOLS, limits=limits)
    except PlanError:
        assert not nodes  # the first node of a non-empty plan is always usable
        return
    plan_ids = [n.id for n in plan.nodes]
    assert len(plan_ids) == len(set(plan_ids)) <= max_nodes
    position = {node_id: i for i, node_id in enumerate(plan_ids)}
    for n in plan.nodes:
        assert n.kind == "llm" or n.tool in TOOLS
        assert n.deps == find_refs(n.args)
        # Every reference exists and points backwards: the order is a topological order.
        assert all(d in position and position[d] < position[n.id] for d in n.deps)
    graph = plan.graph()
    assert nx.is_directed_acyclic_graph(graph)
    assert nx.dag_longest_path_length(graph) + 1 <= max_depth
