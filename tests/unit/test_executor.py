"""Scheduling, failure and cancellation, asserted through events and barriers, never sleeps.

Every wait that could hang if the executor were wrong is bounded by `asyncio.timeout`, so a
scheduling bug fails the test instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow import Agent, ExecutionError, LimitExceededError, RunLimits, TaskId, TaskNode
from agentflow.context import RunContext
from agentflow.exceptions import ModelConnectionError
from agentflow.planner import Answer, Continue, Planner, Replan, RunState
from agentflow.testing import FunctionModel, ScriptedModel, StaticPlanner
from agentflow.tool import Tool, tool

GUARD = 5.0  # seconds; only reached when the executor is broken


def call(node_id: str, tool_name: str, value: Any = "", **refs: str) -> TaskNode:
    args: dict[str, Any] = {"x": value}
    args.update({k: {"$ref": v} for k, v in refs.items()})
    return TaskNode(id=TaskId(node_id), kind="tool", tool=tool_name, args=args)


def events(result_trace: Any, kind: str) -> list[str]:
    return [e.node_id for e in result_trace.events if e.type == kind]


def agent_for(planner: Planner, *tools: Tool, **options: Any) -> Agent:
    return Agent(model=ScriptedModel([]), planner=planner, tools=tools, **options)


async def test_independent_branches_run_at_the_same_time() -> None:
    both_started = asyncio.Barrier(2)

    @tool
    async def lookup(x: str) -> str:
        """Waits until its sibling has started too: only finishes if both run at once."""
        async with asyncio.timeout(GUARD):
            await both_started.wait()
        return x.upper()

    planner = StaticPlanner([[call("a", "lookup", "oxford"), call("b", "lookup", "cambridge")]])
    result = await agent_for(planner, lookup).run("q")
    records = result.trace.nodes
    assert records["a"].status == records["b"].status == "ok"
    assert records["a"].started_at < records["b"].finished_at  # type: ignore[operator]
    assert records["b"].started_at < records["a"].finished_at  # type: ignore[operator]


async def test_a_node_starts_only_after_its_inputs_finish() -> None:
    @tool
    async def echo(x: str, y: str = "") -> str:
        """Echo."""
        return f"{x}{y}"

    nodes = [call("a", "echo", "1"), call("b", "echo", "2", y="a"), call("c", "echo", "3", y="b")]
    result = await agent_for(StaticPlanner([nodes]), echo).run("q")
    order = [(e.type, e.node_id) for e in result.trace.events if e.type in ("started", "finished")]
    assert order.index(("finished", "a")) < order.index(("started", "b"))
    assert order.index(("finished", "b")) < order.index(("started", "c"))
    assert result.trace.nodes["c"].output == "321"  # 3 + (2 + 1)


async def test_nodes_start_while_the_plan_is_still_streaming() -> None:
    first_ran = asyncio.Event()

    @tool
    async def mark(x: str) -> str:
        """Marks that it ran."""
        first_ran.set()
        return x

    class SlowPlanner(StaticPlanner):
        async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
            yield call("a", "mark", "first")
            async with asyncio.timeout(GUARD):  # the plan goes on only once "a" has run
                await first_ran.wait()
            yield call("b", "mark", "second")

    result = await agent_for(SlowPlanner([[]]), mark).run("q")
    assert result.trace.nodes["b"].status == "ok"


async def test_a_failing_tool_is_data_for_the_joiner_and_the_run_goes_on() -> None:
    @tool
    def explode(x: str) -> str:
        """Always fails."""
        raise ValueError("the index is on fire")

    @tool
    def fine(x: str) -> str:
        """Works."""
        return "ok"

    seen: list[str] = []

    def answer(state: RunState) -> str:
        seen.append(state.transcript())
        return "done"

    planner = StaticPlanner(
        [[call("a", "explode"), call("b", "fine"), call("c", "fine", "z", y="a")]], answer=answer
    )
    result = await agent_for(planner, explode, fine, node_timeout=5).run("q")
    nodes = result.trace.nodes
    assert nodes["a"].status == "failed" and "the index is on fire" in (nodes["a"].error or "")
    assert nodes["b"].status == "ok"
    assert nodes["c"].status == "failed" and "a:" in (nodes["c"].error or "")
    assert "the index is on fire" in seen[0]


async def test_a_tool_that_never_returns_times_out() -> None:
    attempts = []

    @tool(timeout=0.05)
    async def hang(x: str) -> str:
        """Never returns."""
        attempts.append(x)
        await asyncio.Event().wait()
        return x

    result = await agent_for(StaticPlanner([[call("a", "hang")]]), hang).run("q")
    assert result.trace.nodes["a"].status == "failed"
    assert "timed out" in (result.trace.nodes["a"].error or "")
    assert len(attempts) == 1  # not tried again: a node never takes longer than its timeout


async def test_unexpected_errors_are_retried() -> None:
    attempts = []

    @tool
    def flaky(x: str) -> str:
        """Fails once."""
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionResetError("blip")
        return "ok"

    result = await agent_for(StaticPlanner([[call("a", "flaky")]]), flaky).run("q")
    assert result.trace.nodes["a"].status == "ok" and len(attempts) == 2


@pytest.mark.parametrize(("global_limit", "tool_limit", "expected_peak"), [(2, 8, 2), (8, 1, 1)])
async def test_concurrency_limits(global_limit: int, tool_limit: int, expected_peak: int) -> None:
    running = 0
    peak = 0
    ready = asyncio.Event()

    @tool(max_concurrency=tool_limit)
    async def work(x: str) -> str:
        """Counts how many run at once."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak >= expected_peak:
            ready.set()
        async with asyncio.timeout(GUARD):
            await ready.wait()
        await asyncio.sleep(0)  # let any other eligible node start before this one ends
        running -= 1
        return x

    planner = StaticPlanner([[call(f"n{i}", "work", str(i)) for i in range(6)]])
    result = await agent_for(planner, work, max_concurrency=global_limit).run("q")
    assert all(n.status == "ok" for n in result.trace.nodes.values())
    assert peak == expected_peak


