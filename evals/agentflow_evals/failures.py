"""Why a sample failed, and whether the failure is the model's (a wrong answer) or the
infrastructure's (no answer at all).

An eval measures the model and the planner. A sample that failed because the model server could
not be reached, answered an error status, sent a malformed body or never answered says nothing
about either: it must never be written as an answered (wrong) item, and a resume must retry it.
A sample that failed because the model wrote an unusable plan, off-schema output, or used up
its budget, or whose prompt overflowed the context window, is the system under test failing:
it is recorded with its error and scored wrong.

A sample that reached its `--deadline` is the system's failure (`deadline`) if the run had any
model reply by then: a hung request and a slow model look alike. If no model call had completed
at all, the server gave nothing before the deadline: the agent raises `DeadlineExceededError`
with a `ModelTimeoutError` as its cause, so it is `timeout` (infrastructure), never recorded.
A stream that reaches `[DONE]` with no choice in it is a `ModelResponseError`
(`malformed_response`), as `choices: []` unstreamed is: no answer, not an empty one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agentflow.exceptions import (
    AgentflowError,
    DeadlineExceededError,
    LimitExceededError,
    ModelConnectionError,
    ModelHTTPError,
    ModelOutputError,
    ModelResponseError,
    ModelTimeoutError,
    PlanError,
)

__all__ = ["Failure", "InfrastructureFailure", "classify"]

INFRASTRUCTURE_KINDS = frozenset({"connection", "timeout", "http", "malformed_response"})


@dataclass(frozen=True, kw_only=True)
class Failure:
    kind: str
    """connection, timeout, http, malformed_response (infrastructure); context_overflow,
    model_output, plan, limit, deadline, node (the system under test)."""
    message: str

    @property
    def infrastructure(self) -> bool:
        return self.kind in INFRASTRUCTURE_KINDS


class InfrastructureFailure(AgentflowError):
    """A sample could not be run for reasons outside the system under test."""

    def __init__(self, failure: Failure, item_id: str) -> None:
        super().__init__(f"item {item_id}: {failure.kind}: {failure.message}")
        self.failure = failure
        self.item_id = item_id

    def __reduce__(self) -> tuple[type[InfrastructureFailure], tuple[Failure, str]]:
        return (InfrastructureFailure, (self.failure, self.item_id))  # crosses Ray's pickling


def classify(error: BaseException) -> Failure:
    """The kind of the deepest recognised cause in `error`'s chain."""
    message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    for cause in _chain(error):
        kind = _kind(cause)
        if kind is not None:
            return Failure(kind=kind, message=message)
    return Failure(kind="node", message=message)


def _kind(error: BaseException) -> str | None:
    if isinstance(error, ModelTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, ModelConnectionError):
        return "connection"
    if isinstance(error, ModelHTTPError):
        return "context_overflow" if _is_context_overflow(error) else "http"
    if isinstance(error, ModelOutputError):
        return "model_output"
    if isinstance(error, ModelResponseError):
        return "malformed_response"
    if isinstance(error, DeadlineExceededError):
        return "deadline"
    if isinstance(error, LimitExceededError):
        return "limit"
    if isinstance(error, PlanError):
        return "plan"
    return None


def _is_context_overflow(error: ModelHTTPError) -> bool:
    """vLLM answers 400 with "maximum context length" (or "too long") for a prompt that does
    not fit: the prompt's fault, not the server's."""
    body = error.body.lower()
    return error.status_code == 400 and ("context length" in body or "too long" in body)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its causes, innermost last; the deepest recognised one decides."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__  # explicit causes only: a __context__ may be unrelated
    return reversed(seen)
