"""The errors agentflow raises, split by who must act.

```
AgentflowError
├── UserError                 misuse of the API or CLI, raised at construction time
├── PlanError                 the model wrote a plan that cannot be repaired (carries the raw text)
├── ModelError                anything between agentflow and the model server
│   ├── ModelConnectionError  the server cannot be reached (names the URL, suggests a fix)
│   │   └── ModelTimeoutError the server did not answer in time
│   ├── ModelHTTPError        the server answered with an error status
│   │   └── ModelNotFoundError    the server does not serve that model (lists what it serves)
│   └── ModelResponseError    the server answered 200 with a body agentflow cannot use (carries it)
│       └── ModelOutputError  the body is fine, the model's text does not fit the schema asked for
├── ExecutionError            a run could not finish (carries the partial trace)
│   └── LimitExceededError    the run hit its cap on model calls or tokens
│       └── DeadlineExceededError  the run's deadline passed before it had an answer
└── RuntimeSetupError         the embedded model failed to prepare or start (carries the log tail)
```
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentflowError",
    "DeadlineExceededError",
    "ExecutionError",
    "LimitExceededError",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelNotFoundError",
    "ModelOutputError",
    "ModelResponseError",
    "ModelTimeoutError",
    "PlanError",
    "RuntimeSetupError",
    "UserError",
]


class AgentflowError(Exception):
    """Root of every error agentflow raises on purpose."""


class UserError(AgentflowError):
    """The API or the CLI was used in a way that cannot work."""


class PlanError(AgentflowError):
    """The model's plan could not be parsed or repaired."""

    def __init__(self, message: str, *, raw: str) -> None:
        super().__init__(message)
        self.raw = raw
        """The model output the plan was read from, verbatim."""

    def __str__(self) -> str:
        excerpt = self.raw if len(self.raw) <= 500 else self.raw[:500] + "..."
        return f"{self.args[0]}\nraw model output: {excerpt!r}"


class ModelError(AgentflowError):
    """A call to the model server failed."""


class ModelConnectionError(ModelError):
    """The model server could not be reached."""

    def __init__(self, message: str, *, base_url: str) -> None:
        super().__init__(message)
        self.base_url = base_url


class ModelTimeoutError(ModelConnectionError):
    """The model server did not answer within the timeout."""


class ModelHTTPError(ModelError):
    """The model server answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, body: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ModelNotFoundError(ModelHTTPError):
    """The server does not serve the requested model."""

    def __init__(self, message: str, *, status_code: int, body: str, served: list[str]) -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.served = served


class ModelResponseError(ModelError):
    """The server's answer was malformed: not JSON, missing fields, or off-schema."""

    def __init__(self, message: str, *, body: str) -> None:
        super().__init__(message)
        self.body = body

    def __str__(self) -> str:
        excerpt = self.body if len(self.body) <= 1000 else self.body[:1000] + "..."
        return f"{self.args[0]}\nraw body: {excerpt!r}"


class ModelOutputError(ModelResponseError):
    """The server answered properly, but the model's text does not fit the schema asked for:
    the model's failure, not the server's."""


class ExecutionError(AgentflowError):
    """A run stopped before it had an answer; `trace` holds what was done until then."""

    def __init__(self, message: str, *, trace: Any = None, best_answer: str = "") -> None:
        super().__init__(message)
        self.trace = trace
        self.best_answer = best_answer
        """What the run can still offer as an answer, with no claim that it is right: only
        what the model's own final reply (the join's), unusable as a whole, wrote as the
        answer; never an earlier step's output; "" if nothing."""


class LimitExceededError(ExecutionError):
    """The run used up its budget of model calls or tokens."""


class DeadlineExceededError(LimitExceededError):
    """The run's deadline (`RunLimits.deadline`) passed and no join over the findings answered
    in time: `best_answer` is what the join's unusable reply wrote as the answer, if anything.
    If no model call had completed by then, its cause is a `ModelTimeoutError` (the server gave
    nothing). A run whose join did answer in time returns normally, its
    `RunResult.deadline_hit` set."""


class RuntimeSetupError(AgentflowError):
    """The embedded model server could not be prepared or started."""

    def __init__(self, message: str, *, log_tail: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.hint = hint

    def __str__(self) -> str:
        parts = [str(self.args[0])]
        if self.log_tail:
            parts.append("--- last lines of the server log ---\n" + self.log_tail.rstrip())
        if self.hint:
            parts.append("hint: " + self.hint)
        return "\n".join(parts)
