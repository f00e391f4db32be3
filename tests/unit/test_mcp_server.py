"""agentflow as an MCP server, in process: the `mcp` SDK's own client talks to the server object
(`create_mcp_server`) over the SDK's in-memory connection, with a scripted model behind it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import pytest
from mcp import Client

from agentflow.context import RunLimits
from agentflow.exceptions import ModelConnectionError
from agentflow.mcp_server import AskConfig, create_mcp_server
from agentflow.model import Message, Model, ModelSettings
from agentflow.testing import FunctionModel, ScriptedModel

QUESTION = "Oxford or Cambridge: which is older?"
PLAN = {"lookups": ["Oxford founded", "Cambridge founded"], "steps": []}
"""Two parallel branches: with no tools, each look-up is a reasoning step of its own."""


class Progress:
    """A progress callback that keeps what it is sent."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((progress, total, message))

    @property
    def messages(self) -> list[str]:
        return [m or "" for _, _, m in self.updates]


def dag_model(*, hold_lookups: asyncio.Barrier | None = None) -> FunctionModel:
    """The dag planner's calls: the plan, each look-up (held at `hold_lookups` until both run
    at once, when given), and the join."""

    async def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        properties = (schema or {}).get("properties", {})
        if "lookups" in properties:
            return json.dumps(PLAN)
        if "enough" in properties or "answer" in properties:
            return json.dumps({"enough": True, "answer": "Oxford", "missing": ""})
        if hold_lookups is not None:
            async with asyncio.timeout(10):
                await hold_lookups.wait()
        return "Answer: founded then"

    return FunctionModel(reply)


def server(model: Model, **options: Any) -> Any:
    return create_mcp_server(AskConfig(model=model, **options))


async def test_ask_is_listed_with_its_input_and_output_schema() -> None:
    async with Client(server(ScriptedModel([]), planner="dag")) as client:
        (ask,) = (await client.list_tools()).tools
    assert ask.name == "ask"
    schema = ask.input_schema
    assert schema["required"] == ["question"]
    assert schema["properties"]["question"]["minLength"] == 1
    assert schema["properties"]["planner"]["default"] == "dag"
    assert {"dag", "direct", "react"} <= set(schema["properties"]["planner"]["enum"])
    assert {"max_model_calls", "max_tokens", "deadline"} <= set(schema["properties"])
    assert ask.output_schema is not None
    assert {"answer", "usage", "status", "seconds"} <= set(ask.output_schema["properties"])


async def test_a_call_answers_with_usage_and_reports_progress() -> None:
    progress = Progress()
    async with Client(server(ScriptedModel(["Thinking.\nAnswer: Paris"]))) as client:
        result = await client.call_tool(
            "ask", {"question": "Capital of France?"}, progress_callback=progress
        )
    assert not result.is_error
    assert [c.text for c in result.content if c.type == "text"] == ["Paris"]
    content = result.structured_content or {}
    assert content["answer"] == "Paris" and content["planner"] == "direct"
    assert content["status"] == "answered"
    assert content["usage"]["model_calls"] == 1 and content["usage"]["total_tokens"] > 0
    assert content["steps"] == [
        {"id": "answer", "label": 'llm("Capital of France?")', "status": "ok"}
    ]
    assert progress.messages == [
        'planned answer: llm("Capital of France?") (1 step planned)',
        'started answer: llm("Capital of France?")',
        'llm("Capital of France?") finished (1 of 1 step done)',
        "answered",
    ]
    final, total, _ = progress.updates[-1]
    assert final == total


