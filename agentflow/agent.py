"""`Agent`: the loop plan -> execute -> join -> replan, and its sync and streaming faces."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from agentflow import _structured
from agentflow.allocation import Allocator, Step, load_allocator
from agentflow.context import DEADLINE_JOIN_SHARE, RunContext, RunLimits
from agentflow.exceptions import (
    DeadlineExceededError,
    ExecutionError,
    ModelError,
    ModelOutputError,
    ModelTimeoutError,
    PlanError,
    UserError,
)
from agentflow.executor import Executor, LLMStepRunner
from agentflow.model import Model, Usage
from agentflow.plan import TaskNode
from agentflow.planner import Answer, Continue, Planner, Replan, RunState
from agentflow.registry import load_planner
from agentflow.telemetry import run_span
from agentflow.tool import (
    Tool,
    ToolError,
    Toolset,
    ToolSource,
    open_tools,
    render_output,
    split_tools,
)
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
    deadline_hit: bool = False
    """The run reached its deadline (`RunLimits.deadline`): the work left was cancelled and
    this answer joins only the findings made until then."""

    @property
    def usage(self) -> Usage:
        return self.trace.usage

    def as_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "reply": self.reply,
            "deadline_hit": self.deadline_hit,
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
        tools: Toolset | Iterable[Tool | Callable[..., Any] | ToolSource] = (),
        limits: RunLimits | None = None,
        max_concurrency: int = 16,
        node_timeout: float = 180.0,
        allocation: Allocator | str | None = None,
    ) -> None:
        """`allocation`: an `Allocator`, an `--allocation` name (`"score"`, `"agreement"`, ...,
        with the calibrated tau from the allocation config), `"off"`, or None for the
        planner's own default (`scale` allocates by `score`; the others run off).

        `tools` may hold `ToolSource`s (`agentflow_tools.MCPServer`): each run opens them all
        when it starts and closes them when it ends; `self.tools` holds the static ones."""
        self.model = model
        self.planner = load_planner(planner) if isinstance(planner, str) else planner
        self.tools, self.tool_sources = (
            (tools, ()) if isinstance(tools, Toolset) else split_tools(tools)
        )
        self.limits = limits or RunLimits()
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.node_timeout = node_timeout
        if allocation is None:
            allocation = getattr(self.planner, "default_allocation", None) or "off"
        self.allocator = load_allocator(allocation) if isinstance(allocation, str) else allocation

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
        """The run, with its tool sources open for its length (closed on cancel too)."""
        if not self.tool_sources:
            return await self._run_with(question, trace, self.tools)
        async with contextlib.AsyncExitStack() as stack:
            try:
                tools = await stack.enter_async_context(open_tools(self.tools, self.tool_sources))
            except ToolError as exc:  # a source that would not open: not the tools it was given
                raise ExecutionError(str(exc), trace=trace) from exc
            return await self._run_with(question, trace, tools)

    async def _run_with(self, question: str, trace: Trace, tools: Toolset) -> RunResult:
        ctx = RunContext(model=self.model, tools=tools, trace=trace, limits=self.limits)
        state = RunState(question=question)
        deadline = _Deadline.after(self.limits.deadline)
        try:
            with run_span(trace, self.model.name):  # an OpenTelemetry trace, if configured
                return await self._rounds(state, ctx, deadline)
        except ModelOutputError as exc:  # the model's own failure: offer what it did write
            best = _structured.best_effort_text(exc.body, "answer")
            raise ExecutionError(str(exc), trace=trace, best_answer=best) from exc
        except ModelError as exc:
            raise ExecutionError(str(exc), trace=trace) from exc

    async def _rounds(self, state: RunState, ctx: RunContext, deadline: _Deadline) -> RunResult:
        """Plan, execute, join, until the planner answers; past the deadline's soft end, the
        work left is cancelled and the findings so far are joined (`_answer_at_deadline`)."""
        executor = Executor(max_concurrency=self.max_concurrency, node_timeout=self.node_timeout)
        for round_index in range(self.planner.max_rounds):
            state.round = round_index
            state.final_round = round_index == self.planner.max_rounds - 1
            work = asyncio.timeout_at(deadline.soft)
            try:
                async with work:
                    nodes = self.planner.plan(state, ctx)
                    await executor.execute(nodes, state, ctx, self._llm_runner(state))
            except TimeoutError:
                if not work.expired():
                    raise
                return await self._answer_at_deadline(state, ctx, deadline)
            decision = await self._join(state, ctx, deadline)
            if isinstance(decision, Answer):
                return self._answered(decision, ctx.trace)
            if isinstance(decision, Replan):
                ctx.trace.replans += 1
                state.replan_reasons.append(decision.reason)
                ctx.trace.emit("replan", reason=decision.reason)
        raise ExecutionError(
            f"planner {self.planner.name!r} did not answer in its final round", trace=ctx.trace
        )

    async def _join(
        self, state: RunState, ctx: RunContext, deadline: _Deadline
    ) -> Answer | Replan | Continue:
        """The planner's join, which must end by the deadline (`DeadlineExceededError` else)."""
        joining = asyncio.timeout_at(deadline.hard)
        try:
            async with joining:
                return await self.planner.join(state, ctx)
        except TimeoutError:
            if not joining.expired():
                raise
        raise _deadline_error(deadline, ctx, "the join was still running")

    async def _answer_at_deadline(
        self, state: RunState, ctx: RunContext, deadline: _Deadline
    ) -> RunResult:
        """The deadline's soft end passed: join what was found, as the final round, by the
        deadline; if the join cannot answer, the error carries what its unusable reply did
        write as the answer, if anything."""
        state.final_round = True
        try:
            decision = await self._join(state, ctx, deadline)
        except DeadlineExceededError:
            raise
        except (ExecutionError, ModelOutputError, PlanError) as exc:
            unusable = exc.body if isinstance(exc, ModelOutputError) else ""
            best = _structured.best_effort_text(unusable, "answer")
            error = _deadline_error(deadline, ctx, f"the join failed: {exc}", best_answer=best)
            raise error from error.__cause__  # not `exc`: the deadline's failure, not the join's
        if not isinstance(decision, Answer):
            raise _deadline_error(deadline, ctx, "the join did not answer")
        return self._answered(decision, ctx.trace, deadline_hit=True)

    def _answered(self, decision: Answer, trace: Trace, *, deadline_hit: bool = False) -> RunResult:
        if deadline_hit:
            trace.emit("answer", text=decision.text, deadline_hit=True)
        else:
            trace.emit("answer", text=decision.text)
        reply = decision.text if decision.reply is None else decision.reply
        return RunResult(answer=decision.text, reply=reply, trace=trace, deadline_hit=deadline_hit)

    def _llm_runner(self, state: RunState) -> LLMStepRunner:
        """The planner's `run_llm_node`, under the allocator when there is one: each node gets
        a context whose calls for it are sent under its budget."""
        allocator, run_llm = self.allocator, self.planner.run_llm_node
        if allocator is None:
            return run_llm

        async def allocated(node: TaskNode, args: dict[str, Any], ctx: RunContext) -> Any:
            step = _step(node, args, state, ctx.trace.question)
            allocation = allocator.for_node(node.id, step, ctx.trace, ctx.model)
            return await run_llm(node, args, replace(ctx, allocation=allocation))

        return allocated


