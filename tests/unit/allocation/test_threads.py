"""The `threads` strategy: the outline parser and its redundancy guard, thread prompts that share
a byte-identical prefix (asserted on what a fake OpenAI-compatible server on loopback receives),
threads that run at once as children of their node, and their cancellation with the run."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentflow import Agent
from agentflow.allocation import (
    THINK,
    Allocator,
    Budget,
    Constant,
    Step,
    TextModel,
    add_allocation_options,
    allocation_settings,
    allocator_from_settings,
    load_allocator,
    merge_near_duplicates,
    parse_outline,
)
from agentflow.allocation._threads import (
    _all_or_first_failure,
    join_instruction,
    split_tokens,
    thread_instruction,
)
from agentflow.context import RunContext
from agentflow.exceptions import UserError
from agentflow.model import Choice, Message, ModelResponse, ModelSettings, Usage
from agentflow.models import OpenAIModel, RetryPolicy
from agentflow.plan import TaskId, TaskNode
from agentflow.testing import FunctionModel, ScriptedModel, StaticPlanner
from agentflow.tool import Toolset
from agentflow.trace import NodeRecord, Trace

GUARD = 10.0  # seconds; only reached when threads wait for slots that never come

# -- the outline parser ---------------------------------------------------------------------


def test_an_outline_in_the_asked_json() -> None:
    outline = parse_outline('{"threads": ["area of the square", "perimeter of the square"]}', 3)
    assert outline.items == ("area of the square", "perimeter of the square")
    assert (outline.written, outline.merged, outline.dropped, outline.malformed) == (2, 0, 0, False)


@pytest.mark.parametrize(
    "text",
    [
        '["area of the square", "perimeter of the square"]',
        '```json\n{"threads": ["area of the square", "perimeter of the square"]}\n```',
        '{"steps": ["area of the square", "perimeter of the square"]}',
        '{"threads": [{"instruction": "area of the square"}, "perimeter of the square", 7]}',
    ],
)
def test_outline_json_in_other_shapes(text: str) -> None:
    assert parse_outline(text, 3).items == ("area of the square", "perimeter of the square")


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("1. area of the square\n2) perimeter of the square\n", ("area", "perimeter")),
        ("- area of the square\n\n* perimeter of the square", ("area", "perimeter")),
        ("Thread 1: area of the square\nThread 2: perimeter of the square", ("area", "perimeter")),
        # cut off by max_tokens inside the second item: the first survives
        ('{"threads": ["area of the square", "perimeter of', ("area",)),
        ('{"threads": "area of the square"}', ("area",)),
    ],
)
def test_malformed_outlines_are_salvaged(text: str, items: tuple[str, ...]) -> None:
    outline = parse_outline(text, 3)
    assert tuple(item.split()[0] for item in outline.items) == items
    assert outline.malformed


@pytest.mark.parametrize(
    "text", ["", "   ", "{}", '{"threads": []}', '{"threads": ["", "  "]}', "42"]
)
def test_empty_outlines_have_no_thread(text: str) -> None:
    outline = parse_outline(text, 3)
    assert outline.items == () and outline.written == 0


def test_an_over_long_outline_is_cut_to_the_cap() -> None:
    items = [f"case {k}: {topic}" for k, topic in enumerate(["apples", "pears", "plums", "figs"])]
    outline = parse_outline(json.dumps({"threads": items + ["x" * 1000]}), 2)
    assert outline.items == tuple(items[:2])
    assert (outline.written, outline.dropped) == (5, 3)
    assert len(parse_outline(json.dumps(["y" * 1000]), 2).items[0]) == 160


def test_near_duplicate_threads_are_merged_before_any_runs() -> None:
    items = [
        "Compute the sum of the roots",
        "Find the sum of the roots.",
        "sum of roots",
        "Find the area of the triangle",
        "Find the area of the square",
    ]
    kept, merged = merge_near_duplicates(items)
    assert kept == [items[0], items[3], items[4]] and merged == 2
    outline = parse_outline(json.dumps({"threads": items}), 4)
    assert (outline.merged, len(outline.items)) == (2, 3)


def test_tokens_are_split_so_the_strategy_spends_no_more_than_a_chain() -> None:
    outline, each, join = split_tokens(640, 3)
    assert (outline, join) == (160, 160) and outline + 3 * each + join <= 640
    assert split_tokens(8, 4) == (16, 16, 16)  # never below a usable call


def test_budget_strategies() -> None:
    assert THINK.how == "chain"
    assert THINK.with_vote("esc", 4).how == "vote"
    vote = THINK.with_strategy("vote", samples=5)
    assert (vote.how, vote.vote, vote.samples) == ("vote", "esc", 5)
    threads = THINK.with_vote("esc", 4).with_strategy("threads", threads=2)
    assert (threads.how, threads.threads) == ("threads", 2)


# -- over HTTP: a fake server that serves the raw endpoints ---------------------------------


@dataclass
class Server:
    outline: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    barrier: threading.Barrier | None = None
    """Thread requests wait at it until all have arrived: they must be in flight together."""
    tokenize_status: int = 200
    """Not 200: the server has no `/tokenize` and answers this there, as servers other than
    vLLM do (404, 405 or 501)."""


def _template(messages: list[dict[str, Any]]) -> str:
    turns = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return f"{turns}<|assistant|>"


def _serve(path: str, body: dict[str, Any], server: Server) -> tuple[int, dict[str, Any]]:
    server.requests.append({"path": path, **body})
    if path == "/v1/chat/completions":  # the outline, under its schema; threads as turns; else
        outlining = "response_format" in body  # a chain or a join
        turn = str(body["messages"][-1]["content"])
        if outlining:
            content = json.dumps({"threads": server.outline})
        else:
            content = _worked_out(turn, server) or "Answer: 42"
        message = {"role": "assistant", "content": content}
        usage = {"prompt_tokens": 20, "completion_tokens": 12}
        return 200, {"model": "m", "choices": [{"message": message}], "usage": usage}
    if path == "/tokenize":
        if server.tokenize_status != 200:
            return server.tokenize_status, {"detail": "Not Found"}
        rendered = _template(body["messages"])
        return 200, {"tokens": [ord(c) for c in rendered], "count": len(rendered)}
    if path == "/detokenize":
        return 200, {"prompt": "".join(chr(t) for t in body["tokens"])}
    prompt = body["prompt"]
    text = _worked_out(prompt, server) or "Answer: 42"
    usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text.split())}
    choices = [{"text": text, "finish_reason": "stop"}]
    return 200, {"model": "m", "choices": choices, "usage": usage}


def _worked_out(prompt: str, server: Server) -> str | None:
    """A thread's result when `prompt` ends with a thread's instruction, else None."""
    if not prompt.rstrip().endswith("Working on this thread only:"):
        return None
    assert server.barrier is not None
    server.barrier.wait()  # every thread is in flight at once, or this times out
    topic = prompt.rsplit("Thread ", 1)[1].split(":", 2)[1].strip().splitlines()[0]
    return f"worked out {topic}"


@pytest.fixture
def fake() -> Iterator[tuple[str, Server]]:
    state = Server(outline=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, reply = _serve(self.path, body, state)
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    runner = threading.Thread(target=httpd.serve_forever, daemon=True)
    runner.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        if state.barrier is not None:
            state.barrier.abort()
        httpd.shutdown()
        httpd.server_close()
        runner.join()


def _threads_allocator(threads: int = 3) -> Allocator:
    think = Budget(mode="think", max_tokens=240, strategy="threads", threads=threads)
    return Allocator(estimator=Constant("uniform-think", 1.0), think=think)


async def _ask(url: str, allocator: Allocator) -> Any:
    model = OpenAIModel("SmolLM2-135M-Instruct", url, retry=RetryPolicy(max_retries=0))
    try:
        return await Agent(model=model, planner="direct", allocation=allocator).run("6 * 7?")
    finally:
        await model.aclose()


async def test_thread_prompts_share_a_byte_identical_prefix(fake: tuple[str, Server]) -> None:
    url, server = fake
    server.outline = ["multiply 6 by 7", "check by adding 7 six times", "Multiply 6 by 7."]
    server.barrier = threading.Barrier(2, timeout=10)  # the third item is merged away
    result = await _ask(url, _threads_allocator())

    raw = [r for r in server.requests if r["path"] == "/v1/completions"]
    *threads, join = raw
    outline_call = next(r for r in server.requests if r["path"] == "/v1/chat/completions")
    prefix = _template(outline_call["messages"]) + json.dumps({"threads": server.outline}) + "\n\n"
    kept = server.outline[:2]
    # The two threads run concurrently, so they reach the server in either order.
    assert sorted(t["prompt"] for t in threads) == sorted(
        prefix + thread_instruction(k, 2, item) for k, item in enumerate(kept, start=1)
    )
    assert join["prompt"].startswith(prefix + thread_instruction(1, 2, kept[0]))
    assert "worked out multiply 6 by 7" in join["prompt"]
    assert "worked out check by adding 7 six times" in join["prompt"]
    assert {t["max_tokens"] for t in threads} == {60} and join["max_tokens"] == 60
    assert result.answer == "42"

    node = result.trace.nodes["answer"]
    record = node.allocation
    assert record["strategy"] == "threads"
    assert {k: record["threads"][k] for k in ("outlined", "merged", "ran")} == {
        "outlined": 3,
        "merged": 1,
        "ran": 2,
    }
    assert record["critical_path_tokens"] == 12 + 8 + 2  # outline, longest thread, join
    assert record["threads"]["shared_prefix_chars"] == len(prefix)
    children = [n for n in result.trace.nodes.values() if n.parent == "answer"]
    assert [c.id for c in children] == ["answer.t1", "answer.t2"]
    assert all(c.status == "ok" and c.kind == "thread" for c in children)
    first, second = children
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    assert node.usage.calls == 4 == result.trace.usage.calls  # outline, 2 threads, join
    assert "answer.t1" in result.trace.render()


@pytest.mark.parametrize("status", [404, 405, 501])
async def test_without_tokenize_the_threads_run_as_chat_turns(
    fake: tuple[str, Server], status: int
) -> None:
    url, server = fake
    server.outline = ["multiply 6 by 7", "check by adding 7 six times"]
    server.tokenize_status = status
    server.barrier = threading.Barrier(2, timeout=10)
    result = await _ask(url, _threads_allocator())

    assert result.answer == "42"
    assert [r["path"] for r in server.requests].count("/v1/completions") == 0
    chats = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    outline_call, *threads, join = chats
    outline = {"role": "assistant", "content": json.dumps({"threads": server.outline})}
    shared = [*outline_call["messages"], outline]
    for thread in threads:  # the outline call's turns, the outline, then the thread's own turn
        assert thread["messages"][:-1] == shared
    assert sorted(t["messages"][-1]["content"] for t in threads) == [
        thread_instruction(k, 2, item).strip() for k, item in enumerate(server.outline, start=1)
    ]
    assert join["messages"][:-1] == shared
    assert "worked out multiply 6 by 7" in join["messages"][-1]["content"]
    assert "worked out check by adding 7 six times" in join["messages"][-1]["content"]
    record = result.trace.nodes["answer"].allocation
    assert record["threads"]["transport"] == "chat" and record["threads"]["ran"] == 2
    assert any("threads ran as chat turns" in note for note in record["notes"])
    children = [n for n in result.trace.nodes.values() if n.parent == "answer"]
    assert [c.status for c in children] == ["ok", "ok"]


async def test_an_empty_outline_runs_one_chain(fake: tuple[str, Server]) -> None:
    url, server = fake
    server.outline = []
    result = await _ask(url, _threads_allocator())
    record = result.trace.nodes["answer"].allocation
    assert "the outline named no thread: the node ran one chain" in record["notes"]
    assert record["threads"]["outline_text"] == '{"threads": []}'
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2


# -- in process: cancellation, and models that cannot continue raw text ---------------------


class ThreeThreadModel(FunctionModel):
    """Writes a three-thread outline to every chat call and shows its raw prompt; subclasses
    say how it continues raw text."""

    def __init__(self, name: str) -> None:
        super().__init__(
            lambda *_: json.dumps({"threads": ["apples", "pears", "plums"]}), name=name
        )

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        return _template([dict(m) for m in messages])


class BlockingTextModel(ThreeThreadModel):
    """Every raw-text call waits until cancelled."""

    def __init__(self) -> None:
        super().__init__(name="blocking")
        self.started = 0
        self.all_started = asyncio.Event()
        self.cancelled = 0

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        self.started += 1
        if self.started == 3:
            self.all_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return ModelResponse(choices=(Choice(text=""),), usage=Usage(), model=self.name)


async def test_cancelling_the_run_cancels_every_running_thread() -> None:
    model = BlockingTextModel()
    agent = Agent(model=model, planner="direct", allocation=_threads_allocator())
    task = asyncio.create_task(agent.run("fruit?"))
    await asyncio.wait_for(model.all_started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (model.started, model.cancelled) == (3, 3)


async def test_cancelled_threads_are_recorded_as_cancelled_children() -> None:
    model = BlockingTextModel()
    trace = _trace()
    trace.nodes["answer"] = NodeRecord(id="answer", kind="llm", deps=[], tool=None, round=0)
    allocation = _threads_allocator().for_node("answer", _step(), trace, model)
    ctx = RunContext(model=model, tools=Toolset(), trace=trace, allocation=allocation)
    task = asyncio.create_task(ctx.complete([{"role": "user", "content": "?"}], node_id="answer"))
    await asyncio.wait_for(model.all_started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    children = {n.id: n.status for n in trace.nodes.values() if n.parent == "answer"}
    assert children == {f"answer.t{k}": "cancelled" for k in (1, 2, 3)}
    cancelled = [str(e.node_id) for e in trace.events if e.type == "cancelled"]
    assert sorted(cancelled) == sorted(children)


async def test_a_model_that_cannot_continue_raw_text_runs_its_threads_as_chat_turns() -> None:
    def reply(messages: Sequence[Message], _: ModelSettings, schema: Any) -> str:
        if schema is not None:
            return json.dumps({"threads": ["apples", "pears"]})
        last = str(messages[-1]["content"])
        return "Answer: 3" if last.startswith(thread_instruction(1, 2, "apples")) else "1"

    model = FunctionModel(reply)
    result = await Agent(model=model, planner="direct", allocation=_threads_allocator()).run("?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert record["strategy"] == "threads" and result.answer == "3"
    assert record["threads"]["transport"] == "chat"
    assert any("cannot continue raw text" in note for note in record["notes"])
    assert len(model.calls) == 4  # outline, two threads, join


class CountingTextModel(ThreeThreadModel):
    """Counts its raw-text calls in flight at once. Each call waits until `expected` are in
    flight: a cap on the calls, not their timing, decides the peak."""

    def __init__(self, expected: int) -> None:
        super().__init__(name="counting")
        self.expected, self.running, self.peak, self.raw_calls = expected, 0, 0, 0
        self.full = asyncio.Event()

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        self.raw_calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running >= self.expected:
            self.full.set()
        async with asyncio.timeout(GUARD):
            await self.full.wait()
        await asyncio.sleep(0)  # let any other call that may start do so before this one ends
        self.running -= 1
        text = "Answer: 3" if prompt.rstrip().endswith(join_instruction().strip()) else "done"
        return ModelResponse(choices=(Choice(text=text),), usage=Usage(), model=self.name)


@pytest.mark.parametrize(("slots", "nodes"), [(1, 1), (2, 2), (3, 2)])
async def test_threads_take_executor_slots_and_two_forking_nodes_never_deadlock(
    slots: int, nodes: int
) -> None:
    """Every node forks three threads. Its threads run in its slot and the free ones, never
    above `--max-concurrency`; with fewer slots than threads, two nodes that both fork still
    finish (neither holds a slot while it waits for another)."""
    model = CountingTextModel(expected=slots)
    plan = [TaskNode(id=TaskId(f"n{k}"), kind="llm", args={"question": "?"}) for k in range(nodes)]
    planner = StaticPlanner([plan], answer=lambda state: "ok")
    agent = Agent(
        model=model, planner=planner, allocation=_threads_allocator(), max_concurrency=slots
    )
    async with asyncio.timeout(GUARD):
        result = await agent.run("?")
    assert all(result.trace.nodes[node.id].status == "ok" for node in plan)
    assert model.raw_calls == nodes * 4  # three threads and a join per node
    assert model.peak == slots


async def test_a_node_may_choose_its_own_strategy() -> None:
    model = FunctionModel(lambda *_: "Answer: 3")
    think = Budget(mode="think", max_tokens=64, temperature=0.7)
    allocator = Allocator(estimator=Constant("uniform-think", 1.0), think=think)
    allocation = allocator.for_node("n1", _step(), _trace(), model)
    allocation.strategy = "vote"

    async def complete(messages: Sequence[Message], settings: ModelSettings, **_: Any) -> Any:
        return await model.complete(messages, settings)

    await allocation.complete([{"role": "user", "content": "?"}], ModelSettings(), complete)
    assert allocation.record["strategy"] == "vote"
    assert allocation.record["stopped_early"] and allocation.record["samples"] == 3


def _step() -> Step:
    return Step(problem="?", question="?", earlier=())


def _trace() -> Trace:
    return Trace(question="?", planner="direct")


# -- choosing the strategy: per run (`--strategy`) and by difficulty band (the config) --------


def test_the_strategy_option_sets_the_think_budget() -> None:
    parser = argparse.ArgumentParser()
    add_allocation_options(parser)

    def think(*argv: str) -> Budget:
        args = parser.parse_args(["--allocation", "uniform-think", *argv])
        allocator = allocator_from_settings(allocation_settings(args, None))
        assert allocator is not None
        return allocator.think

    threads = think("--strategy", "threads", "--threads", "2")
    assert (threads.how, threads.threads) == ("threads", 2)
    vote = think("--strategy", "vote", "--vote-samples", "5")
    assert (vote.how, vote.vote, vote.samples) == ("vote", "esc", 5)
    assert think().how == "chain"
    plain = allocation_settings(parser.parse_args([]), None)
    assert "strategy" not in plain  # configs stored before strategies existed still match
    with pytest.raises(UserError):
        think("--strategy", "threads", "--threads", "0")


def test_difficulty_bands_in_the_config_choose_the_strategy(tmp_path: Path) -> None:
    path = tmp_path / "allocation.json"
    bands = [{"above": 0.8, "strategy": "threads"}, {"above": 0.5, "strategy": "vote"}]
    path.write_text(json.dumps({"strategies": bands}))
    allocator = load_allocator("score", tau=0.5, config=path)
    assert allocator is not None
    assert allocator.budget_for(0.3).how == "chain" and allocator.budget_for(0.3).mode == "fast"
    assert allocator.budget_for(0.6).how == "vote"
    assert allocator.budget_for(0.9).how == "threads"
    chosen = replace(allocator, think=allocator.think.with_strategy("chain"))
    assert chosen.budget_for(0.9).how == "chain"  # a run's --strategy wins over the bands
    path.write_text(json.dumps({"strategies": [{"above": 0.5, "strategy": "fork"}]}))
    with pytest.raises(UserError):
        load_allocator("score", config=path)


def test_a_model_under_eval_overrides_can_still_continue_raw_text() -> None:
    overrides = ModelSettings(temperature=0.7, seed=1)
    assert isinstance(
        OpenAIModel("m", "http://127.0.0.1:9/v1").with_overrides(overrides), TextModel
    )
    assert not isinstance(ScriptedModel([]).with_overrides(overrides), TextModel)


async def test_a_failing_thread_leaves_its_node_able_to_time_out() -> None:
    """On Python 3.11 a TaskGroup whose child fails cancels the waiting task for good: a node
    timeout entered before the fork, expiring after it (say while the node waits to take its
    slot back), would surface as a bare cancellation, recorded "cancelled", not "timed out"."""

    async def fails() -> ModelResponse:
        raise ValueError("thread failed")

    async def waits() -> ModelResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    tasks = [asyncio.create_task(fails()), asyncio.create_task(waits())]

    async def node() -> None:
        async with asyncio.timeout(1.0):  # the executor's node timeout
            with pytest.raises(ValueError, match="thread failed"):
                await _all_or_first_failure(tasks)
            await asyncio.Event().wait()  # still running when the timeout expires

    with pytest.raises(TimeoutError):
        await asyncio.create_task(node())
    assert tasks[1].cancelled()
