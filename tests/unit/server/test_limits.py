"""Limits that hold and failures that say so (issue 22, items 1-5), over loopback: agentflow's
server in front of a scripted OpenAI-compatible model server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from agentflow.context import RunLimits
from agentflow.server.service import RunId, RunRecord

from ..scripted_server import Reply, reply_sse, scripted_server
from .conftest import serving
from .model_server import BODY, answer_events, answering, is_answer_call, server_config


def answer_calls(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["path"] == "/chat/completions" and is_answer_call(r)]


def test_the_answer_call_is_capped_inside_the_runs_limits() -> None:
    with scripted_server(answering()) as model:
        with serving(server_config(model.base_url)) as base_url:
            httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
            asked = dict(BODY, max_tokens=10**9)  # a request may not raise the cap...
            httpx2.post(f"{base_url}/chat/completions", json=asked, timeout=30)
            lower = dict(BODY, max_completion_tokens=40)  # ...only lower it
            httpx2.post(f"{base_url}/chat/completions", json=lower, timeout=30)
            small = dict(BODY, agentflow={"max_tokens": 700})  # the run's own tokens bound it
            httpx2.post(f"{base_url}/chat/completions", json=small, timeout=30)
        caps: list[Any] = [call.get("max_tokens") for call in answer_calls(model.requests)]
        assert caps[:3] == [2048, 2048, 40]
        # 700 tokens less the step's 15 and the answer prompt (a cautious third of its characters)
        assert 200 < caps[3] < 700 - 15
        with serving(server_config(model.base_url, answer_max_tokens=64)) as base_url:
            httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
    assert answer_calls(model.requests)[-1]["max_tokens"] == 64


def test_request_options_only_lower_the_operators_caps() -> None:
    greedy = dict(BODY, agentflow={"max_model_calls": 1_000_000, "max_tokens": 1_000_000_000})
    modest = dict(BODY, agentflow={"max_model_calls": 1})
    with scripted_server(answering()) as model:
        with serving(server_config(model.base_url, limits=RunLimits(max_model_calls=1))) as url:
            over_calls = httpx2.post(f"{url}/chat/completions", json=greedy, timeout=30)
        with serving(server_config(model.base_url, limits=RunLimits(max_tokens=50))) as url:
            over_tokens = httpx2.post(f"{url}/chat/completions", json=greedy, timeout=30)
        with serving(server_config(model.base_url)) as url:
            lowered = httpx2.post(f"{url}/chat/completions", json=modest, timeout=30)
            fine = httpx2.post(f"{url}/chat/completions", json=greedy, timeout=30)
    for refused in (over_calls, over_tokens, lowered):
        assert refused.status_code == 500, refused.text
        assert "limit of model calls or tokens" in refused.json()["error"]["message"]
    assert fine.status_code == 200
    assert answer_calls(model.requests)[-1]["max_tokens"] == 2048


async def test_an_abandoned_whole_answer_is_cancelled_while_its_answer_streams_in() -> None:
    """The answer arrives every 20 ms, so the run is never silent for the 1 s poll: the
    disconnect must be noticed anyway, and the request to the model server dropped."""
    started, dropped = threading.Event(), threading.Event()

    def trickle() -> Iterator[bytes]:
        started.set()
        try:
            for index in range(3000):  # a minute of answer
                yield answer_events([f" w{index}"], finish=None, done=False)[0]
                time.sleep(0.02)
            yield from answer_events([])
        finally:
            dropped.set()

    with scripted_server(answering(lambda body: reply_sse(trickle()))) as model:
        with serving(server_config(model.base_url)) as base_url:
            async with httpx2.AsyncClient(timeout=60) as http:
                asking = asyncio.create_task(http.post(f"{base_url}/chat/completions", json=BODY))
                assert await asyncio.to_thread(started.wait, 10), "the answer call never came"
                await asyncio.sleep(0.3)
                asking.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asking
            assert await asyncio.to_thread(dropped.wait, 10), "the run went on for nobody"


def test_a_body_over_the_limit_is_a_413() -> None:
    with scripted_server(answering()) as model:
        with serving(server_config(model.base_url)) as base_url:  # the default limit: 4 MiB
            big = dict(BODY, messages=[{"role": "user", "content": "x" * (5 * 2**20)}])
            declared = httpx2.post(f"{base_url}/chat/completions", json=big, timeout=30)

            def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it comes
                yield json.dumps(big).encode()

            streamed = httpx2.post(f"{base_url}/chat/completions", content=chunked(), timeout=30)
            small = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
    for refused in (declared, streamed):
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200
    assert not answer_calls(model.requests[:-2]), "a refused body reached a run"


def _chat_run_ids(base_url: str, count: int) -> list[str]:
    """The run ids of `count` chats answered one after another."""
    return [
        httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30).json()["run_id"]
        for _ in range(count)
    ]


def test_finished_runs_are_kept_within_a_count() -> None:
    with scripted_server(answering()) as model:
        with serving(server_config(model.base_url, runs_kept=2)) as base_url:
            ids = _chat_run_ids(base_url, 3)
            found = [httpx2.get(f"{base_url}/runs/{run_id}").status_code for run_id in ids]
    assert found == [404, 200, 200]


def test_the_newest_run_is_kept_even_over_the_byte_budget() -> None:
    """`--keep-runs-mb` below one run's size still keeps the newest finished run readable."""
    with scripted_server(answering()) as model:
        with serving(server_config(model.base_url, runs_kept_bytes=100)) as base_url:
            older, newest = (httpx2.get(f"{base_url}/runs/{i}") for i in _chat_run_ids(base_url, 2))
    assert newest.status_code == 200 and newest.json()["status"] == "ok"
    assert older.status_code == 404  # over the budget: only the newest stays


