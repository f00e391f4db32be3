"""A run's updates as a response: the SSE frames of a streamed chat completion, or one body.

Only what the official openai client can parse goes out: `data:` lines holding chunk JSON, an
`{"error": ...}` object when the run fails midway (the client raises it), `: keepalive`
comments (which it ignores) and `data: [DONE]`. No custom `event:` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agentflow.server.protocol import RequestError, chunk, completion, error_body
from agentflow.server.service import ChatRun, Content, Failed, Finished, Reasoning

__all__ = ["KEEPALIVE", "collect", "sse"]

KEEPALIVE = b": keepalive\n\n"
DONE = b"data: [DONE]\n\n"


def _frame(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


async def sse(run: ChatRun, keepalive: float) -> AsyncIterator[bytes]:
    """The streamed response: a role chunk, reasoning and content deltas, the finish chunk,
    the usage chunk when asked for, `[DONE]`."""
    model = run.request.model

    def frame(**fields: Any) -> bytes:
        return _frame(chunk(run_id=run.id, model=model, created=run.created, **fields))

    yield frame(delta={"role": "assistant", "content": ""})
    async with contextlib.aclosing(run.updates(keepalive)) as updates:
        async for update in updates:
            if update is None:
                yield KEEPALIVE
            elif isinstance(update, Reasoning):
                yield frame(delta={"reasoning": update.text, "reasoning_content": update.text})
            elif isinstance(update, Content):
                yield frame(delta={"content": update.text})
            elif isinstance(update, Finished):
                yield frame(delta={}, finish_reason=update.finish_reason)
                if run.request.include_usage:
                    yield frame(usage=update.usage)
            else:
                failure = error_body(
                    update.message, type="server_error", code=update.status, run_id=run.id
                )
                yield _frame(failure)
    yield DONE


async def collect(
    run: ChatRun, disconnected: Callable[[], Awaitable[bool]], poll: float = 1.0
) -> dict[str, Any]:
    """The whole `chat.completion` body. A client that went away cancels the run: checked
    every `poll` seconds however often the run has news (checking only in silences missed
    every client of a run whose progress came faster than that); a failed run raises
    `RequestError` with its status and run id."""
    reasoning: list[str] = []
    content: list[str] = []
    loop = asyncio.get_running_loop()
    checked = loop.time()
    async with contextlib.aclosing(run.updates(poll)) as updates:
        async for update in updates:
            if update is None or loop.time() - checked >= poll:
                checked = loop.time()
                if await disconnected():
                    break
            if isinstance(update, Reasoning):
                reasoning.append(update.text)
            elif isinstance(update, Content):
                content.append(update.text)
            elif isinstance(update, Failed):
                raise _run_error(run, update)
            elif isinstance(update, Finished):
                return completion(
                    run_id=run.id,
                    model=run.request.model,
                    content="".join(content),
                    reasoning="".join(reasoning),
                    usage=update.usage,
                    finish_reason=update.finish_reason,
                )
    raise RequestError("the client disconnected", status=499, run_id=run.id)


def _run_error(run: ChatRun, failed: Failed) -> RequestError:
    """A failed run's error; a server-side failure tells the openai client not to run the
    question again (its retries would cost whole runs, three times over)."""
    headers = {"x-should-retry": "false"} if failed.status >= 500 and failed.status != 503 else {}
    return RequestError(
        failed.message, status=failed.status, type="server_error", run_id=run.id, headers=headers
    )
