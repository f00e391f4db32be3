from __future__ import annotations

import json

import httpx2
import pytest
from pydantic import BaseModel

from agentflow.exceptions import (
    ModelConnectionError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelResponseError,
    ModelTimeoutError,
)
from agentflow.model import ModelSettings, Usage, split_reasoning

from .wire import completion, json_response, model_on

USER = [{"role": "user", "content": "hi"}]


class City(BaseModel):
    name: str
    population: int


async def test_plain_completion_sends_settings_and_reads_usage() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return json_response(completion("Paris", n=2, logprobs=[-0.1, -0.2]))

    model = model_on(handler)
    settings = ModelSettings(
        temperature=0.3,
        top_p=0.9,
        max_tokens=20,
        n=2,
        seed=7,
        stop=("\n",),
        logprobs=True,
        top_logprobs=2,
        priority=-1,
        chat_template_kwargs={"enable_thinking": False},
    )
    response = await model.complete(USER, settings)

    body = seen[0]
    assert body["model"] == "m"
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "n", "seed")} == {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 20,
        "n": 2,
        "seed": 7,
    }
    assert body["stop"] == ["\n"] and body["logprobs"] is True and body["top_logprobs"] == 2
    # vLLM extras travel in the body itself, next to the standard fields.
    assert body["priority"] == -1
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert [c.text for c in response.choices] == ["Paris", "Paris"]
    assert response.choices[0].logprobs == (-0.1, -0.2)
    assert response.usage == Usage(prompt_tokens=10, completion_tokens=5, calls=1)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_retries_on_429_and_5xx_then_succeeds(status: int) -> None:
    attempts = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        if len(attempts) < 3:
            return json_response({"error": {"message": "busy"}}, status)
        return json_response(completion("ok"))

    response = await model_on(handler).complete(USER)
    assert response.text == "ok"
    assert len(attempts) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 408, 409, 422, 501])
async def test_never_retries_other_4xx_nor_not_implemented(status: int) -> None:
    attempts = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        return json_response({"error": {"message": "bad request"}}, status)

    with pytest.raises(ModelHTTPError) as caught:
        await model_on(handler).complete(USER)
    assert caught.value.status_code == status
    assert len(attempts) == 1


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    attempts = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(1)
        return json_response({"error": {"message": "down"}}, 503)

    with pytest.raises(ModelHTTPError, match="503"):
        await model_on(handler, retries=2).complete(USER)
    assert len(attempts) == 3


async def test_unknown_model_lists_what_the_server_serves() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/models"):
            return json_response(
                {"object": "list", "data": [{"id": "real-model", "object": "model"}]}
            )
        return json_response({"error": {"message": "The model `m` does not exist."}}, 404)

    with pytest.raises(ModelNotFoundError, match="real-model") as caught:
        await model_on(handler).complete(USER)
    assert caught.value.served == ["real-model"]


async def test_unreachable_server_names_the_url_and_suggests_model_up() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    with pytest.raises(ModelConnectionError) as caught:
        await model_on(handler, retries=1).complete(USER)
    assert "http://server-a/v1" in str(caught.value)
    assert "agentflow model up" in str(caught.value)


async def test_timeout_is_a_clear_error() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    with pytest.raises(ModelTimeoutError, match="did not answer within 5 s"):
        await model_on(handler, retries=0).complete(USER)


async def test_per_call_timeout_reaches_the_transport() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.extensions["timeout"])
        return json_response(completion())

    await model_on(handler).complete(USER, ModelSettings(timeout=2.5))
    assert seen[0]["read"] == 2.5


async def test_fails_over_to_the_next_endpoint_and_remembers_the_dead_one() -> None:
    calls = {"a": 0, "b": 0}

    def dead(request: httpx2.Request) -> httpx2.Response:
        calls["a"] += 1
        raise httpx2.ConnectError("refused", request=request)

    def alive(request: httpx2.Request) -> httpx2.Response:
        calls["b"] += 1
        return json_response(completion("from b"))

    model = model_on({"http://a/v1": dead, "http://b/v1": alive})
    assert (await model.complete(USER)).text == "from b"
    assert (await model.complete(USER)).text == "from b"
    assert calls == {"a": 1, "b": 2}  # a is cooling down after its failure: not tried again


def test_pool_prefers_the_endpoint_with_fewest_outstanding_requests() -> None:
    model = model_on(
        {"http://a/v1": lambda r: json_response({}), "http://b/v1": lambda r: json_response({})}
    )
    a, b = model.pool.endpoints
    a.outstanding = 3
    assert model.pool.choose() is b
    b.outstanding = 5
    assert model.pool.choose() is a


async def test_structured_output_sends_the_schema_and_parses() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return json_response(completion('{"name": "Paris", "population": 2100000}'))

    city, response = await model_on(handler).complete_structured(USER, City)
    assert city == City(name="Paris", population=2100000)
    schema = seen[0]["response_format"]
    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["schema"]["required"] == ["name", "population"]


