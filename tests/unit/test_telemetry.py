"""OpenTelemetry traces of runs: the span tree a run exports matches its `Trace`.

Spans go to an in-memory exporter behind a local tracer provider given to
`telemetry.configure` (and taken back after each test): the global provider is never set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry import trace as otel
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentflow import Agent, ExecutionError, TaskId, TaskNode, telemetry
from agentflow.exceptions import ModelConnectionError
from agentflow.model import Choice, Message, ModelResponse, ModelSettings, RequestTiming, Usage
from agentflow.telemetry import run_span
from agentflow.testing import FunctionModel, StaticPlanner
from agentflow.tool import ToolError, tool
from agentflow.trace import NodeRecord, Trace

from .test_planners import FACTS, plan

QUESTION = "Which was founded first, Oxford or Cambridge?"
SLEEP = 0.2  # seconds each parallel tool node sleeps: long enough to overlap for sure
GUARD = 5.0


class TimedModel(FunctionModel):
    """Answers from a script after a short wait, reporting usage and timing as `OpenAIModel`
    does (so the trace keeps a `RequestTiming` per request)."""

    def __init__(self, replies: Sequence[str], *, delay: float = 0.01) -> None:
        self.replies, self.delay = list(replies), delay
        super().__init__(self._reply, name="timed-model")

    async def _reply(
        self, messages: Sequence[Message], settings: ModelSettings, schema: Any
    ) -> ModelResponse:
        started = time.monotonic()
        await asyncio.sleep(self.delay)
        if not self.replies:
            raise AssertionError("TimedModel ran out of replies")
        text = self.replies.pop(0)
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = Usage(prompt_tokens=prompt, completion_tokens=len(text.split()), calls=1)
        timing = RequestTiming(
            total_s=time.monotonic() - started,
            queued_s=0.001,
            ttft_s=0.004,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            endpoint="http://127.0.0.1:8100/v1",
        )
        choice = Choice(text=text, finish_reason="stop")
        return ModelResponse(choices=(choice,), usage=usage, model=self.name, timing=timing)


@tool
async def lookup(query: str) -> str:
    """Look up a fact, slowly."""
    await asyncio.sleep(SLEEP)
    return FACTS.get(query.lower(), "no idea")


@tool
async def broken(query: str) -> str:
    """Always fails."""
    raise ToolError(f"cannot look up {query}")


def node(node_id: str, tool_name: str | None, **args: Any) -> TaskNode:
    if tool_name is None:
        return TaskNode(id=TaskId(node_id), kind="llm", args=args)
    return TaskNode(id=TaskId(node_id), kind="tool", tool=tool_name, args=args)


def ref(node_id: str) -> dict[str, str]:
    return {"$ref": node_id}


def parallel_plan() -> StaticPlanner:
    """Two lookups at once, then a reasoning step on both."""
    step = node("s", None, question="Which was first?", context=[ref("a"), ref("b")])
    nodes = [node("a", "lookup", query="Oxford founded"), node("b", "lookup", query="x"), step]
    return StaticPlanner([nodes], answer=lambda state: "Oxford")


def tree(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one root span and the rest, checked to be one trace."""
    finished = list(exporter.get_finished_spans())
    roots = [s for s in finished if s.parent is None]
    assert len(roots) == 1, [s.name for s in finished]
    trace_ids = {s.context.trace_id for s in finished if s.context is not None}
    assert len(trace_ids) == 1
    return roots[0], [s for s in finished if s is not roots[0]]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def by_node(children: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    nodes = [s for s in children if "agentflow.node.id" in (s.attributes or {})]
    return {str(attrs(s)["agentflow.node.id"]): s for s in nodes}


def attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def offset(span: ReadableSpan, root: ReadableSpan, end: bool = False) -> float:
    """Seconds from the root span's start to `span`'s start (or end)."""
    at = span.end_time if end else span.start_time
    assert at is not None and root.start_time is not None
    return (at - root.start_time) / 1e9


def assert_tree_matches(root: ReadableSpan, children: list[ReadableSpan], trace: Trace) -> None:
    """One span per node, under the root, with the node's own times, kind, deps and links;
    a request span per request, under its node's span or the root; tokens summed = the run's."""
    nodes = by_node(children)
    assert set(nodes) == set(trace.nodes)
    for node_id, record in trace.nodes.items():
        span = nodes[node_id]
        assert span.parent is not None and span.parent.span_id == span_id(root)
        assert attrs(span)["agentflow.node.kind"] == record.kind
        assert list(attrs(span)["agentflow.node.deps"]) == record.deps
        assert attrs(span)["agentflow.node.status"] == record.status
        assert {link.context.span_id for link in span.links} == {
            span_id(nodes[d]) for d in record.deps
        }
        assert offset(span, root) == pytest.approx(record.started_at, abs=2e-3)
        assert offset(span, root, end=True) == pytest.approx(record.finished_at, abs=2e-3)
    requests = [s for s in children if s.name.startswith("chat ")]
    assert len(requests) == len(trace.requests) == trace.usage.calls
    node_span_ids = {span_id(s): node_id for node_id, s in nodes.items()}
    parents = sorted(
        str(node_span_ids.get(s.parent.span_id if s.parent else 0, "root")) for s in requests
    )
    assert parents == sorted(str(r.node_id or "root") for r in trace.requests)
    inputs = sum(int(attrs(s)["gen_ai.usage.input_tokens"]) for s in requests)
    outputs = sum(int(attrs(s)["gen_ai.usage.output_tokens"]) for s in requests)
    assert (inputs, outputs) == (trace.usage.prompt_tokens, trace.usage.completion_tokens)
    assert attrs(root)["gen_ai.usage.input_tokens"] == inputs
    assert attrs(root)["gen_ai.usage.output_tokens"] == outputs


async def test_a_runs_span_tree_matches_its_trace(spans: InMemorySpanExporter) -> None:
    model = TimedModel(["Oxford is older.\nAnswer: Oxford"])
    result = await Agent(model=model, planner=parallel_plan(), tools=[lookup]).run(QUESTION)

    root, children = tree(spans)
    assert root.name == "invoke_agent agentflow"
    assert attrs(root)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(root)["gen_ai.request.model"] == "timed-model"
    assert attrs(root)["agentflow.planner"] == "static"
    assert attrs(root)["agentflow.run.status"] == "ok"
    assert attrs(root)["agentflow.answer.status"] == "answered"
    assert attrs(root)["agentflow.question.length"] == len(QUESTION)
    assert root.status.status_code == StatusCode.UNSET
    assert_tree_matches(root, children, result.trace)

    nodes = by_node(children)
    a, b, step = nodes["a"], nodes["b"], nodes["s"]
    assert a.name == b.name == "execute_tool lookup"
    assert attrs(a)["gen_ai.tool.name"] == "lookup"
    assert step.name == "llm s" and "gen_ai.tool.name" not in attrs(step)
    assert offset(a, root) < offset(b, root, end=True)  # the branches overlap ...
    assert offset(b, root) < offset(a, root, end=True)
    assert offset(step, root) >= max(offset(a, root, end=True), offset(b, root, end=True))
    (request,) = [s for s in children if s.name == "chat timed-model"]
    assert request.parent is not None and request.parent.span_id == span_id(step)
    assert request.kind == otel.SpanKind.CLIENT
    assert attrs(request)["server.address"] == "127.0.0.1"
    assert attrs(request)["server.port"] == 8100
    assert attrs(request)["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.004)
    assert offset(step, root) <= offset(request, root)
    assert offset(request, root, end=True) <= offset(step, root, end=True) + 2e-3


async def test_a_dag_runs_plan_and_join_requests_are_the_runs_own(
    spans: InMemorySpanExporter,
) -> None:
    model = TimedModel(
        [
            plan(("s1", "llm", ["Which first? {l1} {l2}"]), lookups=("Oxford founded", "x")),
            "Answer: Oxford",
            json.dumps({"enough": True, "answer": "Oxford", "missing": ""}),
        ]
    )
    result = await Agent(model=model, planner="dag", tools=[lookup]).run(QUESTION)
    root, children = tree(spans)
    assert attrs(root)["agentflow.planner"] == "dag"
    assert_tree_matches(root, children, result.trace)
    under_root = [s for s in children if s.name.startswith("chat ") and s.parent is not None]
    assert sum(s.parent.span_id == span_id(root) for s in under_root if s.parent) >= 2


async def test_a_failed_node_has_an_error_status(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(telemetry.CAPTURE_CONTENT_ENV, "true")  # the error's text is text
    nodes = [node("a", "lookup", query="Oxford founded"), node("bad", "broken", query="q")]
    planner = StaticPlanner([nodes], answer=lambda state: "Oxford")
    result = await Agent(model=TimedModel([]), planner=planner, tools=[lookup, broken]).run("q")
    root, children = tree(spans)
    assert_tree_matches(root, children, result.trace)
    spans_of = by_node(children)
    failed = spans_of["bad"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "cannot look up q"
    assert attrs(failed)["agentflow.node.error"] == "cannot look up q"
    assert attrs(failed)["agentflow.node.status"] == "failed"
    assert spans_of["a"].status.status_code == StatusCode.UNSET
    assert root.status.status_code == StatusCode.UNSET  # the run itself answered


async def test_a_run_that_fails_still_exports_what_happened(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(telemetry.CAPTURE_CONTENT_ENV, "true")  # the error's text is text

    def down(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        raise ModelConnectionError("the model server went away", base_url="http://x/v1")

    planner = StaticPlanner([[node("a", "lookup", query="x"), node("s", None, question="?")]])
    agent = Agent(model=FunctionModel(down), planner=planner, tools=[lookup])
    with pytest.raises(ExecutionError) as caught:
        await agent.run("q")
    root, children = tree(spans)
    assert root.status.status_code == StatusCode.ERROR
    assert "went away" in (root.status.description or "")
    assert attrs(root)["agentflow.run.status"] == "failed"
    assert attrs(root)["agentflow.answer.status"] == "none"
    assert attrs(root)["error.type"] == "ExecutionError"
    assert set(by_node(children)) == set(caught.value.trace.nodes) == {"a", "s"}
    assert by_node(children)["s"].status.status_code == StatusCode.ERROR


async def test_a_cancelled_run_still_exports_its_spans(spans: InMemorySpanExporter) -> None:
    never = asyncio.Event()

    @tool
    async def hang(query: str) -> str:
        """Waits for ever."""
        await never.wait()
        return query

    planner = StaticPlanner([[node("a", "hang", query="x"), node("b", "hang", query="y")]])
    agent = Agent(model=TimedModel([]), planner=planner, tools=[hang])
    async with asyncio.timeout(GUARD):
        async with contextlib.aclosing(agent.run_stream("q")) as events:
            started = 0
            async for event in events:
                started += getattr(event, "type", "") == "started"
                if started == 2:
                    break
    root, children = tree(spans)
    assert attrs(root)["agentflow.run.status"] == "cancelled"
    assert root.status.status_code == StatusCode.ERROR
    nodes = by_node(children)
    assert set(nodes) == {"a", "b"}
    assert all(attrs(s)["agentflow.node.status"] == "cancelled" for s in nodes.values())
    assert all(s.status.status_code == StatusCode.ERROR for s in nodes.values())


def texts(exporter: InMemorySpanExporter) -> str:
    """Every attribute value and status description of every span and event, as one string."""
    values: list[Any] = []
    for span in exporter.get_finished_spans():
        values += list(attrs(span).values())
        values.append(span.status.description or "")
        for event in span.events:
            values += list((event.attributes or {}).values())
    return json.dumps([v if isinstance(v, str | int | float) else list(v) for v in values])


async def run_with_text(exporter: InMemorySpanExporter) -> str:
    model = TimedModel(["The answer is Oxford"])
    await Agent(model=model, planner=parallel_plan(), tools=[lookup]).run(QUESTION)
    return texts(exporter)


async def test_no_text_is_recorded_by_default(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(telemetry.CAPTURE_CONTENT_ENV, raising=False)
    recorded = await run_with_text(spans)
    for text in (QUESTION, "Oxford founded", "founded 1096", "Which was first?", "Oxford"):
        assert text not in recorded
    assert "gen_ai.input.messages" not in recorded


async def test_no_error_text_is_recorded_by_default(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error's message quotes what failed (a tool's input, an MCP server's reply, the
    model's text): like any text, it is recorded only when the user opts in."""
    monkeypatch.delenv(telemetry.CAPTURE_CONTENT_ENV, raising=False)
    secret = "zebrafish nationality"
    failing = StaticPlanner([[node("bad", "broken", query=secret)]], answer=lambda state: "x")
    await Agent(model=TimedModel([]), planner=failing, tools=[broken]).run("q")

    def down(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        raise ModelConnectionError(f"no answer about {secret}", base_url="http://x/v1")

    planner = StaticPlanner([[node("s", None, question="?")]])
    with pytest.raises(ExecutionError):
        await Agent(model=FunctionModel(down), planner=planner).run("q")
    assert secret not in texts(spans)
    for span in spans.get_finished_spans():
        assert all(secret not in str(event.attributes) for event in span.events)
    failed = [s for s in spans.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    assert {str(attrs(s).get("agentflow.node.id")) for s in failed} >= {"bad", "s"}
    assert all(attrs(s)["error.type"] for s in failed)


async def test_text_is_recorded_when_the_user_opts_in(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(telemetry.CAPTURE_CONTENT_ENV, "true")
    recorded = await run_with_text(spans)
    for text in (QUESTION, "Oxford founded", "founded 1096", "Which was first?"):
        assert text in recorded
    root, _ = tree(spans)
    (message,) = json.loads(str(attrs(root)["gen_ai.output.messages"]))
    assert message["role"] == "assistant"
    assert message["parts"] == [{"type": "text", "content": "Oxford"}]


async def test_the_option_wins_over_the_environment(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(telemetry.CAPTURE_CONTENT_ENV, "true")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.configure(provider, capture_content=False)
    assert QUESTION not in await run_with_text(spans)


async def test_nothing_is_recorded_unless_a_provider_is_configured(
    spans: InMemorySpanExporter,
) -> None:
    telemetry.configure()  # the global provider, which no test sets
    assert isinstance(otel.get_tracer_provider(), otel.ProxyTracerProvider)
    await Agent(model=TimedModel(["Oxford"]), planner=parallel_plan(), tools=[lookup]).run("q")
    assert spans.get_finished_spans() == ()


async def test_a_library_users_global_provider_and_current_span_are_used(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.configure()
    monkeypatch.setattr(otel, "get_tracer_provider", lambda: provider)  # set_tracer_provider
    with provider.get_tracer("app").start_as_current_span("request") as outer:
        await Agent(model=TimedModel(["Oxford"]), planner=parallel_plan(), tools=[lookup]).run("q")
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.name == "invoke_agent agentflow"]
    assert root.parent is not None and root.parent.span_id == outer.get_span_context().span_id
    assert root.context is not None
    assert root.context.trace_id == outer.get_span_context().trace_id
    assert len(finished) == 1 + 1 + 3 + 1  # outer, root, three nodes, one request


def test_the_core_runs_without_opentelemetry() -> None:
    """OpenTelemetry absent (every `import opentelemetry...` fails): a run, the CLI's
    `exporting` without a flag and a `traceparent` header work, and nothing imports it."""
    script = """
import asyncio, sys
sys.modules["opentelemetry"] = None
from agentflow import Agent, telemetry
from agentflow.testing import ScriptedModel
with telemetry.exporting(None), telemetry.remote_parent({"traceparent": "00-ab-cd-01"}):
    print(asyncio.run(Agent(model=ScriptedModel(["Answer: x"])).run("q")).answer)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry.")))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["x", "[]"]


def test_threads_allocation_and_unfinished_nodes_from_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    """Straight from a `Trace`: a thread forked inside a node is a child of that node's span;
    an allocated node carries its decision (not its votes, whose keys are answers); a node
    still running when the run ended is an error ending with the run."""
    trace = Trace(question="q", planner="static")
    allocation = {
        "mode": "think", "difficulty": 0.72, "estimator": "score", "samples": 3,
        "stopped_early": True, "budget": {"max_tokens": 512, "vote": "majority"},
        "tokens": {"think": 300}, "votes": {"Oxford": 2}, "notes": ["a note"],
    }  # fmt: skip
    with run_span(trace, "m"):
        trace.nodes["n"] = NodeRecord(
            id="n", kind="llm", deps=[], tool=None, round=0, status="ok",
            started_at=0.0, finished_at=0.03, allocation=allocation,
        )  # fmt: skip
        trace.nodes["n.t1"] = NodeRecord(
            id="n.t1", kind="thread", deps=[], tool=None, round=0, status="ok",
            started_at=0.01, finished_at=0.02, parent="n",
        )  # fmt: skip
        trace.nodes["late"] = NodeRecord(
            id="late", kind="tool", deps=["n"], tool="search", round=0, status="running",
            started_at=0.025,
        )  # fmt: skip
        time.sleep(0.05)  # the run's clock past every time above
    root, children = tree(spans)
    nodes = by_node(children)
    assert nodes["n.t1"].parent is not None
    assert nodes["n.t1"].parent.span_id == span_id(nodes["n"])
    assert attrs(nodes["n.t1"])["agentflow.node.parent"] == "n"
    decided = attrs(nodes["n"])
    assert decided["agentflow.allocation.mode"] == "think"
    assert decided["agentflow.allocation.difficulty"] == 0.72
    assert decided["agentflow.allocation.samples"] == 3
    assert decided["agentflow.allocation.stopped_early"] is True
    assert decided["agentflow.allocation.budget.max_tokens"] == 512
    assert decided["agentflow.allocation.tokens.think"] == 300
    assert list(decided["agentflow.allocation.notes"]) == ["a note"]
    assert not [key for key in decided if "votes" in key or "Oxford" in key]
    late = nodes["late"]
    assert late.status.status_code == StatusCode.ERROR
    assert attrs(late)["error.type"] == "unfinished"
    assert late.end_time == root.end_time
    assert [link.context.span_id for link in late.links] == [span_id(nodes["n"])]