def record(index: int, *, answer: str = "") -> RunRecord:
    run = RunRecord(id=RunId(f"r{index}"), model="m", question="q", answer=answer)
    run.finished = time.time()
    return run


def test_the_run_store_keeps_the_newest_within_bytes_and_ttl() -> None:
    from agentflow.server.runs import RunStore  # here: a module of its own since issue 22

    store: RunStore[RunRecord] = RunStore(ttl=60, max_count=100, max_bytes=3000)
    for index in range(4):
        store.finish(record(index, answer="a" * 1000))
    assert [store.get(RunId(f"r{i}")) is not None for i in range(4)] == [False, False, True, True]
    assert store.bytes <= 3000 and len(store) == 2
    store.ttl = 0.05
    live = RunRecord(id=RunId("live"), model="m", question="q")
    store.add(live)
    time.sleep(0.1)
    assert store.get(RunId("r3")) is None and len(store) == 1  # past the TTL
    assert store.get(RunId("live")) is live  # a running run is found, whatever the bounds


def test_a_length_cut_is_reported_as_length() -> None:
    cut = answering(lambda body: reply_sse(answer_events(["Paris", " is"], finish="length")))
    with scripted_server(cut) as model, serving(server_config(model.base_url)) as base_url:
        api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        whole = api.chat.completions.create(**BODY)
        stream = api.chat.completions.create(**BODY, stream=True)
        reasons = [c.choices[0].finish_reason for c in stream if c.choices]
    assert whole.choices[0].finish_reason == "length"
    assert whole.choices[0].message.content == "Paris is"
    assert reasons[-1] == "length"


@pytest.mark.parametrize(
    "events",
    [
        answer_events([], finish=None),  # [DONE] with no choice: no answer at all
        answer_events([], finish="stop"),  # a proper stream with no text: nothing to show
        answer_events(["Paris is the cap"], finish=None, done=False),  # cut off
        answer_events([" ", "\n\n", "\t"], finish="stop"),  # only whitespace: nothing to show
        answer_events(["Paris is the"], finish="abort"),  # vLLM dropped the request midway
        answer_events(["Paris is the"], finish="error"),  # vLLM failed midway
    ],
    ids=["no-choice", "no-text", "cut-off", "whitespace", "abort", "error"],
)
def test_an_empty_or_cut_off_answer_is_an_error_not_retried(events: list[bytes]) -> None:
    def broken(body: dict[str, Any]) -> Reply:
        return reply_sse(events)

    with scripted_server(answering(broken)) as model:
        with serving(server_config(model.base_url)) as base_url:
            response = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
            with httpx2.stream(
                "POST", f"{base_url}/chat/completions", json=dict(BODY, stream=True)
            ) as streamed:
                frames = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    assert response.status_code == 502, response.text
    assert response.headers["x-should-retry"] == "false"
    assert "error" in json.loads(frames[-1].removeprefix("data: "))
    finishes = [json.loads(f[6:]).get("choices", [{}])[0].get("finish_reason") for f in frames]
    assert "stop" not in finishes


def test_a_run_over_its_time_is_run_once_by_the_openai_client() -> None:
    def slow(body: dict[str, Any]) -> Reply:
        time.sleep(1.0)
        return reply_sse(answer_events(["late"]))

    with scripted_server(answering(slow)) as model:
        with serving(server_config(model.base_url, run_timeout=0.3)) as base_url:
            api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=2)
            with pytest.raises(openai.APIStatusError) as caught:
                api.chat.completions.create(**BODY)
    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-should-retry"] == "false"
    steps = [r for r in model.requests if not is_answer_call(r)]
    assert len(steps) == 1, "the client ran the question again"
