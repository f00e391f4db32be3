"""The lean request path: timing records, request priorities, idle streams, both transports."""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest

from agentflow.endpoints import EndpointPool
from agentflow.exceptions import ModelConnectionError, ModelTimeoutError
from agentflow.model import ModelSettings
from agentflow.models import OpenAIModel, RetryPolicy
from agentflow.scheduling import request_priority

from .loopback import STALL, Loopback, Pause, json_reply, sse_event, sse_head
from .wire import completion, json_response, model_on

USER = [{"role": "user", "content": "hi"}]
TRANSPORTS = ["aiohttp", "httpx2"]


def loopback_model(
    server: Loopback, transport: str, *, timeout: float = 5.0, idle_timeout: float | None = None
) -> OpenAIModel:
    """A model on `server` through aiohttp (the default) or httpx2 (what a factory gives)."""
    factory = (lambda url: httpx2.AsyncClient()) if transport == "httpx2" else None
    pool = EndpointPool(server.base_url, http_client_factory=factory)
    retry = RetryPolicy(base_delay=0.0)
    return OpenAIModel("m", pool, retry=retry, timeout=timeout, idle_timeout=idle_timeout)


async def test_a_response_carries_its_timing() -> None:
    body = completion(prompt_tokens=40, completion_tokens=7)
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 32}
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        if len(calls) == 1:
            return json_response({"error": {"message": "busy"}}, 503)
        return json_response(body)

    response = await model_on(handler).complete(USER)
    timing = response.timing
    assert timing is not None
    assert (timing.prompt_tokens, timing.completion_tokens, timing.cached_tokens) == (40, 7, 32)
    assert timing.attempts == 2 and timing.endpoint == "http://server-a/v1"
    assert timing.ttft_s is None and 0 <= timing.queued_s <= timing.total_s
    assert timing.as_dict()["cached_tokens"] == 32


async def test_a_server_without_cache_details_reports_none_cached() -> None:
    response = await model_on(lambda r: json_response(completion())).complete(USER)
    assert response.timing is not None and response.timing.cached_tokens is None


async def test_the_executors_priority_travels_in_the_body_and_zero_is_left_out() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return json_response(completion())

    model = model_on(handler)
    await model.complete(USER)  # outside any node: priority 0, the server's default
    token = request_priority.set(7)
    try:
        await model.complete(USER)
        await model.complete(USER, ModelSettings(priority=2))  # the call's own wins
    finally:
        request_priority.reset(token)
    assert ["priority" in body for body in seen] == [False, True, True]
    assert (seen[1]["priority"], seen[2]["priority"]) == (7, 2)


async def test_a_server_that_refuses_priorities_is_asked_again_without_and_remembered() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        if "priority" in body:  # vLLM's words without --scheduling-policy priority
            message = f"Got priority {body['priority']} but Priority scheduling is not enabled."
            return json_response({"error": {"message": message, "code": 400}}, 400)
        return json_response(completion("fine"))

    model = model_on(handler)
    settings = ModelSettings(priority=3)
    assert (await model.complete(USER, settings)).text == "fine"
    assert (await model.complete(USER, settings)).text == "fine"
    assert ["priority" in body for body in seen] == [True, False, False]


async def test_requests_refused_at_the_same_time_are_all_asked_again() -> None:
    message = "Got priority 3 but Priority scheduling is not enabled."
    refusal = json_reply({"error": {"message": message, "code": 400}}, "400 Bad Request")
    # No refusal is sent until all four have arrived: they are in flight together however slow
    # the machine (a fixed pause could end before the last one is sent).
    all_four = asyncio.Barrier(4)
    held_refusal: list[tuple[Pause, bytes]] = [(all_four.wait, b""), *refusal]
    scripts = [held_refusal] * 4 + [json_reply(completion("fine"))] * 4
    async with Loopback(scripts) as server:
        model = loopback_model(server, "aiohttp")
        calls = [model.complete(USER, ModelSettings(priority=3)) for _ in range(4)]
        answers = await asyncio.gather(*calls)
        await model.aclose()
    assert [a.text for a in answers] == ["fine"] * 4
    assert ["priority" in body for body in server.bodies] == [True] * 4 + [False] * 4


