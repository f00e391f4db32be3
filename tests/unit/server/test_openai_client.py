"""The official openai client, sync and async, streaming and not, against uvicorn on loopback."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from agentflow.server.routes import RUN_ID_HEADER

from .conftest import REWRITTEN

MODEL = "agentflow-direct"
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def client(base_url: str, key: str = "secret") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def test_models_are_listed_and_retrieved(base_url: str) -> None:
    with client(base_url) as api:
        assert [m.id for m in api.models.list()] == [MODEL]
        assert api.models.retrieve(MODEL).owned_by == "agentflow"
        with pytest.raises(openai.NotFoundError):
            api.models.retrieve("no-such-agent")


def test_a_whole_answer_with_its_progress_as_reasoning(base_url: str) -> None:
    with client(base_url) as api:
        raw = api.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
        reply = raw.parse()
    message = reply.choices[0].message
    assert message.content == "The answer is Paris as far as I can tell."
    extra = message.model_extra or {}
    assert extra["reasoning"] == extra["reasoning_content"]
    assert "planned answer" in extra["reasoning"] and "done answer" in extra["reasoning"]
    assert "planned" not in (message.content or "")
    assert reply.usage is not None and reply.usage.total_tokens > 0
    run_id = (reply.model_extra or {})["run_id"]
    assert raw.headers[RUN_ID_HEADER] == run_id and reply.id == f"chatcmpl-{run_id}"


def test_a_streamed_answer_comes_in_pieces_after_the_plan(base_url: str) -> None:
    with client(base_url) as api:
        stream = api.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3 and "".join(pieces) == "The answer is Paris as far as I can tell."
    reasoning = [
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in chunks if c.choices
    ]
    progress = [r for r in reasoning if r]
    assert any("running answer" in r for r in progress)
    first_content = next(
        i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content
    )
    last_reasoning = max(i for i, r in enumerate(reasoning) if r)
    assert last_reasoning < first_content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


async def test_the_async_client_streams_and_answers(base_url: str) -> None:
    http = httpx2.AsyncClient(timeout=30)
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="secret", http_client=http, max_retries=0
    ) as api:
        reply = await api.chat.completions.create(model=MODEL, messages=QUESTION)
        stream = await api.chat.completions.create(model=MODEL, messages=QUESTION, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert reply.choices[0].message.content == text == "The answer is Paris as far as I can tell."


def test_a_follow_up_is_rewritten_then_answered_in_context(base_url: str) -> None:
    conversation: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "When were Oxford and Cambridge founded?"},
        {"role": "assistant", "content": "Oxford around 1096, Cambridge in 1209."},
        {"role": "user", "content": "And which of them is older?"},
    ]
    with client(base_url) as api:
        reply = api.chat.completions.create(model=MODEL, messages=conversation)
    reasoning = (reply.choices[0].message.model_extra or {})["reasoning_content"]
    assert f"Question: {REWRITTEN}" in reasoning
    assert reply.usage is not None


def test_unsupported_parameters_are_a_400_naming_them(base_url: str) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    cases: dict[str, dict[str, Any]] = {
        "n": {"n": 2},
        "tools": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        "messages[0].content[1]": {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]
        },
        "temperature": {"temperature": 7},
        "agentflow.planner": {"extra_body": {"agentflow": {"planner": "no-such-planner"}}},
    }
    with client(base_url) as api:
        for param, options in cases.items():
            arguments: dict[str, Any] = {"model": MODEL, "messages": QUESTION, **options}
            with pytest.raises(openai.BadRequestError) as caught:
                api.chat.completions.create(**arguments)
            assert caught.value.param == param, param
            assert caught.value.type == "invalid_request_error"


def test_a_wrong_or_missing_key_is_a_401(base_url: str) -> None:
    with client(base_url, key="wrong") as api, pytest.raises(openai.AuthenticationError) as caught:
        api.models.list()
    assert caught.value.code == "invalid_api_key"
    response = httpx2.post(f"{base_url}/chat/completions", json={"model": MODEL})
    assert response.status_code == 401 and "error" in response.json()


def test_health_needs_no_key_and_a_run_can_be_read_back(base_url: str) -> None:
    assert httpx2.get(base_url.removesuffix("/v1") + "/health").json()["status"] == "ok"
    with client(base_url) as api:
        reply = api.chat.completions.create(model=MODEL, messages=QUESTION)
        run_id = (reply.model_extra or {})["run_id"]
        run = api.get(f"/runs/{run_id}", cast_to=object)
    assert isinstance(run, dict)
    assert run["status"] == "ok" and run["answer"] == reply.choices[0].message.content
    assert [node["id"] for node in run["trace"]["nodes"]] == ["answer"]
