"""Agents whose model is `OpenAIModel` talking to a scripted server on loopback: the server's
side of a run (the direct planner's step, the answer call) as bytes over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from agentflow.context import RunLimits
from agentflow.models import OpenAIModel, RetryPolicy
from agentflow.server import AgentSpec, ServerConfig

from ..scripted_server import Reply, chat_body, reply_json, reply_sse

MODEL = "agentflow-direct"
BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}
STEP = "Thinking about it.\nAnswer: Paris"
DEFAULT_LIMITS = RunLimits()


def is_answer_call(body: dict[str, Any]) -> bool:
    return "Proposed answer:" in str(body["messages"][-1]["content"])


def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return (
        f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n".encode()
    )


def answer_events(
    words: Iterable[str], *, finish: str | None = "stop", done: bool = True
) -> list[bytes]:
    """The answer call's events: `words`, the finish reason, usage, `[DONE]` (each optional)."""
    pieces = [event({"content": w}) for w in words]
    if finish is not None:
        pieces.append(event({}, finish))
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    pieces.append(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
    return pieces + ([b"data: [DONE]\n\n"] if done else [])


def answering(answer: Callable[[dict[str, Any]], Reply] | None = None, step: str = STEP) -> Any:
    """A scripted server's function: the direct step gets `step`, the answer call `answer`
    (default: "Paris it is." streamed)."""

    def reply(path: str, body: dict[str, Any]) -> Reply:
        if is_answer_call(body):
            if answer is not None:
                return answer(body)
            return reply_sse(answer_events(["Paris", " it is."]))
        return reply_json(chat_body([step]))

    return reply


def spec(base_url: str, *, limits: RunLimits = DEFAULT_LIMITS, retries: int = 0) -> AgentSpec:
    model = OpenAIModel("m", base_url, timeout=30, retry=RetryPolicy(max_retries=retries))
    return AgentSpec(id=MODEL, model=model, planner="direct", limits=limits)


def server_config(
    base_url: str, *, limits: RunLimits = DEFAULT_LIMITS, **options: Any
) -> ServerConfig:
    return ServerConfig(agents=(spec(base_url, limits=limits),), **options)
