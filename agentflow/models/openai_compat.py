"""`OpenAIModel`: chat completions over the OpenAI wire format, as vLLM serves it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import openai

from agentflow._transport import TransportTimeout, TransportUnreachable
from agentflow.endpoints import Endpoint, EndpointPool
from agentflow.exceptions import (
    ModelConnectionError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelResponseError,
    ModelTimeoutError,
)
from agentflow.model import (
    Choice,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    RequestTiming,
    StreamDelta,
    Usage,
    split_reasoning,
)
from agentflow.models._stream import OpenStream, read_usage
from agentflow.scheduling import current_priority
from agentflow.settings import Settings

__all__ = ["OpenAIModel", "RetryPolicy"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

START_HINT = (
    "Start the embedded model with `agentflow model up`, or point --base-url / "
    "AGENTFLOW_BASE_URL at a running OpenAI-compatible server."
)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for connection errors, 429 and 5xx only."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def _sampling(s: ModelSettings) -> dict[str, Any]:
    """The fields both endpoints take (chat and raw-text completions), unset ones out. The
    priority is the call's own, else the one the executor set for the node making the call; 0
    (the server's default) is left out, so servers without priority scheduling never see it."""
    fields = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "repetition_penalty": s.repetition_penalty,
        "max_tokens": s.max_tokens,
        "seed": s.request_seed,
        "stop": list(s.stop) if s.stop else None,
        "priority": (s.priority if s.priority is not None else current_priority()) or None,
    }
    return {k: v for k, v in fields.items() if v is not None}


