"""One sample of a vote, streamed so that what the server decoded is counted even when the vote
settles first and the sample is cancelled.

A sample sent as one plain request and cancelled midway leaves nothing behind: the server
decoded part of it, but no usage ever comes back, so a vote looked cheaper than it was. Streamed,
each piece that arrived is counted; a cancelled sample is charged one token per piece (vLLM sends
a piece per decoding step, a step usually one token: a lower bound, recorded as an estimate) and
the prompt tokens its finished siblings reported (the same prompt, prefilled once it decoded).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from agentflow.model import (
    Choice,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    RequestTiming,
    Usage,
    split_reasoning,
)

__all__ = ["Abandoned", "stream_sample"]


@dataclass(kw_only=True)
class Abandoned:
    """What the cancelled samples of one node cost, as far as the client saw."""

    samples: int = 0
    pieces: int = 0
    """Pieces received before the cancel: the completion tokens estimated."""
    prompt_tokens: int = 0
    """Estimated from a finished sibling's usage (same prompt), for samples that decoded."""
    seen_prompt_tokens: int = field(default=0, repr=False)

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.pieces, calls=self.samples
        )

    def as_record(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "completion_tokens": self.pieces,
            "prompt_tokens": self.prompt_tokens,
            "how": "cancelled when the vote settled: one token per piece received (a lower "
            "bound), prompt tokens as a finished sample's",
        }


@dataclass(kw_only=True)
class _Received:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    pieces: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    timing: RequestTiming | None = None


async def stream_sample(
    model: Model, messages: Sequence[Message], settings: ModelSettings, abandoned: Abandoned
) -> ModelResponse:
    """The sample as one response; if cancelled, what it decoded goes into `abandoned`."""
    got = _Received()
    deltas = model.stream(messages, settings)
    try:
        async for delta in deltas:
            got.pieces += bool(delta.text or delta.reasoning)
            got.text.append(delta.text)
            got.reasoning.append(delta.reasoning)
            got.finish_reason = delta.finish_reason or got.finish_reason
            got.usage = delta.usage or got.usage
            got.timing = delta.timing or got.timing
    except asyncio.CancelledError:
        abandoned.samples += 1
        abandoned.pieces += got.pieces
        abandoned.prompt_tokens += abandoned.seen_prompt_tokens if got.pieces else 0
        raise
    finally:
        if isinstance(deltas, AsyncGenerator):  # closes the connection: the server aborts
            await deltas.aclose()
    usage = got.usage or Usage(completion_tokens=got.pieces, calls=1)
    abandoned.seen_prompt_tokens = usage.prompt_tokens or abandoned.seen_prompt_tokens
    text, reasoning = split_reasoning("".join(got.text), "".join(got.reasoning) or None)
    choice = Choice(text=text, reasoning=reasoning, finish_reason=got.finish_reason)
    return ModelResponse(choices=(choice,), usage=usage, model=model.name, timing=got.timing)
