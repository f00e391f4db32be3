"""The model abstraction: what agentflow asks of any chat model, and what it gets back.

`Model` is the extension point (one abstract method, `complete`); `OpenAIModel` in
`agentflow.models` speaks the OpenAI wire format to vLLM, and `agentflow.testing` has fakes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentflow.exceptions import ModelOutputError

__all__ = [
    "Choice",
    "Message",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "RequestTiming",
    "StreamDelta",
    "Usage",
    "sample_seed",
    "split_reasoning",
]

Message = Mapping[str, Any]
"""One chat message in the OpenAI shape: `{"role": ..., "content": ...}`."""

SchemaT = TypeVar("SchemaT", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Sampling and transport settings for one call. `None` means the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int = 1
    seed: int | None = None
    """The base seed. An eval's override replaces every call's own (`Model.with_overrides`);
    samples of one vote keep apart through `sample`, which no override touches."""
    sample: int | None = None
    """Which sample of several of one request this is (a vote's, an estimator's). With a
    `seed`, the request goes out with `request_seed` (distinct per sample, reproducible);
    without one, it is ignored (the server samples at random anyway)."""
    stop: tuple[str, ...] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    repetition_penalty: float | None = None
    """vLLM's penalty on tokens already seen (1.0 is none): the guard against a reply that loops."""
    priority: int | None = None
    """vLLM request priority (lower is served first; needs `--scheduling-policy priority`)."""
    chat_template_kwargs: Mapping[str, Any] | None = None
    """vLLM pass-through, e.g. `{"enable_thinking": True}` for Qwen3."""
    reasoning_effort: str | None = None
    """`low` / `medium` / `high` for models whose thinking is switched that way (gpt-oss)."""
    thinking_token_budget: int | None = None
    """Cap on thinking tokens, for vLLM servers with a reasoning parser that accept it."""
    timeout: float | None = None
    """Seconds for one HTTP attempt; `None` keeps the model's default."""
    idle_timeout: float | None = None
    """Seconds a streamed answer may send no byte before its connection counts as dead (retried
    if nothing reached the caller yet); `None` keeps the model's default."""

    @property
    def request_seed(self) -> int | None:
        """The seed to send: `seed` itself, or for sample `i` of several `sample_seed(seed, i)`."""
        if self.seed is None or self.sample is None:
            return self.seed
        return sample_seed(self.seed, self.sample)

    def merged(self, other: ModelSettings | None) -> ModelSettings:
        """These settings with every field `other` sets explicitly taken from `other`."""
        if other is None or other is self:
            return self
        # On every model call: plain dicts, and no new object when nothing changes.
        overrides = {k: v for k, v in vars(other).items() if v != _UNSET[k]}
        if all(vars(self)[k] == v for k, v in overrides.items()):
            return self
        return replace(self, **overrides)


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Tokens and calls; add two with `+` to sum a run."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "model_calls": self.calls,
        }


_SEED_RANGE = 2**31 - 2**20
"""Spread bases stay below 2**31 with room for a million samples above them."""


def sample_seed(seed: int, sample: int) -> int:
    """The seed of sample `sample` drawn under base `seed`: `spread(seed) + sample`.

    `+ sample` is vLLM's own rule for the requests of one `n` (its i-th child gets the
    request's seed + i), so a request of `n` samples starting at sample `i`, sent with the seed
    of sample `i`, draws the same seeds as one request per sample. The spread (a multiplicative
    hash) keeps the samples of base seeds next to each other apart: an eval gives its k samples
    of an item the bases `seed + j`, and without it sample 1 of one would be sample 0 of the
    next, so two of an item's runs would share draws."""
    spread = (seed * 0x9E3779B1 + 0x632BE5AB) % _SEED_RANGE
    return spread + sample


_UNSET: dict[str, Any] = dict(vars(ModelSettings()))
"""Every `ModelSettings` field at its default: what `merged` does not take from the other."""


@dataclass(frozen=True, kw_only=True)
class RequestTiming:
    """Where the time of one model request went: enough to explain a slow question from its
    trace. Seconds are wall-clock, measured by the client."""

    total_s: float
    """From the call to the whole answer (a stream's end), queueing and retries included."""
    queued_s: float = 0.0
    """Waiting for a slot at the endpoint pool (its concurrency cap and rate throttle)."""
    ttft_s: float | None = None
    """Until the first piece of a streamed answer arrived; `None` when not streamed."""
    prompt_tokens: int = 0
    """Prefill."""
    completion_tokens: int = 0
    """Decode."""
    cached_tokens: int | None = None
    """Prompt tokens the server found in its prefix cache, when it reports them."""
    attempts: int = 1
    endpoint: str = ""
    """The base URL that answered."""
    node_id: str | None = None
    """The node the request was made for (set by the run's context; `None` outside nodes)."""
    started_at: float | None = None
    """Seconds from the run's start (set by the run's context)."""

    def as_dict(self) -> dict[str, Any]:
        seconds = {"started_at": self.started_at, "queued_s": self.queued_s}
        seconds |= {"ttft_s": self.ttft_s, "total_s": self.total_s}
        return {
            "node_id": self.node_id,
            **{k: None if v is None else round(v, 4) for k, v in seconds.items()},
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "attempts": self.attempts,
            "endpoint": self.endpoint,
        }


