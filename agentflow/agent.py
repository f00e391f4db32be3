"""`Agent`: the loop plan -> execute -> join -> replan, and its sync and streaming faces."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agentflow.context import RunContext, RunLimits
from agentflow.exceptions import ExecutionError, ModelError, UserError
from agentflow.executor import Executor
from agentflow.model import Model, Usage
from agentflow.planner import Answer, Planner, Replan, RunState
from agentflow.registry import load_planner
from agentflow.tool import Tool, Toolset
from agentflow.trace import Trace, TraceEvent

__all__ = ["Agent", "RunResult"]


@dataclass(frozen=True, kw_only=True)
class RunResult:
    answer: str
    """The short answer."""
    trace: Trace
    reply: str = ""
    """The whole final reply the answer was read from (equal to `answer` when there was no more
    to it): what a scorer of an answer format (boxed math, BrowseComp) reads."""

    @property
    def usage(self) -> Usage:
        return self.trace.usage

    def as_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "reply": self.reply,
            "usage": self.usage.as_dict(),
            "trace": self.trace.as_dict(),
        }


class Agent:
    """Answers questions with a model, a planner and tools.

    >>> agent = Agent(model=OpenAIModel("SmolLM2-135M-Instruct", "http://127.0.0.1:8100/v1"),
    ...               planner="dag", tools=[search])          # doctest: +SKIP
    >>> agent.run_sync("Which was founded first, Oxford or Cambridge?").answer  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        model: Model,
        planner: Planner | str = "direct",
        tools: Toolset | Iterable[Tool | Callable[..., Any]] = (),
        limits: RunLimits | None = None,
        max_concurrency: int = 16,
        node_timeout: float = 180.0,
    ) -> None:
        self.model = model
        self.planner = load_planner(planner) if isinstance(planner, str) else planner
        self.tools = tools if isinstance(tools, Toolset) else Toolset(tools)
        self.limits = limits or RunLimits()
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.node_timeout = node_timeout

    async def run(self, question: str) -> RunResult:
        """Answer `question`. Raises `ExecutionError` (with `.trace`) if the run cannot finish."""
        return await self._run(question, self._new_trace(question))

    def run_sync(self, question: str) -> RunResult:
        """`run` in an event loop of its own; the model's connections close with it."""

        async def run_then_close() -> RunResult:
            try:
                return await self.run(question)
            finally:
                await self.model.aclose()

        return asyncio.run(run_then_close())

    async def run_stream(self, question: str) -> AsyncGenerator[TraceEvent | RunResult, None]:
        """Trace events as they happen, then the `RunResult` last.

        To stop early, iterate inside `contextlib.aclosing(agent.run_stream(q))`: leaving the
        block cancels the run at once instead of when the generator is garbage-collected.
        """
        trace = self._new_trace(question)
        queue: asyncio.Queue[TraceEvent] = asyncio.Queue()
        trace.listeners.append(queue.put_nowait)
        running = asyncio.create_task(self._run(question, trace))
        try:
            while not (running.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            # The consumer stopped early or was cancelled: take the run down with it.
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        yield running.result()

    def _new_trace(self, question: str) -> Trace:
        if not question.strip():
            raise UserError("the question is empty")
        return Trace(question=question, planner=self.planner.name)

    async def _run(self, question: str, trace: Trace) -> RunResult:
        ctx = RunContext(model=self.model, tools=self.tools, trace=trace, limits=self.limits)
        state = RunState(question=question)
        executor = Executor(max_concurrency=self.max_concurrency, node_timeout=self.node_timeout)
        try:
            for round_index in range(self.planner.max_rounds):
                state.round = round_index
                state.final_round = round_index == self.planner.max_rounds - 1
                nodes = self.planner.plan(state, ctx)
                await executor.execute(nodes, state, ctx, self.planner.run_llm_node)
                decision = await self.planner.join(state, ctx)
                if isinstance(decision, Answer):
                    trace.emit("answer", text=decision.text)
                    reply = decision.text if decision.reply is None else decision.reply
                    return RunResult(answer=decision.text, reply=reply, trace=trace)
                if isinstance(decision, Replan):
                    trace.replans += 1
                    state.replan_reasons.append(decision.reason)
                    trace.emit("replan", reason=decision.reason)
        except ModelError as exc:
            raise ExecutionError(str(exc), trace=trace) from exc
        raise ExecutionError(
            f"planner {self.planner.name!r} did not answer in its final round", trace=trace
        )
