"""Tools inside real runs: a fixed plan (so the small model cannot skip the tools) whose tool
results feed a reasoning step answered by the live model."""

from __future__ import annotations

from agentflow import Agent, OpenAIModel, TaskId, TaskNode
from agentflow.registry import load_tool
from agentflow.testing import StaticPlanner
from agentflow_tools.search import LocalIndex, make_search_tool
from tests.devdata import DATA, needs


def node(node_id: str, tool: str | None, **args: object) -> TaskNode:
    if tool is None:
        return TaskNode(id=TaskId(node_id), kind="llm", args=args)
    return TaskNode(id=TaskId(node_id), kind="tool", tool=tool, args=args)


@needs("corpus/hotpotqa_dev_paragraphs.jsonl")
async def test_calculator_python_and_search_feed_a_live_reasoning_step(
    live_model: OpenAIModel,
) -> None:
    search = make_search_tool(
        LocalIndex.open([DATA / "corpus" / "hotpotqa_dev_paragraphs.jsonl"]), k=2
    )
    plan = [
        node("calc", "calculator", expression="12 + 30"),
        node("py", "run_python", code="print(sum(range(10)))"),
        node("find", "search", query="Corliss Archer"),
        node("say", None, question={"$template": "Repeat these numbers: {calc} and {py}."}),
    ]
    agent = Agent(
        model=live_model,
        planner=StaticPlanner(
            [plan], answer=lambda state: str(state.results[TaskId("say")].output)
        ),
        tools=[load_tool("calculator"), load_tool("run_python"), search],
    )
    result = await agent.run("numbers")
    nodes = result.trace.nodes
    assert nodes["calc"].output == "42"
    assert "45" in (nodes["py"].output or "")
    assert "Corliss Archer" in (nodes["find"].output or "")
    assert nodes["say"].status == "ok" and result.usage.calls == 1
    # the three tools had no inputs to wait for: they ran side by side
    starts = [nodes[n].started_at or 0.0 for n in ("calc", "py", "find")]
    ends = [nodes[n].finished_at or 0.0 for n in ("calc", "py", "find")]
    assert max(starts) < min(ends)