async def test_structured_output_off_schema_carries_the_raw_text() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return json_response(completion('{"name": "Paris"}'))

    with pytest.raises(ModelResponseError) as caught:
        await model_on(handler).complete_structured(USER, City)
    assert caught.value.body == '{"name": "Paris"}'


async def test_json_is_never_parsed_out_of_thinking() -> None:
    content = (
        '<think>maybe {"name": "Rome", "population": 1}</think>{"name": "Paris", "population": 2}'
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        return json_response(completion(content))

    city, response = await model_on(handler).complete_structured(USER, City)
    assert city.name == "Paris"
    assert response.choices[0].reasoning == 'maybe {"name": "Rome", "population": 1}'


async def test_reasoning_field_is_kept_apart_from_the_answer() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return json_response(completion("42", reasoning="six times seven"))

    response = await model_on(handler).complete(USER)
    assert response.text == "42"
    assert response.choices[0].reasoning == "six times seven"


@pytest.mark.parametrize(
    ("content", "answer", "reasoning"),
    [
        ("<think>a</think>b", "b", "a"),
        ("a</think>b", "b", "a"),  # opening tag was in the prompt (Qwen3 template)
        ("<think>cut off by max_tokens", "", "cut off by max_tokens"),
        ("plain", "plain", None),
        ("<think>x</think>y<think>z</think>w", "yw", "x\n\nz"),
    ],
)
def test_split_reasoning(content: str, answer: str, reasoning: str | None) -> None:
    assert split_reasoning(content) == (answer, reasoning)


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b'{"choices": "nope"}', b"{}"])
async def test_malformed_response_carries_the_raw_body(body: bytes) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body)

    with pytest.raises(ModelResponseError) as caught:
        await model_on(handler).complete(USER)
    assert caught.value.body == body.decode()


def test_usage_sums() -> None:
    total = Usage(prompt_tokens=3, completion_tokens=4, calls=1) + Usage(
        prompt_tokens=10, completion_tokens=1, calls=2
    )
    assert total == Usage(prompt_tokens=13, completion_tokens=5, calls=3)
    assert total.as_dict() == {
        "prompt_tokens": 13,
        "completion_tokens": 5,
        "total_tokens": 18,
        "model_calls": 3,
    }


async def test_throttle_caps_concurrent_requests_per_endpoint() -> None:
    import asyncio

    from agentflow.endpoints import EndpointPool
    from agentflow.models import OpenAIModel

    in_flight = 0
    peak = 0
    release = asyncio.Event()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak >= 2:
            release.set()
        await release.wait()
        in_flight -= 1
        return json_response(completion())

    pool = EndpointPool(
        "http://a/v1",
        max_concurrency=2,
        http_client_factory=lambda url: httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    model = OpenAIModel("m", pool)
    await asyncio.gather(*(model.complete(USER) for _ in range(6)))
    assert peak == 2


async def test_stream_yields_pieces_and_usage() -> None:
    def chunk(content: str | None, usage: dict[str, int] | None = None) -> str:
        choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
        data = {
            "id": "s",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": choices,
            "usage": usage,
        }
        return f"data: {json.dumps(data)}\n\n"

    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        body = (
            chunk('{"a"')
            + chunk(": 1}")
            + chunk(None, {"prompt_tokens": 3, "completion_tokens": 2})
        )
        return httpx2.Response(
            200,
            content=(body + "data: [DONE]\n\n").encode(),
            headers={"content-type": "text/event-stream"},
        )

    deltas = [d async for d in model_on(handler).stream(USER)]
    assert "".join(d.text for d in deltas) == '{"a": 1}'
    assert deltas[-1].usage == Usage(prompt_tokens=3, completion_tokens=2, calls=1)
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}


async def test_overrides_win_over_each_calls_settings() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return json_response(completion())

    model = model_on(handler).with_overrides(ModelSettings(temperature=0.7, seed=3))
    await model.complete(USER, ModelSettings(temperature=0.0, max_tokens=9))
    assert (seen[0]["temperature"], seen[0]["seed"], seen[0]["max_tokens"]) == (0.7, 3, 9)


async def test_a_hung_server_is_asked_once_so_giving_up_takes_one_timeout() -> None:
    calls = []

    def hung(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        raise httpx2.ReadTimeout("slow", request=request)

    with pytest.raises(ModelTimeoutError):
        await model_on(hung, retries=3).complete(USER)
    assert len(calls) == 1  # was 4 attempts: 4 x the timeout before giving up


async def test_a_timeout_fails_over_to_another_server() -> None:
    def hung(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    def fine(request: httpx2.Request) -> httpx2.Response:
        return json_response(completion())

    model = model_on({"http://server-a/v1": hung, "http://server-b/v1": fine}, retries=3)
    assert (await model.complete(USER)).text


@pytest.mark.parametrize(
    "body", [b"data: \xff\xfe garbage \xc3(\n\n", b"data: {not json\n\n"], ids=["bytes", "json"]
)
async def test_a_stream_that_is_not_server_sent_events_is_a_clear_error(body: bytes) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with pytest.raises(ModelResponseError, match="is not OpenAI server-sent events"):
        async for _ in model_on(handler).stream(USER):
            pass
