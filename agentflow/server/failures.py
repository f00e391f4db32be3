"""What a failed run tells its client, as opposed to what it tells the log.

agentflow's error messages are written for the person running it: they name the model
server's URL, quote its reply and suggest flags (`raise it with --max-model-calls`). The end
user of a chat backend must see none of that (the URL is internal, the flags are not theirs),
so a run's failure is said to the client in a few fixed sentences chosen by the error's kind,
and logged in full with the run id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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

__all__ = [
    "EmptyAnswerError",
    "PublicFailure",
    "public_failure",
    "public_node_error",
    "public_trace",
]


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
_TIMED_OUT = _F("the model server did not answer in time", 504, "model_timeout")
_UPSTREAM_TIMEOUT = 504
"""A model server's (or its proxy's) Gateway Timeout is its timeout, not a refusal."""
_BY_KIND: tuple[tuple[type[BaseException], PublicFailure], ...] = (
    # Order matters: subclasses before their bases.
    (ModelTimeoutError, _TIMED_OUT),
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
            if kind is ModelHTTPError and _timed_out_upstream(chain):
                return _TIMED_OUT
            return failure
    return PublicFailure("internal error", 500, "internal")


_BY_NAME = {kind.__name__: failure for kind, failure in _BY_KIND}
_INTERNAL = re.compile(r"[a-z][a-z0-9+.-]*://|model server|`agentflow |--[a-z]", re.IGNORECASE)
"""A URL, the model server's words (which name its address and quote its reply), or advice
for the operator (a command, a flag)."""
NODE_FAILED = "the step failed"


def public_node_error(error: str | None) -> str | None:
    """A node's error as a client may read it. Errors of agentflow's own kinds (recorded as
    `ModelOutputError: ...`) become that kind's sentence; any other that names a URL, the
    model server or an operator's flag becomes a fixed sentence; a tool's own message stays."""
    if error is None:
        return None
    if error.startswith("input failed ("):  # quotes its inputs' errors
        return "an input of the step failed"
    name = error.split(":", 1)[0]
    if name in _BY_NAME:
        return _BY_NAME[name].message
    if _INTERNAL.search(error):
        return _BY_NAME["ModelError"].message if "model server" in error else NODE_FAILED
    return error


def public_trace(trace: dict[str, Any]) -> dict[str, Any]:
    """A trace's `as_dict` as a client may read it: node errors through `public_node_error`,
    model requests without the endpoint they went to."""
    nodes = [node | {"error": public_node_error(node["error"])} for node in trace["nodes"]]
    requests = [
        {key: value for key, value in request.items() if key != "endpoint"}
        for request in trace["requests"]
    ]
    return trace | {"nodes": nodes, "requests": requests}


def _timed_out_upstream(chain: list[BaseException]) -> bool:
    return any(
        isinstance(link, ModelHTTPError) and link.status_code == _UPSTREAM_TIMEOUT for link in chain
    )