@dataclass(frozen=True)
class _Deadline:
    """A run's deadline on the event loop's clock: its work stops at `soft`, its join at `hard`
    (both None: no deadline)."""

    seconds: float | None = None
    soft: float | None = None
    hard: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> _Deadline:
        if seconds is None:
            return cls()
        now = asyncio.get_running_loop().time()
        return cls(seconds, now + seconds * (1 - DEADLINE_JOIN_SHARE), now + seconds)


def _deadline_error(
    deadline: _Deadline, ctx: RunContext, why: str, *, best_answer: str = ""
) -> DeadlineExceededError:
    """No answer by the deadline. If the run had a model reply by then, the system's failure:
    the error stands alone (its `TimeoutError` is the run's own limit), carrying `best_answer`
    (the unusable final reply's answer, if any). If no model call had completed at all, the
    server gave nothing (hung, or trickling bytes) and the run measured nothing: its cause is a
    `ModelTimeoutError`, which an eval counts as infrastructure (not recorded, retried on
    resume). A hung request and a slow model look alike, so once replies came, it is the run's."""
    limit = f"the run reached its deadline of {deadline.seconds:g} s (--deadline)"
    if ctx.trace.usage.calls or ctx.trace.requests:
        return DeadlineExceededError(f"{limit} and {why}", trace=ctx.trace, best_answer=best_answer)
    servers = _servers(ctx.model)
    who = f"the model server at {servers}" if servers else "the model server"
    gave_nothing = f"{who} gave nothing before the deadline (no model call completed)"
    error = DeadlineExceededError(f"{limit}: {gave_nothing}, and {why}", trace=ctx.trace)
    error.__cause__ = ModelTimeoutError(gave_nothing, base_url=servers)
    return error


def _servers(model: Model) -> str:
    """The base URLs of `model`'s servers, if it has any ("" for a test double)."""
    urls = getattr(getattr(model, "pool", None), "base_urls", None)
    return ", ".join(str(url) for url in urls) if isinstance(urls, list) else ""


def _step(node: TaskNode, args: dict[str, Any], state: RunState, problem: str) -> Step:
    """What the allocator sees of a node: its question and the steps it builds on, answered."""
    earlier = []
    for dep in sorted(node.deps):
        result, dep_node = state.results.get(dep), state.nodes.get(dep)
        asked = str(dep_node.args.get("question") or dep_node.describe()) if dep_node else dep
        answered = result.as_text(600) if result else ""
        earlier.append((asked, answered))
    question = args.get("question") or args.get("input") or node.describe()
    return Step(
        problem=problem,
        question=render_output(question, 2000),
        earlier=tuple(earlier),
        difficulty=node.difficulty,
    )
