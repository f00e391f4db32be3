"""Reading a streamed chat completion: OpenAI server-sent events to `StreamDelta`s, strictly.

A 2xx reply to a streamed request is an answer only if it is server-sent events that end in
`data: [DONE]`. Anything else is the server failing, never an answer, and raises a model-server
error (which an eval counts as infrastructure, retried on resume, never a recorded item):

- a body that is not server-sent events (an HTML page from a proxy, a server that ignores
  `stream` and sends one JSON body): `ModelResponseError`, carrying what came;
- a stream that ends without `[DONE]`: `ModelResponseError` (an unusable reply: the server
  answered, then ended its reply early, and what came may be cut anywhere), carrying the last
  bytes that came;
- a stream that ends in `[DONE]` with no choice in it (no text, no thinking, no finish reason:
  only `[DONE]`, or only a usage chunk with `choices: []`): `ModelResponseError`, carrying what
  came, as the same thing unstreamed (`choices: []`) is; it is no answer, not even an empty one;
- a stream still running when its request's time limit is up (a server trickling bytes):
  `ModelTimeoutError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from agentflow._transport import StreamReply, TransportTimeout, TransportUnreachable
from agentflow.endpoints import Endpoint
from agentflow.exceptions import ModelConnectionError, ModelResponseError, ModelTimeoutError
from agentflow.model import StreamDelta, Usage

__all__ = ["OpenStream", "read_usage", "stream_deltas"]

_SSE_FIELDS = (b"data:", b":", b"event:", b"id:", b"retry:")
"""How every non-blank line of server-sent events starts."""


def read_usage(data: Mapping[str, Any] | None) -> tuple[Usage, int | None]:
    """One call's usage, and `prompt_tokens_details.cached_tokens` when the server sends it."""
    data = data or {}
    usage = Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        calls=1,
    )
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return usage, None if cached is None else int(cached)


class OpenStream:
    """A stream that answered: its deltas, the first read ahead while the retries still cover
    it. A wait longer than `read_timeout` after that is a stall, and raises; so does the stream
    still running at `deadline` (the loop's clock), when its request's `time_limit` is up."""

    def __init__(
        self,
        endpoint: Endpoint,
        response: StreamReply,
        read_timeout: float,
        *,
        time_limit: float,
        deadline: float,
    ) -> None:
        self.endpoint = endpoint
        self.response = response
        self.read_timeout = read_timeout
        self.time_limit = time_limit
        self.deadline = deadline
        self._deltas = stream_deltas(response.chunks(), endpoint.base_url)
        self._first: tuple[StreamDelta, int | None] | None = None
        self._sent = 0

    async def first(self) -> None:
        self._first = await anext(self._deltas, None)

    async def rest(self) -> AsyncGenerator[tuple[StreamDelta, int | None], None]:
        url = self.endpoint.base_url
        try:
            if self._first is not None:
                yield self._first
                self._sent += 1
                async for item in self._deltas:
                    yield item
                    self._sent += 1
        except TransportTimeout as exc:
            if self.past_deadline():
                raise ModelTimeoutError(
                    f"the stream from {url} did not finish within {self.time_limit:g} s "
                    f"(--timeout) after {self._sent} pieces",
                    base_url=url,
                ) from exc
            raise ModelConnectionError(
                f"the stream from {url} stalled: nothing for {self.read_timeout:g} s after "
                f"{self._sent} pieces (--idle-timeout)",
                base_url=url,
            ) from exc
        except TransportUnreachable as exc:
            raise ModelConnectionError(
                f"the stream from {url} broke off: {exc}", base_url=url
            ) from exc
        finally:
            await self._deltas.aclose()

    def past_deadline(self) -> bool:
        """Whether the request's time limit is up (a timeout now is that, not a stall)."""
        return asyncio.get_running_loop().time() >= self.deadline


async def stream_deltas(
    chunks: AsyncIterator[bytes], base_url: str
) -> AsyncGenerator[tuple[StreamDelta, int | None], None]:
    """Server-sent events to deltas (with the cached prompt tokens when usage comes); deltas
    with no text, thinking, finish reason or usage (the role) are left out. Ends at `[DONE]`;
    a body that is not server-sent events, ends before `[DONE]`, or reaches it without a
    choice (`_no_choice`), raises."""
    buffer = b""
    pieces = 0
    unanswered: list[bytes] | None = []  # the events while none had a choice; None after
    tail = b""  # the last bytes that came, for the error if the stream is cut
    async for chunk in chunks:
        tail = (tail + chunk)[-500:]
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            data = _data(line, base_url)
            if data == b"[DONE]":
                if unanswered is not None:
                    raise _no_choice(unanswered, base_url)
                return
            if data is not None:
                delta, cached = _stream_delta(data, base_url)
                pieces += 1
                if delta.text or delta.reasoning or delta.finish_reason:
                    unanswered = None
                elif unanswered is not None:
                    unanswered.append(data)
                if delta.text or delta.reasoning or delta.finish_reason or delta.usage:
                    yield delta, cached
    if _data(buffer, base_url) == b"[DONE]":  # a last line without its newline
        if unanswered is not None:
            raise _no_choice(unanswered, base_url)
        return
    raise ModelResponseError(
        f"the stream from {base_url} ended without [DONE] after {pieces} events: it broke "
        "off, and what came may be cut anywhere",
        body=tail.decode(errors="replace"),
    )


def _no_choice(came: list[bytes], base_url: str) -> ModelResponseError:
    """A stream that reached `[DONE]` with no text, thinking or finish reason in any event:
    the server answered nothing, which is not the model answering "" (that ends in a finish
    reason). Carries the events that came."""
    body = b"\n".join(came).decode(errors="replace") if came else "data: [DONE] alone"
    return ModelResponseError(
        f"the stream from {base_url} ended in [DONE] after {len(came)} events with no choice "
        "in any (no text, no finish reason): the server sent no answer",
        body=body[:1000],
    )


def _data(line: bytes, base_url: str) -> bytes | None:
    """The payload of a `data:` line; None for blank lines, comments (keep-alives) and other
    fields; a line no server-sent events have raises."""
    line = line.rstrip(b"\r")
    if line.startswith(b"data:"):
        return line[5:].strip()
    if not line.strip() or line.startswith(_SSE_FIELDS):
        return None
    raise ModelResponseError(
        f"the model server at {base_url} answered a streamed request with something other "
        "than server-sent events (an HTML page? a server that ignores `stream`?)",
        body=line[:500].decode(errors="replace"),
    )


def _stream_delta(data: bytes, base_url: str) -> tuple[StreamDelta, int | None]:
    try:
        event = json.loads(data.decode())
        if event.get("error"):
            raise ModelConnectionError(
                f"the stream from {base_url} broke off: {event['error']}", base_url=base_url
            )
        usage, cached = read_usage(event["usage"]) if event.get("usage") else (None, None)
        choices = event.get("choices")
        choice = choices[0] if choices else {}
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
        finish = choice.get("finish_reason")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ModelResponseError(
            f"the stream from {base_url} is not OpenAI server-sent events ({exc})",
            body=repr(data[:200]),
        ) from exc
    return StreamDelta(
        text=str(text),
        reasoning=str(reasoning),
        finish_reason=None if finish is None else str(finish),
        usage=usage,
    ), cached