async def test_a_dag_run_reports_each_parallel_step_as_progress() -> None:
    progress = Progress()
    model = dag_model(hold_lookups=asyncio.Barrier(2))  # the look-ups must run at once
    async with Client(server(model, planner="dag")) as client:
        result = await client.call_tool("ask", {"question": QUESTION}, progress_callback=progress)
    assert not result.is_error, result.content
    content = result.structured_content or {}
    assert content["answer"] == "Oxford" and content["planner"] == "dag"
    assert [s["id"] for s in content["steps"]] == ["l1", "l2"]
    assert content["usage"]["model_calls"] == 4  # plan, two look-ups, join
    text = "\n".join(progress.messages)
    assert 'planned l1: llm("Oxford founded")' in text
    assert 'llm("Cambridge founded") finished' in text
    assert "(2 of 2 steps done)" in text and progress.messages[-1] == "answered"
    values = [p for p, _, _ in progress.updates]
    assert values == sorted(set(values))  # rises with every notification
    assert all(total is not None and p <= total for p, total, _ in progress.updates)
    assert values[-1] == progress.updates[-1][1]


async def test_a_planner_named_by_the_call_is_used() -> None:
    async with Client(server(dag_model())) as client:  # the server's default: direct
        result = await client.call_tool("ask", {"question": QUESTION, "planner": "dag"})
    assert (result.structured_content or {})["planner"] == "dag"
    assert (result.structured_content or {})["answer"] == "Oxford"


async def test_a_failed_run_is_a_tool_error_and_the_server_serves_the_next_call() -> None:
    def reply(messages: Sequence[Message], *_: Any) -> str:
        if "first" in str(messages[-1]["content"]):
            raise ModelConnectionError(
                "cannot reach the model server at http://127.0.0.1:9/v1", base_url="x"
            )
        return "Answer: 4"

    async with Client(server(FunctionModel(reply))) as client:
        failed = await client.call_tool("ask", {"question": "first: 2+2?"})
        answered = await client.call_tool("ask", {"question": "then: 2+2?"})
    assert failed.is_error
    (text,) = [c.text for c in failed.content if c.type == "text"]
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in text
    assert (failed.structured_content or {})["status"] == "failed"
    assert (failed.structured_content or {})["error"] == text
    assert not answered.is_error and (answered.structured_content or {})["answer"] == "4"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"question": ""}, "at least 1 character"),
        ({"question": "   "}, "the question is empty"),
        ({}, "question"),
        ({"question": "2+2?", "planner": "oracle"}, "unknown planner 'oracle'"),
        ({"question": "2+2?", "max_model_calls": 0}, "greater than or equal to 1"),
        ({"question": "2+2?", "deadline": -1}, "greater than 0"),
    ],
)
async def test_invalid_arguments_are_a_tool_error(arguments: dict[str, Any], says: str) -> None:
    model = ScriptedModel([])  # never asked: a call with bad arguments does not run
    async with Client(server(model)) as client:
        result = await client.call_tool("ask", arguments)
    assert result.is_error
    assert says in " ".join(c.text for c in result.content if c.type == "text")
    assert model.calls == []


async def test_a_call_may_lower_the_servers_limits_but_not_raise_them() -> None:
    async with Client(server(dag_model(), limits=RunLimits(max_model_calls=3))) as client:
        lowered = await client.call_tool(
            "ask", {"question": QUESTION, "planner": "dag", "max_model_calls": 1}
        )
        raised = await client.call_tool(
            "ask", {"question": QUESTION, "planner": "dag", "max_model_calls": 100}
        )
    texts = [" ".join(c.text for c in r.content if c.type == "text") for r in (lowered, raised)]
    assert lowered.is_error and "cap of 1 model calls" in texts[0]
    assert raised.is_error and "cap of 3 model calls" in texts[1]
    assert (raised.structured_content or {})["usage"]["model_calls"] == 3


async def test_cancelling_a_call_cancels_its_run() -> None:
    asked, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(*_: Any) -> str:
        asked.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("not cancelled")

    async with Client(server(FunctionModel(hang))) as client:
        async with anyio.create_task_group() as calls:
            calls.start_soon(client.call_tool, "ask", {"question": "2+2?"})
            async with asyncio.timeout(10):
                await asked.wait()
            calls.cancel_scope.cancel()
        async with asyncio.timeout(10):
            await cancelled.wait()
        # and the server still answers
        assert [t.name for t in (await client.list_tools()).tools] == ["ask"]


