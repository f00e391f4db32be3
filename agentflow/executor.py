"""The executor: runs each node the instant its inputs resolve, all branches concurrently.

One `asyncio.TaskGroup` per round; a future per node; a node's task awaits its dependencies'
futures (no polling, no waves), then takes a slot of its tool's semaphore and of the global one
(a node that forks requests of its own lends its global slot to them: `agentflow.slots`).
A node that fails becomes a failed `TaskResult` for the joiner. Errors that doom the whole run
(the model server is gone, a cap is reached) cancel every other node and end the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, KeysView
from dataclasses import dataclass, field
from typing import Any

from agentflow.context import RunContext
from agentflow.exceptions import (
    AgentflowError,
    ExecutionError,
    LimitExceededError,
    ModelConnectionError,
    ModelHTTPError,
    ModelOutputError,
    ModelResponseError,
)
from agentflow.plan import LLM_KIND, TaskId, TaskNode, resolve_args
from agentflow.planner import RunState, TaskResult
from agentflow.scheduling import RemainingPaths, request_priority
from agentflow.slots import NodeSlot, current_slot
from agentflow.tool import ToolError
from agentflow.trace import EventType, NodeRecord

__all__ = ["Executor", "LLMStepRunner"]

LLMStepRunner = Callable[[TaskNode, dict[str, Any], RunContext], Awaitable[Any]]
"""Runs an `llm` node given its resolved arguments (the planner's `run_llm_node`)."""

_FATAL = (LimitExceededError, ModelConnectionError, ModelHTTPError, ModelResponseError)
"""Errors after which no node can succeed: the run stops instead of limping on. A reply the
server sent broken is one (an answer built on it would be the server's failure recorded as the
model's); `ModelOutputError`, the model's own text off its schema, is not (`_NOT_FATAL`)."""
_NOT_FATAL = ModelOutputError
_YIELD_EVERY = 16
"""Nodes registered between two yields to the event loop while a plan is handed over."""


@dataclass(kw_only=True)
class Executor:
    max_concurrency: int = 16
    """Nodes running at once, over all tools and model steps."""
    node_timeout: float = 180.0
    """Seconds for an `llm` node; tools use their own `Tool.timeout`. A node that times out is
    not tried again (whatever hung would hang again), so a node never takes longer than this."""
    node_retries: int = 1
    """Extra attempts after an unexpected error (not after a `ToolError` or a timeout)."""
    _global: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _per_tool: dict[str, asyncio.Semaphore] = field(default_factory=dict, init=False, repr=False)

    async def execute(
        self,
        nodes: AsyncIterable[TaskNode],
        state: RunState,
        ctx: RunContext,
        run_llm: LLMStepRunner,
    ) -> None:
        """Run every node `nodes` yields; results land in `state.results` as they finish."""
        loop = asyncio.get_running_loop()
        futures: dict[TaskId, asyncio.Future[TaskResult]] = {}
        for node_id, result in state.results.items():  # finished in earlier rounds: never rerun
            futures[node_id] = loop.create_future()
            futures[node_id].set_result(result)
        planning_error: AgentflowError | None = None
        launched = 0
        paths = RemainingPaths()
        try:
            async with asyncio.TaskGroup() as group:
                try:
                    async for node in nodes:
                        dep_ids = sorted(node.deps)  # derived by walking the args: do it once
                        self._register(node, dep_ids, state, ctx)
                        paths.add(node.id, dep_ids)
                        future = futures.setdefault(node.id, loop.create_future())
                        deps = [futures.setdefault(d, loop.create_future()) for d in dep_ids]
                        group.create_task(self._run(node, deps, future, state, ctx, run_llm, paths))
                        launched += 1
                        if launched % _YIELD_EVERY == 0:
                            # A plan handed over all at once must not hold back the nodes it
                            # has already registered: let them start.
                            await asyncio.sleep(0)
                except _NOT_FATAL as exc:
                    planning_error = exc  # as below: the model's plan broke off
                    ctx.trace.emit("plan", error=str(exc))
                except _FATAL:
                    raise
                except AgentflowError as exc:
                    # The plan broke off (off-schema output, no usable node): what already
                    # runs finishes and the joiner works with it.
                    planning_error = exc
                    ctx.trace.emit("plan", error=str(exc))
                _fail_orphans(futures, registered=state.nodes.keys())
        except* _FATAL as group_error:
            error = group_error.exceptions[0]
            raise ExecutionError(str(error), trace=ctx.trace) from error
        if planning_error is not None and launched == 0:
            raise planning_error

    def _register(
        self, node: TaskNode, dep_ids: list[TaskId], state: RunState, ctx: RunContext
    ) -> None:
        state.nodes[node.id] = node
        label = node.describe()
        ctx.trace.nodes[node.id] = NodeRecord(
            id=node.id,
            kind=node.kind,
            deps=list(dep_ids),
            tool=node.tool,
            round=state.round,
            label=label,
        )
        ctx.trace.emit("planned", node.id, label=label)

    async def _run(
        self,
        node: TaskNode,
        deps: list[asyncio.Future[TaskResult]],
        future: asyncio.Future[TaskResult],
        state: RunState,
        ctx: RunContext,
        run_llm: LLMStepRunner,
        paths: RemainingPaths,
    ) -> None:
        record = ctx.trace.nodes[node.id]
        try:
            dep_results = [await dep for dep in deps]
            # Asked now, not at planning time: by now the plan has named most of the node's
            # dependents. The variable is this task's own: siblings set theirs.
            request_priority.set(paths.priority(node.id))
            result = await self._run_ready(node, dep_results, state, ctx, run_llm)
        except asyncio.CancelledError:
            result = TaskResult(node_id=node.id, status="cancelled", error="run cancelled")
            self._finish(record, result, state, ctx, future)
            raise
        except _FATAL as exc:
            result = TaskResult(node_id=node.id, status="cancelled", error=str(exc))
            self._finish(record, result, state, ctx, future)
            raise
        self._finish(record, result, state, ctx, future)

    async def _run_ready(
        self,
        node: TaskNode,
        dep_results: list[TaskResult],
        state: RunState,
        ctx: RunContext,
        run_llm: LLMStepRunner,
    ) -> TaskResult:
        failed = [r for r in dep_results if not r.ok]
        if failed:
            reasons = "; ".join(f"{r.node_id}: {r.error}" for r in failed)
            return TaskResult(node_id=node.id, status="failed", error=f"input failed ({reasons})")
        async with self._tool_slot(node, ctx), NodeSlot(self._global_slot()) as slot:
            current_slot.set(slot)  # this task's own, as `request_priority` is
            record = ctx.trace.nodes[node.id]
            record.status, record.started_at = "running", ctx.trace.now()
            ctx.trace.emit("started", node.id)
            inputs = {r.node_id: r.output for r in dep_results}
            return await self._attempts(node, inputs, ctx, run_llm)

    async def _attempts(
        self,
        node: TaskNode,
        inputs: dict[TaskId, Any],
        ctx: RunContext,
        run_llm: LLMStepRunner,
    ) -> TaskResult:
        # Resolve against this node's own inputs only: the whole run's outputs would cost
        # time growing with the plan, for every node.
        args = resolve_args(node.args, inputs, fence=node.kind == LLM_KIND)  # a new dict
        error = "not run"
        cause: BaseException | None = None
        for _ in range(self.node_retries + 1):
            try:
                output = await self._call(node, args, ctx, run_llm)
                return TaskResult(node_id=node.id, status="ok", output=output)
            except ToolError as exc:  # the tool's own message for the model (RetryTask too)
                return TaskResult(node_id=node.id, status="failed", error=str(exc))
            except TimeoutError as exc:
                error, cause = f"timed out after {self._timeout(node, ctx):g} s", exc
                break
            except _NOT_FATAL as exc:  # the model's own text: data for the joiner
                error, cause = f"{type(exc).__name__}: {exc}", exc
            except _FATAL:
                raise
            except Exception as exc:  # a tool's own bug: recorded for the joiner, run goes on
                error, cause = f"{type(exc).__name__}: {exc}", exc
        return TaskResult(node_id=node.id, status="failed", error=error, exception=cause)

    async def _call(
        self, node: TaskNode, args: dict[str, Any], ctx: RunContext, run_llm: LLMStepRunner
    ) -> Any:
        async with asyncio.timeout(self._timeout(node, ctx)):
            if node.kind == "llm":
                return await run_llm(node, args, ctx)
            tool = ctx.tools.get(node.tool or "")
            if tool is None:
                raise ToolError(f"no tool named {node.tool!r}")
            return await tool.call(args)

    def _timeout(self, node: TaskNode, ctx: RunContext) -> float:
        tool = ctx.tools.get(node.tool or "") if node.kind == "tool" else None
        return tool.timeout if tool else self.node_timeout

    def _finish(
        self,
        record: NodeRecord,
        result: TaskResult,
        state: RunState,
        ctx: RunContext,
        future: asyncio.Future[TaskResult],
    ) -> None:
        state.results[result.node_id] = result
        record.status = result.status
        record.finished_at = ctx.trace.now()
        if record.started_at is None:  # failed or cancelled before it could start
            record.started_at = record.finished_at
        record.error = result.error
        record.output = result.as_text(300) if result.ok else None
        event: EventType = "finished" if result.status == "ok" else result.status
        ctx.trace.emit(event, result.node_id, error=result.error)
        if not future.done():
            future.set_result(result)

    def _global_slot(self) -> asyncio.Semaphore:
        if self._global is None:
            self._global = asyncio.Semaphore(self.max_concurrency)
        return self._global

    def _tool_slot(self, node: TaskNode, ctx: RunContext) -> asyncio.Semaphore:
        name = node.tool if node.kind == "tool" and node.tool else "llm"
        if name not in self._per_tool:
            tool = ctx.tools.get(name)
            limit = tool.max_concurrency if tool else self.max_concurrency
            self._per_tool[name] = asyncio.Semaphore(limit)
        return self._per_tool[name]


def _fail_orphans(
    futures: dict[TaskId, asyncio.Future[TaskResult]], registered: KeysView[TaskId]
) -> None:
    """References to nodes that never arrived: fail them so their dependents do not wait forever."""
    for node_id, future in futures.items():
        if node_id not in registered and not future.done():
            future.set_result(
                TaskResult(node_id=node_id, status="failed", error="no such node in the plan")
            )