class _Retryable(Exception):
    """An attempt failed in a way worth another try; `error` is what to raise if none is left.

    `elsewhere_only`: worth another try on another server only. A server that let a request
    time out is hung or overloaded; asking it again costs another full timeout, so a hung
    single server gives up after one `timeout`, predictably."""

    def __init__(self, error: Exception, *, backoff: bool, elsewhere_only: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.backoff = backoff
        self.elsewhere_only = elsewhere_only


class OpenAIModel(Model):
    """A model behind one or more OpenAI-compatible servers (vLLM, or any other).

    The request path is lean: the body is posted as JSON through the endpoint's transport
    (aiohttp when installed) and only the fields agentflow reads are parsed; the openai SDK's
    per-call machinery costs several times more CPU than that. Every response carries a
    `RequestTiming`.
    """

    def __init__(
        self,
        name: str,
        base_url: str | Sequence[str] | EndpointPool,
        *,
        api_key: str = "EMPTY",
        settings: ModelSettings | None = None,
        timeout: float = 120.0,
        idle_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 64,
        rate_limit: int | None = None,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.pool = (
            base_url
            if isinstance(base_url, EndpointPool)
            else EndpointPool(
                base_url, api_key=api_key, max_concurrency=max_concurrency, rate_limit=rate_limit
            )
        )
        self.settings = settings or ModelSettings()
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        """Seconds a stream may send no byte before it counts as a dead connection; `None`:
        only `timeout` bounds each wait, and a stream that reaches it is not asked again."""
        self.retry = retry or RetryPolicy()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        base_url: str | Sequence[str] | None = None,
        *,
        name: str | None = None,
    ) -> OpenAIModel:
        """The model `settings` name (or `name`) on `base_url` (default: the settings' own),
        with the settings' API key and timeouts: what every command builds its model from."""
        return cls(
            name or settings.model,
            base_url or settings.base_url,
            api_key=settings.api_key,
            timeout=settings.timeout,
            idle_timeout=settings.idle_timeout,
        )

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        effective = self.settings.merged(settings)
        body = self._request_body(messages, effective, json_schema)
        timeout = effective.timeout or self.timeout
        tally = _Tally()

        async def send(endpoint: Endpoint) -> bytes:
            return await self._post(endpoint, endpoint.chat_url, body, timeout)

        response, cached = read_chat_completion(await self._with_retries(send, timeout, tally))
        return _timed(response, tally.timing(response.usage, cached))

    async def stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """Stream the answer. Retries cover the stream up to its first piece: opening it, and
        (with an idle timeout) a stall before anything reached the caller. The endpoint's
        concurrency slot is held until then. A stream that breaks or stalls later raises. The
        last delta carries the usage and the request's timing."""
        effective = self.settings.merged(settings)
        body = self._request_body(messages, effective, json_schema)
        body.update(stream=True, stream_options={"include_usage": True})
        timeout = effective.timeout or self.timeout
        idle = effective.idle_timeout or self.idle_timeout
        tally = _Tally()

        async def send(endpoint: Endpoint) -> OpenStream:
            return await self._open_stream(endpoint, body, timeout, idle)

        opened = await self._with_retries(send, timeout, tally)
        ttft = time.perf_counter() - tally.started
        timed = False
        try:
            async with contextlib.aclosing(opened.rest()) as deltas:
                async for delta, cached in deltas:
                    if delta.usage is not None:
                        delta = replace(delta, timing=tally.timing(delta.usage, cached, ttft))
                        timed = True
                    yield delta
        finally:
            await opened.response.aclose()
        if not timed:  # a server that sent no usage: the timing still ends the stream
            yield StreamDelta(timing=tally.timing(Usage(calls=1), None, ttft))

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        """The raw prompt the server's chat template makes of `messages` (vLLM's `/tokenize`,
        then `/detokenize`): what budget forcing continues through `/v1/completions`."""
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": True,
        }
        if chat_template_kwargs:
            body["chat_template_kwargs"] = dict(chat_template_kwargs)

        async def send(endpoint: Endpoint) -> str:
            root = endpoint.base_url.removesuffix("/v1")
            tokens = _json_object(await self._post(endpoint, f"{root}/tokenize", body, timeout))
            detokenize = {"model": self.name, "tokens": tokens.get("tokens")}
            text = _json_object(
                await self._post(endpoint, f"{root}/detokenize", detokenize, timeout)
            )
            return str(text.get("prompt", ""))

        timeout = self.timeout
        return await self._with_retries(send, timeout, _Tally())

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        """A raw-text completion (`/v1/completions`) of `prompt` exactly as given, no template."""
        s = self.settings.merged(settings)
        body: dict[str, Any] = {"model": self.name, "prompt": prompt, **_sampling(s)}
        timeout = s.timeout or self.timeout
        tally = _Tally()

        async def send(endpoint: Endpoint) -> bytes:
            return await self._post(endpoint, f"{endpoint.base_url}/completions", body, timeout)

        response, cached = read_text_completion(await self._with_retries(send, timeout, tally))
        return _timed(response, tally.timing(response.usage, cached))

    async def _with_retries(
        self, send: Callable[[Endpoint], Awaitable[T]], request_timeout: float, tally: _Tally
    ) -> T:
        """Run `send` on the pool's endpoints, retrying and failing over per the policy."""
        tried: set[str] = set()
        for attempt in range(self.retry.max_retries + 1):
            waiting = time.perf_counter()
            async with self.pool.acquire(avoid=tried) as endpoint:
                tally.queued(time.perf_counter() - waiting, endpoint.base_url)
                try:
                    return await self._translate_errors(endpoint, send, request_timeout)
                except _Retryable as failure:
                    tried.add(endpoint.base_url)
                    failover_left = any(url not in tried for url in self.pool.base_urls)
                    last_try = attempt == self.retry.max_retries
                    if last_try or (failure.elsewhere_only and not failover_left):
                        raise failure.error from failure
                    last_backoff = failure.backoff
            if last_backoff or not failover_left:
                await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def aclose(self) -> None:
        await self.pool.aclose()

    def _request_body(
        self,
        messages: Sequence[Message],
        s: ModelSettings,
        json_schema: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [dict(m) for m in messages],
            **_sampling(s),
        }
        chat_only = {
            "top_logprobs": s.top_logprobs,
            "reasoning_effort": s.reasoning_effort,
            "chat_template_kwargs": s.chat_template_kwargs,
            "thinking_token_budget": s.thinking_token_budget,
        }
        body.update({k: v for k, v in chat_only.items() if v is not None})
        if s.n != 1:
            body["n"] = s.n
        if s.logprobs:
            body["logprobs"] = True
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": dict(json_schema), "strict": True},
            }
        return body

    async def _post(
        self, endpoint: Endpoint, url: str, body: Mapping[str, Any], time_limit: float
    ) -> bytes:
        """The 2xx body of `url`; another status raises (retryable or not, per the status)."""
        deadline = asyncio.get_running_loop().time() + time_limit
        payload, with_priority = _encode(body, endpoint)
        reply = await endpoint.transport.post(url, payload, time_limit)
        if reply.status == 400 and with_priority and _refuses_priority(endpoint, reply.body):
            resend = _encode(body, endpoint)[0]  # within the same time limit
            reply = await endpoint.transport.post(url, resend, _left(deadline))
        if not 200 <= reply.status < 300:
            raise await self._status_error(endpoint, reply.status, reply.body)
        return reply.body

    async def _open_stream(
        self, endpoint: Endpoint, body: Mapping[str, Any], time_limit: float, idle: float | None
    ) -> OpenStream:
        """The stream, open and read up to its first piece (or its end). `time_limit` bounds the
        whole stream: the transport stops it at the deadline, however the bytes trickle."""
        deadline = asyncio.get_running_loop().time() + time_limit
        payload, with_priority = _encode(body, endpoint)
        limit = time_limit
        while True:
            response = await endpoint.transport.open_stream(
                endpoint.chat_url, payload, limit, idle or time_limit
            )
            if 200 <= response.status < 300:
                break
            try:
                error = await response.read()
            finally:
                await response.aclose()
            if not (
                response.status == 400 and with_priority and _refuses_priority(endpoint, error)
            ):
                raise await self._status_error(endpoint, response.status, error)
            payload, with_priority = _encode(body, endpoint)
            limit = _left(deadline)  # a resend without the priority: within the same limit
        opened = OpenStream(
            endpoint, response, idle or time_limit, time_limit=time_limit, deadline=deadline
        )
        try:
            await opened.first()
        except TransportTimeout as exc:
            await response.aclose()
            if idle is None or opened.past_deadline():
                raise  # the request timeout: a hung server, as for any request
            self.pool.mark_down(endpoint)
            stalled = ModelConnectionError(
                f"the stream from {endpoint.base_url} sent nothing for {idle:g} s "
                "(--idle-timeout): taken for a dead connection",
                base_url=endpoint.base_url,
            )
            raise _Retryable(stalled, backoff=False) from exc
        except BaseException:
            await response.aclose()
            raise
        return opened

    async def _translate_errors(
        self, endpoint: Endpoint, send: Callable[[Endpoint], Awaitable[T]], request_timeout: float
    ) -> T:
        """`send(endpoint)`, with the transport's errors turned into agentflow's (or
        `_Retryable`)."""
        try:
            result = await send(endpoint)
        except TransportTimeout as exc:
            timed_out = ModelTimeoutError(
                f"the model server at {endpoint.base_url} did not answer within "
                f"{request_timeout:g} s (raise it with --timeout or ModelSettings.timeout)",
                base_url=endpoint.base_url,
            )
            raise _Retryable(timed_out, backoff=False, elsewhere_only=True) from exc
        except TransportUnreachable as exc:
            self.pool.mark_down(endpoint)
            unreachable = ModelConnectionError(
                f"cannot reach the model server at {endpoint.base_url} ({exc}). {START_HINT}",
                base_url=endpoint.base_url,
            )
            raise _Retryable(unreachable, backoff=False) from exc
        self.pool.mark_up(endpoint)
        return result

    async def _status_error(self, endpoint: Endpoint, status: int, raw: bytes) -> Exception:
        body = raw.decode(errors="replace")
        message = f"the model server at {endpoint.base_url} answered HTTP {status}: {body[:500]}"
        # 501 Not Implemented is the server saying it has no such route or feature (a server
        # without vLLM's /tokenize): asking again cannot help, and the caller may fall back.
        if status == 429 or (status >= 500 and status != 501):
            return _Retryable(ModelHTTPError(message, status_code=status, body=body), backoff=True)
        if status == 404 and "model" in body.lower():
            served = await _served_models(endpoint)
            return ModelNotFoundError(
                f"the server at {endpoint.base_url} does not serve model {self.name!r}; "
                f"it serves: {', '.join(served) or '(none listed)'}. Pass one with --model "
                "or AGENTFLOW_MODEL.",
                status_code=status,
                body=body,
                served=served,
            )
        return ModelHTTPError(message, status_code=status, body=body)


