"""The wire format of `/v1/chat/completions`: pydantic models of what a client may send, and the
OpenAI-shaped bodies and chunks agentflow sends back.

Requests are untrusted, so they are validated here; unknown fields are allowed (clients send
many that do not matter to an agent run) but logged as ignored, and fields agentflow cannot
honour raise `RequestError` naming the parameter, which the app turns into OpenAI's 400 shape.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentflow.model import Usage

__all__ = [
    "AgentflowOptions",
    "ChatCompletionRequest",
    "ChatMessage",
    "RequestError",
    "StreamOptions",
    "chunk",
    "completion",
    "error_body",
    "loggable",
    "usage_body",
]

logger = logging.getLogger("agentflow.server")


class RequestError(Exception):
    """A request agentflow refuses; rendered as `{"error": {...}}` with `status`."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.type = type
        self.code = code
        self.headers = headers or {}
        self.run_id = run_id


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        """The message's text; a part that is not text raises `RequestError` naming it."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        pieces = []
        for j, part in enumerate(self.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type", "untyped")
                raise RequestError(
                    f"content parts of type {kind!r} are not supported; send text parts only",
                    param=f"messages[{index}].content[{j}]",
                )
            pieces.append(part["text"])
        return "\n".join(pieces)


class StreamOptions(_Wire):
    include_usage: bool = False


class AgentflowOptions(BaseModel):
    """Per-request agentflow options, sent in the body's `agentflow` object (`extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    planner: str | None = None
    max_model_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)


class ChatCompletionRequest(_Wire):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    agentflow: AgentflowOptions | None = None

    def check_supported(self) -> None:
        """Refuse what an agent run cannot honour, naming the parameter; log what it ignores."""
        if self.n != 1:
            raise RequestError("n must be 1: agentflow writes one answer per run", param="n")
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise RequestError(
                    f"{name} (client-side function calling) is not supported: the agent runs "
                    "its own tools",
                    param=name,
                )
        if self.tool_choice not in (None, "none", "auto"):
            raise RequestError("tool_choice is not supported", param="tool_choice")
        if self.response_format and self.response_format.get("type") != "text":
            raise RequestError("only text responses are supported", param="response_format")
        if self.logprobs:
            raise RequestError("logprobs are not supported", param="logprobs")
        ignored = sorted(self.model_extra or {})
        if ignored:  # frequency_penalty, user, metadata...: nothing an agent run can use
            names = ", ".join(loggable(name) for name in ignored[:20])
            more = f" and {len(ignored) - 20} more" if len(ignored) > 20 else ""
            logger.warning("ignored request fields: %s%s", names, more)

    @property
    def answer_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> tuple[str, ...] | None:
        if self.stop is None:
            return None
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop) or None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def loggable(text: str, limit: int = 80) -> str:
    """Client-chosen text for a log line: as it is when printable, else quoted with its
    escapes (a field name holding a newline cannot start a forged line of its own)."""
    shown = text if text.isprintable() else ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | int | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error shape; the run id rides inside `error` so clients that log it keep it."""
    error: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    if run_id is not None:
        error["run_id"] = run_id
    return {"error": error}


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion(
    *, run_id: str, model: str, content: str, reasoning: str, usage: Usage, finish_reason: str
) -> dict[str, Any]:
    """A whole `chat.completion` body; the progress goes in both reasoning fields."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message.update(reasoning=reasoning, reasoning_content=reasoning)
    return {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": usage_body(usage),
        "run_id": run_id,
    }


def chunk(
    *,
    run_id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `usage` it is the final usage chunk (`choices: []`)."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "run_id": run_id,
    }
    if usage is not None:
        body.update(choices=[], usage=usage_body(usage))
    else:
        choice = {"index": 0, "delta": delta or {}, "finish_reason": finish_reason}
        body["choices"] = [dict(choice, logprobs=None)]
    return body