@dataclass(frozen=True, kw_only=True)
class Choice:
    """One sampled completion, with the model's reasoning kept apart from its answer."""

    text: str
    """The answer, with any thinking removed. Parse JSON from here, never from `reasoning`."""
    reasoning: str | None = None
    finish_reason: str | None = None
    logprobs: tuple[float, ...] | None = None
    """Log-probability of each generated token, when asked for."""


@dataclass(frozen=True, kw_only=True)
class StreamDelta:
    """A piece of a streamed answer; the last one of a stream carries the usage (and, from
    `OpenAIModel`, the request's timing)."""

    text: str = ""
    reasoning: str = ""
    """Thinking the server sent apart from the answer (a reasoning parser's `reasoning`)."""
    finish_reason: str | None = None
    usage: Usage | None = None
    timing: RequestTiming | None = None


@dataclass(frozen=True, kw_only=True)
class ModelResponse:
    """The server's answer to one call: one or more choices and the tokens they cost."""

    choices: tuple[Choice, ...]
    usage: Usage
    model: str
    raw: str = field(default="", repr=False)
    """The response body as received, kept for error messages."""
    timing: RequestTiming | None = None
    """How long the request queued and took (`OpenAIModel` fills it in; fakes may not)."""

    @property
    def text(self) -> str:
        return self.choices[0].text

    def parse(self, schema: type[SchemaT], index: int = 0) -> SchemaT:
        """Validate choice `index`'s answer text against `schema`."""
        text = self.choices[index].text
        try:
            return schema.model_validate_json(_strip_code_fence(text))
        except ValidationError as exc:
            raise ModelOutputError(
                f"the model's answer does not match the {schema.__name__} schema: "
                f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}",
                body=text,
            ) from exc


class Model(ABC):
    """A chat model. Implementations must be safe to call concurrently."""

    name: str

    @abstractmethod
    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        """One chat completion; with `json_schema` the answer is constrained to that schema."""

    async def stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """The answer in pieces as it is generated. This default yields it in one piece."""
        response = await self.complete(messages, settings, json_schema=json_schema)
        yield StreamDelta(text=response.text, usage=response.usage, timing=response.timing)

    async def complete_structured(
        self,
        messages: Sequence[Message],
        schema: type[SchemaT],
        settings: ModelSettings | None = None,
    ) -> tuple[SchemaT, ModelResponse]:
        """A completion constrained to `schema` and parsed into it. Inside a run, use
        `RunContext.complete_structured`: it also salvages a reply that loops or is cut off,
        or asks again once under a repetition guard."""
        response = await self.complete(messages, settings, json_schema=schema.model_json_schema())
        return response.parse(schema), response

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most fakes hold nothing
        """Release connections. A model may be used again afterwards: it reconnects."""

    def with_overrides(self, overrides: ModelSettings) -> Model:
        """This model with `overrides` winning over every call's own settings: how an eval
        imposes its temperature, seed or token cap on planners that set their own."""
        if callable(getattr(self, "complete_text", None)) and callable(
            getattr(self, "render_prompt", None)
        ):
            return _OverriddenText(self, overrides)  # keeps budget forcing and threads working
        return _Overridden(self, overrides)


class _Overridden(Model):
    def __init__(self, inner: Model, overrides: ModelSettings) -> None:
        self.inner = inner
        self.overrides = overrides
        self.name = inner.name

    def _settings(self, settings: ModelSettings | None) -> ModelSettings:
        return (settings or ModelSettings()).merged(self.overrides)

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        return await self.inner.complete(
            messages, self._settings(settings), json_schema=json_schema
        )

    async def stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamDelta]:
        async for delta in self.inner.stream(
            messages, self._settings(settings), json_schema=json_schema
        ):
            yield delta

    async def aclose(self) -> None:
        await self.inner.aclose()


class _OverriddenText(_Overridden):
    """`_Overridden` for a model that also shows its raw prompt and continues raw text."""

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        inner: Any = self.inner
        return str(await inner.render_prompt(messages, chat_template_kwargs))

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        inner: Any = self.inner
        response: ModelResponse = await inner.complete_text(prompt, self._settings(settings))
        return response


_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_reasoning(content: str, reasoning: str | None = None) -> tuple[str, str | None]:
    """Separate thinking from the answer in `content`.

    Handles closed `<think>` blocks, a leading block whose opening tag was in the prompt (Qwen3's
    template), and an unclosed block cut off by `max_tokens` (then the answer is empty).
    """
    thoughts = [reasoning] if reasoning else []
    thoughts += [m.strip() for m in _THINK_BLOCK.findall(content)]
    answer = _THINK_BLOCK.sub("", content)
    if "</think>" in answer:
        before, _, answer = answer.rpartition("</think>")
        thoughts.append(before.replace("<think>", "").strip())
    elif "<think>" in answer:
        answer, _, unfinished = answer.partition("<think>")
        thoughts.append(unfinished.strip())
    joined = "\n\n".join(t for t in thoughts if t)
    return answer.strip(), joined or None


def _strip_code_fence(text: str) -> str:
    """Models without constrained decoding often wrap JSON in ``` fences."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped.strip()