async def test_a_replan_keeps_finished_nodes_and_never_reruns_them() -> None:
    calls: list[str] = []

    @tool
    def count(x: str, y: str = "") -> str:
        """Counts its calls."""
        calls.append(x)
        return x + y

    planner = StaticPlanner(
        [[call("a", "count", "A")], [call("b", "count", "B", y="a")]],
        answer=lambda state: str(state.results[TaskId("b")].output),
    )
    result = await agent_for(planner, count).run("q")
    assert result.answer == "BA"
    assert calls == ["A", "B"]
    assert result.trace.replans == 1
    assert result.trace.nodes["b"].round == 1


async def test_the_model_call_cap_stops_the_run_with_its_partial_trace() -> None:
    class Chatty(StaticPlanner):
        async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
            await ctx.complete([{"role": "user", "content": "one"}])
            await ctx.complete([{"role": "user", "content": "two"}])
            return Answer(text="never")

    @tool
    def noop(x: str) -> str:
        """Nothing."""
        return x

    agent = Agent(
        model=ScriptedModel(["1", "2"]),
        planner=Chatty([[call("a", "noop")]]),
        tools=[noop],
        limits=RunLimits(max_model_calls=1),
    )
    with pytest.raises(LimitExceededError) as caught:
        await agent.run("q")
    assert caught.value.trace.nodes["a"].status == "ok"


async def test_the_server_dying_mid_run_ends_it_with_a_clear_error_and_partial_trace() -> None:
    answers = iter(["fine"])

    def model_fn(*_: Any) -> str:
        try:
            return next(answers)
        except StopIteration:
            raise ModelConnectionError(
                "cannot reach the model server at http://x/v1", base_url="http://x/v1"
            ) from None

    chain = [
        TaskNode(id=TaskId("a"), kind="llm", args={"question": "first"}),
        TaskNode(id=TaskId("b"), kind="llm", args={"question": {"$template": "then {a}"}}),
    ]
    agent = Agent(model=FunctionModel(model_fn), planner=StaticPlanner([chain]))
    with pytest.raises(ExecutionError, match="cannot reach") as caught:
        await agent.run("q")
    nodes = caught.value.trace.nodes
    assert nodes["a"].status == "ok" and nodes["b"].status == "cancelled"


async def test_stopping_a_stream_early_leaves_no_task_behind() -> None:
    @tool
    async def forever(x: str) -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return x

    agent = agent_for(StaticPlanner([[call("a", "forever"), call("b", "forever")]]), forever)
    before = asyncio.all_tasks()
    async with contextlib.aclosing(agent.run_stream("q")) as stream:
        async for event in stream:
            if getattr(event, "type", None) == "started":
                break
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == []


async def test_run_stream_yields_events_then_the_result() -> None:
    @tool
    def echo(x: str) -> str:
        """Echo."""
        return x

    agent = agent_for(StaticPlanner([[call("a", "echo", "hi")]], answer=lambda s: "hi"), echo)
    items = [item async for item in agent.run_stream("q")]
    kinds = [getattr(i, "type", "result") for i in items]
    assert kinds == ["planned", "started", "finished", "answer", "result"]
    assert items[-1].answer == "hi"  # type: ignore[union-attr]
