"""`RunContext`: what every step of one run shares: the model, the tools, the trace and the caps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel

from agentflow import _structured
from agentflow.allocation import NodeAllocation, TextModel
from agentflow.exceptions import LimitExceededError, UserError
from agentflow.model import Message, Model, ModelResponse, ModelSettings
from agentflow.tool import Toolset
from agentflow.trace import Trace

__all__ = ["DEADLINE_JOIN_SHARE", "RunContext", "RunLimits"]

SchemaT = TypeVar("SchemaT", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class RunLimits:
    """Hard caps for one question. A run that reaches one stops with `LimitExceededError`,
    except the deadline, which answers with what the run has if it can."""

    max_model_calls: int = 64
    max_tokens: int = 200_000
    """Prompt plus completion tokens over all calls."""
    deadline: float | None = None
    """Seconds for the whole question; None: no deadline. At `DEADLINE_JOIN_SHARE` short of it
    the work still running (planning, nodes) is cancelled and the planner joins the findings
    so far into an answer, which must come by the deadline: the run then returns it, with
    `RunResult.deadline_hit` set. If it cannot (the join fails or is still running at the
    deadline), `DeadlineExceededError` carries what the join's unusable reply wrote as the
    answer, if anything (never an earlier step's output)."""

    def __post_init__(self) -> None:
        if self.deadline is not None and not self.deadline > 0:  # also NaN
            raise UserError(f"the deadline must be seconds above 0, not {self.deadline}")


DEADLINE_JOIN_SHARE = 0.25
"""The last part of a run's deadline kept for joining the findings into an answer."""


@dataclass(frozen=True, kw_only=True)
class RunContext:
    model: Model
    tools: Toolset
    trace: Trace
    limits: RunLimits = RunLimits()
    allocation: NodeAllocation | None = None
    """Set while an `llm` node runs under an allocator: its free-text calls go through it."""

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        node_id: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        """A model call counted against the run's caps and charged to `node_id` in the trace.

        A call of the node an allocation is for is sent under that node's budget (structured
        calls excepted: their schema, not a thinking mode, shapes the answer)."""
        allocation = self.allocation
        if allocation is not None and node_id == allocation.node_id and json_schema is None:
            charged = partial(self._complete, node_id=node_id)
            text = _NodeText(self, node_id) if isinstance(self.model, TextModel) else None
            return await allocation.complete(
                messages, settings or ModelSettings(), charged, text=text
            )
        return await self._complete(messages, settings, node_id=node_id, json_schema=json_schema)

    async def _complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None,
        *,
        node_id: str | None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        self._check_limits()
        response = await self.model.complete(messages, settings, json_schema=json_schema)
        self.trace.charge(response, node_id)
        return response

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None, *, node_id: str | None = None
    ) -> ModelResponse:
        """A raw-text continuation of `prompt` (`/v1/completions`, no chat template), counted
        against the run's caps and charged to `node_id`. The model must be able to continue
        raw text (`OpenAIModel` is; fakes and overridden models may not): `UserError` else."""
        model = self.model
        if not isinstance(model, TextModel):
            raise UserError(f"the model {model.name!r} cannot continue raw text")
        self._check_limits()
        response = await model.complete_text(prompt, settings)
        self.trace.charge(response, node_id)
        return response

    async def complete_structured(
        self,
        messages: Sequence[Message],
        schema: type[SchemaT],
        settings: ModelSettings | None = None,
        *,
        node_id: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> tuple[SchemaT, ModelResponse]:
        """`complete` under `schema`, parsed; a reply that loops or is cut off is salvaged or
        asked again once under a repetition guard, noted in the trace (`agentflow._structured`).
        `json_schema` is what the server is sent when it should be narrower than `schema`'s own
        (an enum of the run's tool names, say)."""
        request = json_schema or _structured.request_schema(schema)

        async def send(chosen: ModelSettings | None) -> ModelResponse:
            return await self.complete(messages, chosen, node_id=node_id, json_schema=request)

        def note(text: str) -> None:
            self.trace.emit("repaired", node_id, text=text)

        return await _structured.complete_structured(send, schema, settings, note)

    async def stream(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        node_id: str | None = None,
        json_schema: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """The answer's text pieces as they arrive; usage is charged when the stream ends."""
        self._check_limits()
        async for delta in self.model.stream(messages, settings, json_schema=json_schema):
            if delta.usage is not None:
                self.trace.add_usage(delta.usage, node_id)
            if delta.timing is not None:
                self.trace.add_request(delta.timing, node_id)
            if delta.text:
                yield delta.text

    def _check_limits(self) -> None:
        used = self.trace.usage
        if used.calls >= self.limits.max_model_calls:
            raise LimitExceededError(
                f"the run reached its cap of {self.limits.max_model_calls} model calls "
                "(raise it with --max-model-calls)",
                trace=self.trace,
            )
        if used.total_tokens >= self.limits.max_tokens:
            raise LimitExceededError(
                f"the run reached its cap of {self.limits.max_tokens} tokens "
                "(raise it with --max-tokens)",
                trace=self.trace,
            )


@dataclass(frozen=True)
class _NodeText:
    """Raw-text continuation for one node: `RunContext.complete_text` charged to it."""

    ctx: RunContext
    node_id: str

    async def render_prompt(
        self, messages: Sequence[Message], chat_template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        model = self.ctx.model
        assert isinstance(model, TextModel)  # made only for such models
        return await model.render_prompt(messages, chat_template_kwargs)

    async def complete_text(
        self, prompt: str, settings: ModelSettings | None = None
    ) -> ModelResponse:
        return await self.ctx.complete_text(prompt, settings, node_id=self.node_id)
