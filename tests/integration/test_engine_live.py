"""The engine on the live model: independent nodes run at the same time, every planner completes
or fails as the model's failure (never the server's), and `ask --json` carries the trace.

What the model writes differs between CPU kinds (float32 on AVX2, bfloat16 on AVX-512), so these
tests check what the server and the engine must do: where the point is the executor, the plan is
given here; where the model plans, overlap is checked for the independent look-ups it did plan.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from agentflow import Agent, ExecutionError, OpenAIModel, PlanError, RunResult, TaskId, TaskNode
from agentflow.cli import main
from agentflow.exceptions import ModelOutputError
from agentflow.testing import StaticPlanner
from agentflow.trace import NodeRecord, Trace
from agentflow_tools.search import LocalIndex, make_search_tool
from tests.devdata import DATA, needs

PLANNERS = ["direct", "react", "dag", "hybrid"]
HOTPOT = "multihop/hotpotqa_dev.jsonl"
LOOKUP = re.compile(r"(r\d+)?l\d+")
"""The ids of a dag round's look-up block: independent of each other, handed over at once."""


def overlap(a: NodeRecord, b: NodeRecord) -> bool:
    assert a.started_at is not None and a.finished_at is not None, a
    assert b.started_at is not None and b.finished_at is not None, b
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def lookup_blocks(trace: Trace) -> list[list[NodeRecord]]:
    """Each round's finished look-ups, grouped by round."""
    blocks: dict[str, list[NodeRecord]] = {}
    for node in trace.nodes.values():
        match = LOOKUP.fullmatch(node.id)
        if match and node.finished_at is not None:
            blocks.setdefault(match.group(1) or "", []).append(node)
    return list(blocks.values())


def assert_lookup_blocks_overlap(trace: Trace) -> None:
    for block in lookup_blocks(trace):
        for i, a in enumerate(block):
            for b in block[i + 1 :]:
                assert overlap(a, b), f"{a.id} and {b.id} were planned together but ran apart"


def comparison_questions(count: int) -> list[str]:
    items = [json.loads(line) for line in (DATA / HOTPOT).read_text().splitlines()]
    return [i["question_text"] for i in items if i["type_derived"] == "comparison"][:count]


@pytest.fixture(scope="module")
def corpus_index() -> LocalIndex:
    return LocalIndex.open(sorted((DATA / "corpus").glob("*.jsonl")))


async def test_independent_reasoning_steps_run_at_once_on_the_live_model(
    live_model: OpenAIModel,
) -> None:
    """Two independent model calls overlap in time; the step that needs both starts after both
    (the plan is given: the point is the executor against a real server)."""
    plan = [
        TaskNode(id=TaskId("a"), kind="llm", args={"question": "Name a colour."}),
        TaskNode(id=TaskId("b"), kind="llm", args={"question": "Name a fruit."}),
        TaskNode(
            id=TaskId("c"),
            kind="llm",
            args={"question": {"$template": "Repeat: {a} and {b}."}},
        ),
    ]
    agent = Agent(model=live_model, planner=StaticPlanner([plan], answer=lambda s: "done"))
    result = await agent.run("two things")
    nodes = result.trace.nodes
    assert all(nodes[n].status == "ok" for n in "abc") and result.usage.calls == 3
    assert overlap(nodes["a"], nodes["b"])
    assert set(nodes["c"].deps) == {"a", "b"}
    inputs_done = max(nodes["a"].finished_at or 0.0, nodes["b"].finished_at or 0.0)
    assert (nodes["c"].started_at or 0.0) >= inputs_done


async def run_or_model_failure(agent: Agent, question: str) -> RunResult | Exception:
    """The run's result, or the failure, which must be the model's (an unusable plan or reply),
    never the server's or the engine's."""
    try:
        return await agent.run(question)
    except PlanError as exc:
        return exc
    except ExecutionError as exc:
        assert isinstance(exc.__cause__, ModelOutputError), repr(exc.__cause__)
        return exc


@needs(HOTPOT, "corpus/*.jsonl")
async def test_dag_lookups_planned_together_run_together(
    live_model: OpenAIModel, corpus_index: LocalIndex
) -> None:
    agent = Agent(model=live_model, planner="dag", tools=[make_search_tool(corpus_index)])
    questions = comparison_questions(3)
    outcomes = await asyncio.gather(*(run_or_model_failure(agent, q) for q in questions))
    for outcome in outcomes:
        trace = getattr(outcome, "trace", None)  # a PlanError has none
        if isinstance(trace, Trace):
            assert all(n.status in ("ok", "failed") for n in trace.nodes.values())
            assert_lookup_blocks_overlap(trace)
    assert any(isinstance(o, RunResult) for o in outcomes), outcomes


@needs(HOTPOT, "corpus/*.jsonl")
@pytest.mark.parametrize("planner", PLANNERS)
async def test_every_planner_completes_with_search(
    planner: str, live_model: OpenAIModel, corpus_index: LocalIndex
) -> None:
    agent = Agent(model=live_model, planner=planner, tools=[make_search_tool(corpus_index)])
    outcome = await run_or_model_failure(agent, comparison_questions(1)[0])
    if isinstance(outcome, RunResult):
        assert isinstance(outcome.answer, str) and outcome.usage.calls >= 1


def test_ask_json_carries_answer_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ask", "--planner", "dag", "--json", "Is Mount Everest taller than K2?"])
    printed = capsys.readouterr()
    if code != 0:  # the model wrote no usable plan or reply: said so, with the raw text
        assert printed.err.startswith("error:") and "raw" in printed.err, printed.err
        return
    result = json.loads(printed.out)
    assert isinstance(result["answer"], str)
    fields = {"id", "kind", "deps", "status", "started_at", "finished_at", "tokens", "tool"}
    assert all(fields <= set(node) for node in result["trace"]["nodes"])
    trace = Trace(question="q", planner="dag")
    for node in result["trace"]["nodes"]:
        keep = ("id", "kind", "deps", "tool", "round", "started_at", "finished_at")
        trace.nodes[node["id"]] = NodeRecord(**{k: node[k] for k in keep})
    assert_lookup_blocks_overlap(trace)


@needs("corpus/hotpotqa_dev_paragraphs.jsonl")
def test_ask_with_corpus_and_show_plan(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = DATA / "corpus" / "hotpotqa_dev_paragraphs.jsonl"
    question = "Which is older, the University of Oxford or the University of Cambridge?"
    code = main(["ask", "--planner", "dag", "--corpus", str(corpus), "--show-plan", question])
    out = capsys.readouterr()
    if code == 0:
        assert "timeline" in out.out and "plan (" in out.out
    else:
        assert out.err.startswith("error:") and "raw" in out.err, out.err