async def test_another_400_is_not_taken_for_a_priority_refusal() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(1)
        return json_response({"error": {"message": "max_tokens is too large"}}, 400)

    with pytest.raises(Exception, match="max_tokens is too large"):
        await model_on(handler).complete(USER, ModelSettings(priority=3))
    assert len(seen) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_complete_over_real_http(transport: str) -> None:
    async with Loopback([json_reply(completion("over the wire"))]) as server:
        model = loopback_model(server, transport)
        response = await model.complete(USER, ModelSettings(max_tokens=5))
        await model.aclose()
    assert response.text == "over the wire"
    assert server.bodies[0]["max_tokens"] == 5
    assert response.timing is not None and response.timing.endpoint == server.base_url


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_over_real_http_times_its_first_piece(transport: str) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    rest = asyncio.Event()
    script: list[tuple[Pause, bytes]] = [(0.0, sse_head() + sse_event("") + sse_event("a"))]
    script += [(rest.wait, sse_event("b")), (0.0, sse_event(None, usage) + b"data: [DONE]\n\n")]
    async with Loopback([script]) as server:
        model = loopback_model(server, transport)
        deltas = []
        async with asyncio.timeout(30):  # only reached if the first piece is held back
            async for delta in model.stream(USER):
                deltas.append(delta)
                if delta.text == "a":
                    # The rest is sent at least 0.3 s after the caller had the first piece, so
                    # a slow machine cannot squeeze the gap the timing must show.
                    await asyncio.sleep(0.3)
                    rest.set()
        await model.aclose()
    assert "".join(d.text for d in deltas) == "ab"
    timing = deltas[-1].timing
    assert timing is not None and timing.ttft_s is not None
    assert timing.total_s - timing.ttft_s > 0.25  # the first piece, not the whole answer
    assert timing.completion_tokens == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_silent_for_the_idle_timeout_is_asked_again(transport: str) -> None:
    silent = [(0.0, sse_head()), (STALL, b"")]
    fine = [(0.0, sse_head() + sse_event("second try") + b"data: [DONE]\n\n")]
    async with Loopback([silent, fine]) as server:
        model = loopback_model(server, transport, idle_timeout=0.2)
        deltas = [d async for d in model.stream(USER)]
        await model.aclose()
    assert "".join(d.text for d in deltas) == "second try"
    assert len(server.bodies) == 2
    assert deltas[-1].timing is not None and deltas[-1].timing.attempts == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_that_stalls_after_its_first_piece_says_so(transport: str) -> None:
    script = [(0.0, sse_head() + sse_event("partial")), (STALL, b"")]
    async with Loopback([script]) as server:
        model = loopback_model(server, transport, idle_timeout=0.2)
        pieces = []
        with pytest.raises(ModelConnectionError, match=r"stalled: nothing for 0.2 s after 1 piece"):
            async for delta in model.stream(USER):
                pieces.append(delta.text)
        await model.aclose()
    assert pieces == ["partial"]
    assert len(server.bodies) == 1  # the caller has a piece already: never asked again


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_hung_server_over_real_http_is_asked_once(transport: str) -> None:
    async with Loopback([[(STALL, b"")]] * 4) as server:
        model = loopback_model(server, transport, timeout=0.2)
        with pytest.raises(ModelTimeoutError, match="did not answer within 0.2 s"):
            await model.complete(USER)
        await model.aclose()
        # On a loaded machine the server may read the body after the client gave up: wait for
        # it (bounded), then long enough that a retry, had there been one, would have come.
        await asyncio.wait_for(server.received.wait(), timeout=10)
        await asyncio.sleep(0.5)
    assert len(server.bodies) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_closed_port_is_unreachable_with_the_hint(transport: str) -> None:
    async with Loopback([]) as server:
        url = server.base_url
    factory = (lambda u: httpx2.AsyncClient()) if transport == "httpx2" else None
    model = OpenAIModel(
        "m",
        EndpointPool(url, http_client_factory=factory),
        retry=RetryPolicy(max_retries=1, base_delay=0.0),
    )
    with pytest.raises(ModelConnectionError, match="agentflow model up"):
        await model.complete(USER)
    await model.aclose()


async def test_a_runs_trace_holds_every_requests_timing_by_node() -> None:
    from agentflow import Agent
    from agentflow.plan import TaskId, TaskNode
    from agentflow.testing import StaticPlanner

    model = model_on(lambda r: json_response(completion("Answer: 4", prompt_tokens=12)))
    plan = [TaskNode(id=TaskId(n), kind="llm", args={"question": "2+2?"}) for n in ("n1", "n2")]
    agent = Agent(model=model, planner=StaticPlanner([plan], answer=lambda state: "4"))
    result = await agent.run("2+2?")
    assert sorted(str(r.node_id) for r in result.trace.requests) == ["n1", "n2"]
    row = result.trace.as_dict()["requests"][0]
    assert row["prompt_tokens"] == 12 and row["attempts"] == 1
    assert 0 <= row["started_at"] and row["queued_s"] <= row["total_s"]


def test_idle_timeout_is_a_connection_option_and_an_environment_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from agentflow.cli._common import CommandContext
    from agentflow.exceptions import UserError

    common = CommandContext()
    parser = argparse.ArgumentParser(parents=[common.connection_options()])
    args = parser.parse_args(["--idle-timeout", "7.5"])
    assert common.settings(args).idle_timeout == 7.5
    monkeypatch.setenv("AGENTFLOW_IDLE_TIMEOUT", "12")
    assert common.settings(parser.parse_args([])).idle_timeout == 12.0
    with pytest.raises(UserError, match="idle timeout must be seconds above 0"):
        common.settings(parser.parse_args(["--idle-timeout", "0"]))