def read_chat_completion(text: str | bytes) -> tuple[ModelResponse, int | None]:
    """A chat completion body, and the prompt tokens the server found cached if it says;
    anything unusable raises `ModelResponseError` with the body."""
    try:
        data = json.loads(text)
        choices = tuple(_parse_choice(c) for c in data["choices"])
        usage, cached = read_usage(data.get("usage"))
        model = str(data.get("model", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelResponseError(
            f"malformed chat completion from the model server ({type(exc).__name__}: {exc})",
            body=_text(text),
        ) from exc
    if not choices:
        raise ModelResponseError("the model server returned no choices", body=_text(text))
    return ModelResponse(choices=choices, usage=usage, model=model, raw=_text(text)), cached


def read_text_completion(text: str | bytes) -> tuple[ModelResponse, int | None]:
    """A `/v1/completions` body (the text as generated, thinking tags and all), and the prompt
    tokens the server found cached if it says."""
    try:
        data = json.loads(text)
        choices = tuple(
            Choice(text=str(c["text"]), finish_reason=c.get("finish_reason"))
            for c in data["choices"]
        )
        usage, cached = read_usage(data.get("usage"))
        model = str(data.get("model", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelResponseError(
            f"malformed completion from the model server ({type(exc).__name__}: {exc})",
            body=_text(text),
        ) from exc
    if not choices:
        raise ModelResponseError("the model server returned no choices", body=_text(text))
    return ModelResponse(choices=choices, usage=usage, model=model, raw=_text(text)), cached


def _timed(response: ModelResponse, timing: RequestTiming) -> ModelResponse:
    """`response` with `timing` (`dataclasses.replace` costs four times as much per call)."""
    return ModelResponse(
        choices=response.choices,
        usage=response.usage,
        model=response.model,
        raw=response.raw,
        timing=timing,
    )


def _text(body: str | bytes) -> str:
    return body if isinstance(body, str) else body.decode(errors="replace")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ModelResponseError(
            f"the model server sent no JSON ({exc})", body=_text(body)
        ) from exc
    if not isinstance(data, dict):
        raise ModelResponseError("the model server sent no JSON object", body=_text(body))
    return data


def _parse_choice(data: Mapping[str, Any]) -> Choice:
    message = data["message"]
    content = message.get("content") or ""
    server_reasoning = message.get("reasoning") or message.get("reasoning_content")
    if "think>" in content:  # `<think>` or `</think>`: thinking left in the text
        answer, reasoning = split_reasoning(content, server_reasoning)
    else:  # what `split_reasoning` gives without tags, for a fraction of its regex work
        answer, reasoning = content.strip(), server_reasoning or None
    logprobs = None
    if data.get("logprobs") and data["logprobs"].get("content") is not None:
        logprobs = tuple(float(t["logprob"]) for t in data["logprobs"]["content"])
    return Choice(
        text=answer,
        reasoning=reasoning,
        finish_reason=data.get("finish_reason"),
        logprobs=logprobs,
    )


# --- the request path ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Tally:
    """One call's clock: started, time spent waiting for the pool, attempts, who answered."""

    started: float = field(default_factory=time.perf_counter)
    queued_s: float = 0.0
    attempts: int = 0
    endpoint: str = ""

    def queued(self, seconds: float, endpoint: str) -> None:
        self.queued_s += seconds
        self.attempts += 1
        self.endpoint = endpoint

    def timing(
        self, usage: Usage, cached: int | None, ttft_s: float | None = None
    ) -> RequestTiming:
        return RequestTiming(
            total_s=time.perf_counter() - self.started,
            queued_s=self.queued_s,
            ttft_s=ttft_s,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=cached,
            attempts=self.attempts,
            endpoint=self.endpoint,
        )


def _encode(body: Mapping[str, Any], endpoint: Endpoint) -> tuple[bytes, bool]:
    """The request as JSON, and whether it carries `priority` (never for a server that refused
    it before)."""
    if "priority" in body and not endpoint.takes_priority:
        body = {k: v for k, v in body.items() if k != "priority"}
    return json.dumps(body).encode(), "priority" in body


def _left(deadline: float) -> float:
    """Seconds until `deadline` (the loop's clock), never 0: a transport reads 0 as no limit."""
    return max(deadline - asyncio.get_running_loop().time(), 0.001)


def _refuses_priority(endpoint: Endpoint, error: bytes) -> bool:
    """Whether a 400 to a request that carried a priority is the server refusing that field
    (vLLM without `--scheduling-policy priority`: "Got priority 3 but Priority scheduling is not
    enabled."); if so the endpoint is remembered as one that takes none, and the request can be
    resent. Decided by what this request sent, not by the endpoint's flag: requests sent at the
    same time all get the refusal, and each must be resent, not only the first."""
    if b"priority" not in error.lower():
        return False
    endpoint.takes_priority = False
    logger.debug("%s refuses request priorities: sending none from now on", endpoint.base_url)
    return True


async def _served_models(endpoint: Endpoint) -> list[str]:
    try:
        page = await endpoint.client.models.list()
    except openai.OpenAIError:
        return []
    return [m.id for m in page.data]
