"""What a failed run tells its client, as opposed to what it tells the log.

agentflow's error messages are written for the person running it: they name the model
server's URL, quote its reply and suggest flags (`raise it with --max-model-calls`). The end
user of a chat backend must see none of that (the URL is internal, the flags are not theirs),
so a run's failure is said to the client in a few fixed sentences chosen by the error's kind,
and logged in full with the run id.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.exceptions import (
    AgentflowError,
    DeadlineExceededError,
    LimitExceededError,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelOutputError,
    ModelResponseError,
    ModelTimeoutError,
    PlanError,
)

__all__ = ["EmptyAnswerError", "PublicFailure", "public_failure"]


class EmptyAnswerError(ModelResponseError):
    """The answer call's stream ended properly with no text at all: nothing to show."""


@dataclass(frozen=True)
class PublicFailure:
    message: str
    """Safe to show an end user: no URL, no model output, no operator flag."""
    status: int
    kind: str
    """For metrics: `model_timeout`, `model_unreachable`, `limit`..."""


_F = PublicFailure
_BY_KIND: tuple[tuple[type[BaseException], PublicFailure], ...] = (
    # Order matters: subclasses before their bases.
    (ModelTimeoutError, _F("the model server did not answer in time", 504, "model_timeout")),
    (ModelConnectionError, _F("the model server is unavailable", 502, "model_unreachable")),
    (ModelHTTPError, _F("the model server refused the request", 502, "model_http")),
    (ModelOutputError, _F("the model's reply could not be used", 502, "model_output")),
    (EmptyAnswerError, _F("the model wrote an empty answer", 502, "empty_answer")),
    (ModelResponseError, _F("the model server sent an unusable reply", 502, "model_response")),
    (ModelError, _F("the model server failed", 502, "model")),
    (DeadlineExceededError, _F("the run ran out of time", 504, "deadline")),
    (LimitExceededError, _F("the run reached its limit of model calls or tokens", 500, "limit")),
    (PlanError, _F("the model's plan could not be used", 500, "plan")),
    (AgentflowError, _F("the run could not finish", 500, "run")),
)


def public_failure(exc: BaseException) -> PublicFailure:
    """The client's view of `exc`, judged by its whole chain of causes: a model server that
    is down reaches the server as a failed node's `ExecutionError` caused by it, and the
    cause is what the user should hear. An unexpected exception is an internal error."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for kind, failure in _BY_KIND:
        if any(isinstance(link, kind) for link in chain):
            return failure
    return PublicFailure("internal error", 500, "internal")
