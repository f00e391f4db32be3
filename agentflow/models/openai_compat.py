"""`OpenAIModel`: chat completions over the OpenAI wire format, as vLLM serves it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

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
    StreamDelta,
    Usage,
    split_reasoning,
)

__all__ = ["OpenAIModel", "RetryPolicy"]

T = TypeVar("T")

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
    """The sampling fields both endpoints take (chat and raw-text completions), unset ones out."""
    fields = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
        "seed": s.seed,
        "stop": list(s.stop) if s.stop else None,
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
    """A model behind one or more OpenAI-compatible servers (vLLM, or any other)."""

    def __init__(
        self,
        name: str,
        base_url: str | Sequence[str] | EndpointPool,
        *,
        api_key: str = "EMPTY",
        settings: ModelSettings | None = None,
        timeout: float = 120.0,
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
        self.retry = retry or RetryPolicy()

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

        async def send(endpoint: Endpoint) -> str:
            raw = await endpoint.client.chat.completions.with_raw_response.create(
                **body, timeout=timeout
            )
            return str(raw.http_response.text)

        return parse_chat_completion(await self._with_retries(send, timeout))

    async def stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """Stream the answer. Retries cover opening the stream; a stream that breaks midway
        raises. The endpoint's concurrency slot is held while the stream is opened."""
        effective = self.settings.merged(settings)
        body = self._request_body(messages, effective, json_schema)
        body.update(stream=True, stream_options={"include_usage": True})
        timeout = effective.timeout or self.timeout

        async def send(endpoint: Endpoint) -> tuple[Endpoint, Any]:
            return endpoint, await endpoint.client.chat.completions.create(**body, timeout=timeout)

        endpoint, chunks = await self._with_retries(send, timeout)
        try:
            async for chunk in chunks:
                yield _stream_delta(chunk)
        except openai.APIError as exc:
            raise ModelConnectionError(
                f"the stream from {endpoint.base_url} broke off: {exc}", base_url=endpoint.base_url
            ) from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # not an OpenAI event stream
            raise ModelResponseError(
                f"the stream from {endpoint.base_url} is not OpenAI server-sent events ({exc})",
                body=repr(exc.args[1][:200]) if isinstance(exc, UnicodeDecodeError) else exc.doc,
            ) from exc
        finally:
            await chunks.close()

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
            root = endpoint.base_url.rstrip("/").removesuffix("/v1")
            tokens: Any = await endpoint.client.post(f"{root}/tokenize", body=body, cast_to=object)
            detokenize = {"model": self.name, "tokens": tokens["tokens"]}
            text: Any = await endpoint.client.post(
                f"{root}/detokenize", body=detokenize, cast_to=object
            )
            return str(text["prompt"])

        return await self._with_retries(send, self.timeout)

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        """A raw-text completion (`/v1/completions`) of `prompt` exactly as given, no template."""
        s = self.settings.merged(settings)
        body: dict[str, Any] = {"model": self.name, "prompt": prompt, **_sampling(s)}
        timeout = s.timeout or self.timeout

        async def send(endpoint: Endpoint) -> str:
            raw = await endpoint.client.completions.with_raw_response.create(
                **body, timeout=timeout
            )
            return str(raw.http_response.text)

        return parse_text_completion(await self._with_retries(send, timeout))

    async def _with_retries(
        self, send: Callable[[Endpoint], Awaitable[T]], request_timeout: float
    ) -> T:
        """Run `send` on the pool's endpoints, retrying and failing over per the policy."""
        tried: set[str] = set()
        for attempt in range(self.retry.max_retries + 1):
            async with self.pool.acquire(avoid=tried) as endpoint:
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
        chat_only = {"top_logprobs": s.top_logprobs, "reasoning_effort": s.reasoning_effort}
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
        extra = {
            "priority": s.priority,
            "chat_template_kwargs": s.chat_template_kwargs,
            "thinking_token_budget": s.thinking_token_budget,
        }
        extra = {k: v for k, v in extra.items() if v is not None}
        if extra:
            body["extra_body"] = extra
        return body

    async def _translate_errors(
        self, endpoint: Endpoint, send: Callable[[Endpoint], Awaitable[T]], request_timeout: float
    ) -> T:
        """`send(endpoint)`, with the SDK's errors turned into agentflow's (or `_Retryable`)."""
        try:
            result = await send(endpoint)
        except openai.APITimeoutError as exc:
            timed_out = ModelTimeoutError(
                f"the model server at {endpoint.base_url} did not answer within "
                f"{request_timeout:g} s (raise it with --timeout or ModelSettings.timeout)",
                base_url=endpoint.base_url,
            )
            raise _Retryable(timed_out, backoff=False, elsewhere_only=True) from exc
        except openai.APIConnectionError as exc:
            self.pool.mark_down(endpoint)
            unreachable = ModelConnectionError(
                f"cannot reach the model server at {endpoint.base_url} ({exc}). {START_HINT}",
                base_url=endpoint.base_url,
            )
            raise _Retryable(unreachable, backoff=False) from exc
        except openai.APIStatusError as exc:
            raise await self._status_error(endpoint, exc) from exc
        self.pool.mark_up(endpoint)
        return result

    async def _status_error(self, endpoint: Endpoint, exc: openai.APIStatusError) -> Exception:
        status, body = exc.status_code, exc.response.text
        message = f"the model server at {endpoint.base_url} answered HTTP {status}: {body[:500]}"
        if status == 429 or status >= 500:
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


