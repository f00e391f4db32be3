"""Test doubles that ship with the library: scripted models and a planner of fixed plans."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from agentflow.context import RunContext
from agentflow.model import Choice, Message, Model, ModelResponse, ModelSettings, Usage
from agentflow.plan import TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState

__all__ = ["FunctionModel", "ScriptedModel", "StaticPlanner"]

Reply = str | ModelResponse
ReplyFunction = Callable[
    [Sequence[Message], ModelSettings, Mapping[str, Any] | None], Reply | Awaitable[Reply]
]


class FunctionModel(Model):
    """A model whose answer is `fn(messages, settings, json_schema)`; sync or async."""

    def __init__(self, fn: ReplyFunction, *, name: str = "function-model") -> None:
        self.fn = fn
        self.name = name
        self.calls: list[Sequence[Message]] = []

    async def complete(
        self,
        messages: Sequence[Message],
        settings: ModelSettings | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ModelResponse:
        self.calls.append(messages)
        reply = self.fn(messages, settings or ModelSettings(), json_schema)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply if isinstance(reply, ModelResponse) else self._wrap(messages, reply)

    def _wrap(self, messages: Sequence[Message], text: str) -> ModelResponse:
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split()), calls=1)
        return ModelResponse(choices=(Choice(text=text),), usage=usage, model=self.name)


class ScriptedModel(FunctionModel):
    """Answers with `replies` in order; fails loudly when the script runs out."""

    def __init__(self, replies: Iterable[str], *, name: str = "scripted-model") -> None:
        self.replies = list(replies)
        super().__init__(self._next, name=name)

    def _next(self, messages: Sequence[Message], *_: Any) -> str:
        if not self.replies:
            raise AssertionError(f"ScriptedModel ran out of replies at call {len(self.calls)}")
        return self.replies.pop(0)


class StaticPlanner(Planner):
    """Runs fixed plans, one per round, then answers with `answer(state)`.

    For tests and benchmarks that exercise the executor without a model writing the plan.
    """

    name = "static"

    def __init__(
        self,
        rounds: Sequence[Sequence[TaskNode]],
        answer: Callable[[RunState], str] | None = None,
    ) -> None:
        self.rounds = [list(r) for r in rounds]
        self.max_rounds = len(self.rounds)
        self.answer = answer or (lambda state: state.transcript())

    async def plan(self, state: RunState, ctx: RunContext) -> AsyncIterator[TaskNode]:
        for node in self.rounds[state.round]:
            yield node

    async def join(self, state: RunState, ctx: RunContext) -> Answer | Replan | Continue:
        if state.final_round:
            return Answer(text=self.answer(state))
        return Replan(reason=f"round {state.round + 1} of {self.max_rounds} done")
