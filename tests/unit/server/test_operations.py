"""The stream's raw bytes, the queue, disconnects, failures and timeouts, against uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

import httpx2
import openai
import pytest

from agentflow.model import Message, ModelSettings

from .conftest import MARKER, config, fake_reply, serving

MODEL = "agentflow-direct"
BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


def slow_reply(delay: float) -> Any:
    async def reply(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        await asyncio.sleep(delay)
        return fake_reply(messages, settings, schema)

    return reply


def test_the_raw_stream_is_data_lines_keepalives_and_done() -> None:
    with serving(config(slow_reply(0.3), keepalive=0.05)) as base_url:
        body = dict(BODY, stream=True, stream_options={"include_usage": True})
        with httpx2.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            raw = response.read().decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]"
    assert ": keepalive" in blocks
    chunks = [json.loads(b.removeprefix("data: ")) for b in blocks[:-2] if b.startswith("data: ")]
    assert all(b == ": keepalive" or b.startswith("data: {") for b in blocks[:-2])
    assert "event:" not in raw
    assert all(c["object"] == "chat.completion.chunk" and "choices" in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    reasoning = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    progress = [d for d in reasoning if "reasoning" in d]
    assert progress and all(d["reasoning"] == d["reasoning_content"] for d in progress)
    assert all("content" not in d for d in progress)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_a_full_queue_is_a_429_with_retry_after() -> None:
    release = threading.Event()

    async def blocked(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        await asyncio.to_thread(release.wait, 10)
        return fake_reply(messages, settings, schema)

    with serving(config(blocked, max_runs=1, max_queue=1, retry_after=7)) as base_url:
        api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        streams = [api.chat.completions.create(**BODY, stream=True) for _ in range(2)]
        with pytest.raises(openai.RateLimitError) as caught:
            api.chat.completions.create(**BODY)
        release.set()
        answers = [
            "".join(c.choices[0].delta.content or "" for c in s if c.choices) for s in streams
        ]
        metrics = httpx2.get(base_url.removesuffix("/v1") + "/metrics").text
    assert 'agentflow_rejected_requests_total{status="429"} 1.0' in metrics
    assert 'agentflow_runs_total{agent="agentflow-direct",status="ok"} 2.0' in metrics
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "queue_full"
    assert all(a.startswith("The answer is Paris") for a in answers)


def test_a_client_that_disconnects_cancels_its_run() -> None:
    cancelled = threading.Event()

    async def endless(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    with serving(config(endless, keepalive=0.05)) as base_url:
        body = dict(BODY, stream=True)
        with httpx2.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            run_id = response.headers["x-agentflow-run-id"]
            for line in response.iter_lines():
                if "running answer" in line:
                    break
        assert cancelled.wait(timeout=10), "the model call was not cancelled"
        run = httpx2.get(f"{base_url}/runs/{run_id}").json()
    assert run["status"] == "cancelled"


def test_an_internal_error_is_a_short_500_with_the_run_id() -> None:
    def broken(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        if "Proposed answer:" in str(messages[-1]["content"]):
            raise RuntimeError("secret internals")
        return fake_reply(messages, settings, schema)

    with serving(config(broken)) as base_url:
        response = httpx2.post(f"{base_url}/chat/completions", json=BODY)
        api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIError) as caught:
            list(api.chat.completions.create(**BODY, stream=True))
    error = response.json()["error"]
    assert response.status_code == 500 and error["message"] == "internal error"
    assert response.headers["x-should-retry"] == "false"  # not three runs from the openai client
    assert error["run_id"] == response.headers["x-agentflow-run-id"]
    assert "Traceback" not in response.text and "secret" not in response.text
    assert caught.value.message == "internal error"


def test_a_run_over_its_time_limit_is_stopped() -> None:
    with serving(config(slow_reply(5), run_timeout=0.2)) as base_url:
        response = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=10)
    assert response.status_code == 504
    assert "limit of 0.2 s" in response.json()["error"]["message"]


async def test_fifty_concurrent_streamed_chats_each_get_their_own_answer() -> None:
    with serving(config(slow_reply(0.05), max_runs=50)) as base_url:
        http = httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=60))
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key="x", http_client=http, max_retries=0
        ) as api:

            async def chat(index: int) -> str:
                question = f"What is the capital of France? marker-{index}"
                stream = await api.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": question}], stream=True
                )
                pieces = [c.choices[0].delta.content async for c in stream if c.choices]
                return "".join(p or "" for p in pieces)

            answers = await asyncio.gather(*(chat(i) for i in range(50)))
    for index, answer in enumerate(answers):
        assert answer.endswith("as far as I can tell."), answer
        assert MARKER.findall(answer) == [f"marker-{index}"]


async def test_a_client_that_gives_up_on_a_whole_answer_cancels_its_run() -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def endless(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    with serving(config(endless)) as base_url:
        async with httpx2.AsyncClient(timeout=30) as http:
            asking = asyncio.create_task(http.post(f"{base_url}/chat/completions", json=BODY))
            # Give up once the run is under way (a client timeout could run out before the
            # server had even started it on a loaded machine, and nothing would be cancelled).
            assert await asyncio.to_thread(started.wait, 10), "the run never started"
            asking.cancel()  # the client hangs up, still waiting for the whole answer
            with pytest.raises(asyncio.CancelledError):
                await asking
        assert await asyncio.to_thread(cancelled.wait, 10), "the run went on for nobody"


def test_cors_answers_the_configured_origin_only() -> None:
    with serving(config(cors_origins=("http://chat.example",))) as base_url:
        asked = {"Origin": "http://chat.example", "Access-Control-Request-Method": "POST"}
        allowed = httpx2.options(f"{base_url}/chat/completions", headers=asked)
        other = dict(asked, Origin="http://elsewhere.example")
        refused = httpx2.options(f"{base_url}/chat/completions", headers=other)
    assert allowed.headers["access-control-allow-origin"] == "http://chat.example"
    assert "access-control-allow-origin" not in refused.headers


def test_unknown_fields_are_accepted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with serving(config()) as base_url:
        body = dict(BODY, frequency_penalty=0.5, user="someone")
        response = httpx2.post(f"{base_url}/chat/completions", json=body)
    assert response.status_code == 200
    assert "ignored request fields: frequency_penalty, user" in caplog.text


def test_every_request_gets_an_access_log_line_with_its_run_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="agentflow.server.access"), serving(config()) as url:
        response = httpx2.post(f"{url}/chat/completions", json=dict(BODY, stream=True))
        httpx2.get(f"{url}/models")
    run_id = response.headers["x-agentflow-run-id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "agentflow.server.access"]
    patterns = [
        rf"POST /v1/chat/completions 200 \d+ ms run={run_id}",
        r"GET /v1/models 200 \d+ ms run=-",
    ]
    assert all(any(re.fullmatch(p, line) for line in lines) for p in patterns), lines


def test_sampling_parameters_apply_to_the_answer_call_only() -> None:
    seen: dict[str, ModelSettings] = {}

    def reply(messages: Sequence[Message], settings: ModelSettings, schema: Any) -> str:
        role = "answer" if "Proposed answer:" in str(messages[-1]["content"]) else "step"
        seen[role] = settings
        return fake_reply(messages, settings, schema)

    with serving(config(reply)) as base_url:
        api = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        api.chat.completions.create(
            **BODY, temperature=0.7, max_completion_tokens=33, seed=5, stop=["END"], top_p=0.9
        )
    answer = seen["answer"]
    assert (answer.temperature, answer.max_tokens, answer.seed) == (0.7, 33, 5)
    assert (answer.stop, answer.top_p) == (("END",), 0.9)
    assert seen["step"].max_tokens != 33 and seen["step"].seed is None