async def test_calls_run_at_once_up_to_max_runs_and_the_rest_wait() -> None:
    running, most = 0, 0
    release = asyncio.Event()

    async def reply(*_: Any) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if most == 2:
            release.set()  # both slots taken at once: let every call finish
        async with asyncio.timeout(10):
            await release.wait()
        running -= 1
        return "Answer: 4"

    waits = [Progress() for _ in range(3)]
    async with Client(server(FunctionModel(reply), max_runs=2)) as client:
        results = []

        async def call(progress: Progress) -> None:
            results.append(
                await client.call_tool("ask", {"question": "2+2?"}, progress_callback=progress)
            )

        async with anyio.create_task_group() as calls:
            for progress in waits:
                calls.start_soon(call, progress)
    assert most == 2
    assert [r.is_error for r in results] == [False, False, False]
    waiting = [p for p in waits if p.messages and p.messages[0].startswith("waiting")]
    assert len(waiting) == 1 and "2 questions are running" in waiting[0].messages[0]


def test_an_unknown_default_planner_or_no_run_slot_fails_at_start() -> None:
    with pytest.raises(Exception, match="unknown planner 'oracle'"):
        AskConfig(model=ScriptedModel([]), planner="oracle")
    with pytest.raises(Exception, match="max_runs must be at least 1"):
        AskConfig(model=ScriptedModel([]), max_runs=0)


async def test_a_failed_step_a_cancelled_one_and_the_deadline_show_in_progress() -> None:
    async def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        properties = (schema or {}).get("properties", {})
        if "lookups" in properties:
            return json.dumps(PLAN)
        if "answer" in properties:
            return json.dumps({"answer": "Oxford", "enough": True, "missing": ""})
        if "Findings:" in str(messages[-1]["content"]):  # the last join, at the deadline
            return "Answer: Oxford"
        if "Oxford founded" in str(messages[-1]["content"]):
            raise ValueError("no such page")
        await asyncio.sleep(3600)  # Cambridge: still running at the deadline
        raise AssertionError("not cancelled")

    progress = Progress()
    async with Client(server(FunctionModel(reply), planner="dag")) as client:
        result = await client.call_tool(
            "ask", {"question": QUESTION, "deadline": 1.0}, progress_callback=progress
        )
    assert not result.is_error, result.content
    content = result.structured_content or {}
    assert content["status"] == "deadline" and content["answer"] == "Oxford"
    assert [s["status"] for s in content["steps"]] == ["failed", "cancelled"]
    (text,) = [c.text for c in result.content if c.type == "text"]
    assert text.startswith("Oxford\n") and "reached the deadline" in text
    messages = progress.messages
    assert 'llm("Oxford founded") failed: ValueError: no such page (1 of 2 steps done)' in messages
    assert 'llm("Cambridge founded") cancelled (2 of 2 steps done)' in messages
    assert messages[-1] == "answered at the deadline"


async def _unusable_plan(*_: Any) -> str:
    return "not a plan at all"


async def _hung(*_: Any) -> str:
    await asyncio.sleep(3600)
    raise AssertionError("not cancelled")


@pytest.mark.parametrize(
    ("reply", "arguments", "says"),
    [
        (_unusable_plan, {"planner": "dag"}, "the plan has no usable nodes"),
        (_hung, {"deadline": 0.5}, "the run reached its deadline of 0.5 s"),
    ],
)
async def test_an_unusable_plan_or_a_passed_deadline_is_a_tool_error(
    reply: Any, arguments: dict[str, Any], says: str
) -> None:
    async with Client(server(FunctionModel(reply))) as client:
        result = await client.call_tool("ask", {"question": QUESTION, **arguments})
    assert result.is_error
    assert says in " ".join(c.text for c in result.content if c.type == "text")
    assert (result.structured_content or {})["status"] == "failed"
