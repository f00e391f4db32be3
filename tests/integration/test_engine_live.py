"""The engine on the live model: plans become DAGs whose branches run at the same time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentflow import Agent, OpenAIModel
from agentflow.cli import main
from agentflow.trace import NodeRecord
from agentflow_tools.search import LocalIndex, make_search_tool

DATA = Path(__file__).parents[2].parent / "shared" / "data"
PLANNERS = ["direct", "react", "dag", "hybrid"]


def overlapping(nodes: list[NodeRecord]) -> bool:
    done = [n for n in nodes if n.started_at is not None and n.finished_at is not None]
    return any(
        a.started_at < b.finished_at and b.started_at < a.finished_at  # type: ignore[operator]
        for i, a in enumerate(done)
        for b in done[i + 1 :]
    )


def comparison_questions(count: int) -> list[str]:
    lines = (DATA / "multihop" / "hotpotqa_dev.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    return [i["question_text"] for i in items if i["type_derived"] == "comparison"][:count]


@pytest.fixture(scope="module")
def corpus_index() -> LocalIndex:
    return LocalIndex.open(sorted((DATA / "corpus").glob("*.jsonl")))


async def test_dag_lookups_for_a_hotpotqa_comparison_overlap(
    live_model: OpenAIModel, corpus_index: LocalIndex
) -> None:
    agent = Agent(model=live_model, planner="dag", tools=[make_search_tool(corpus_index)])
    results = await asyncio.gather(*(agent.run(q) for q in comparison_questions(3)))
    for result in results:
        assert all(n.status in ("ok", "failed") for n in result.trace.nodes.values())
        assert result.usage.calls >= 2  # a plan and a join at least
    searches = [[n for n in r.trace.nodes.values() if n.tool == "search"] for r in results]
    # A small model does not always plan two look-ups; when it does, they must run together.
    assert any(overlapping(nodes) for nodes in searches)


@pytest.mark.parametrize("planner", PLANNERS)
async def test_every_planner_answers_with_search(
    planner: str, live_model: OpenAIModel, corpus_index: LocalIndex
) -> None:
    agent = Agent(model=live_model, planner=planner, tools=[make_search_tool(corpus_index)])
    result = await agent.run(comparison_questions(1)[0])
    assert isinstance(result.answer, str)
    assert result.usage.calls >= 1  # hybrid and react may answer before searching


def test_done_when_dag_ask_json_has_overlapping_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    # SmolLM2 plans this comparison as two look-ups at temperature 0 (in float32, the AVX2
    # profile; the Oxford/Cambridge question it split in bfloat16 it now plans as one).
    question = "Is Mount Everest taller than K2?"
    assert main(["ask", "--planner", "dag", "--json", question]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"]
    nodes = result["trace"]["nodes"]
    for node in nodes:
        assert {
            "id",
            "kind",
            "deps",
            "status",
            "started_at",
            "finished_at",
            "tokens",
            "tool",
        } <= set(node)
    records = [
        NodeRecord(
            **{
                k: n[k]
                for k in ("id", "kind", "deps", "tool", "round", "started_at", "finished_at")
            }
        )
        for n in nodes
    ]
    assert overlapping(records)


def test_ask_with_corpus_and_show_plan(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = DATA / "corpus" / "hotpotqa_dev_paragraphs.jsonl"
    question = comparison_questions(1)[0]
    assert main(["ask", "--planner", "dag", "--corpus", str(corpus), "--show-plan", question]) == 0
    out = capsys.readouterr().out
    assert "timeline" in out and "plan (" in out