async def _served_models(endpoint: Endpoint) -> list[str]:
    try:
        page = await endpoint.client.models.list()
    except openai.OpenAIError:
        return []
    return [m.id for m in page.data]


def parse_chat_completion(text: str) -> ModelResponse:
    """Read a chat completion body; anything unusable raises `ModelResponseError` with the body."""
    try:
        data = json.loads(text)
        choices = tuple(_parse_choice(c) for c in data["choices"])
        usage_data = data.get("usage") or {}
        usage = Usage(
            prompt_tokens=int(usage_data.get("prompt_tokens") or 0),
            completion_tokens=int(usage_data.get("completion_tokens") or 0),
            calls=1,
        )
        model = str(data.get("model", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelResponseError(
            f"malformed chat completion from the model server ({type(exc).__name__}: {exc})",
            body=text,
        ) from exc
    if not choices:
        raise ModelResponseError("the model server returned no choices", body=text)
    return ModelResponse(choices=choices, usage=usage, model=model, raw=text)


def parse_text_completion(text: str) -> ModelResponse:
    """Read a `/v1/completions` body: the text as generated, thinking tags and all."""
    try:
        data = json.loads(text)
        choices = tuple(
            Choice(text=str(c["text"]), finish_reason=c.get("finish_reason"))
            for c in data["choices"]
        )
        usage_data = data.get("usage") or {}
        usage = Usage(
            prompt_tokens=int(usage_data.get("prompt_tokens") or 0),
            completion_tokens=int(usage_data.get("completion_tokens") or 0),
            calls=1,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelResponseError(
            f"malformed completion from the model server ({type(exc).__name__}: {exc})", body=text
        ) from exc
    if not choices:
        raise ModelResponseError("the model server returned no choices", body=text)
    return ModelResponse(choices=choices, usage=usage, model=str(data.get("model", "")), raw=text)


def _stream_delta(chunk: Any) -> StreamDelta:
    usage = None
    if chunk.usage is not None:
        usage = Usage(
            prompt_tokens=chunk.usage.prompt_tokens or 0,
            completion_tokens=chunk.usage.completion_tokens or 0,
            calls=1,
        )
    text = ""
    if chunk.choices:
        text = chunk.choices[0].delta.content or ""
    return StreamDelta(text=text, usage=usage)


def _parse_choice(data: Mapping[str, Any]) -> Choice:
    message = data["message"]
    content = message.get("content") or ""
    server_reasoning = message.get("reasoning") or message.get("reasoning_content")
    answer, reasoning = split_reasoning(content, server_reasoning)
    logprobs = None
    if data.get("logprobs") and data["logprobs"].get("content") is not None:
        logprobs = tuple(float(t["logprob"]) for t in data["logprobs"]["content"])
    return Choice(
        text=answer,
        reasoning=reasoning,
        finish_reason=data.get("finish_reason"),
        logprobs=logprobs,
    )
