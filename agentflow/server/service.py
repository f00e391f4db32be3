"""Chat requests to agent runs: admission (a cap on runs in flight, a bounded queue), the run
itself (rewrite a follow-up, research with the agent, write the answer as a stream), and the
store of runs that `GET /v1/runs/{id}` reads.

Each run is one task that puts `Update`s on a queue; whoever sends the response reads the queue
and cancels the task when it stops reading (a client that disconnects cancels its run and its
in-flight model requests: nothing keeps generating for nobody).

The run's limits cover every call it makes, the answer call included: a request's `agentflow`
options may lower the operator's caps, never raise them, and the answer call's completion is
capped (`answer_max_tokens`) and counted inside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from agentflow.agent import Agent, RunResult
from agentflow.context import RunLimits
from agentflow.exceptions import (
    ExecutionError,
    LimitExceededError,
    ModelResponseError,
    UserError,
)
from agentflow.model import Message, ModelSettings, Usage
from agentflow.planner import Planner
from agentflow.registry import load_planner
from agentflow.server.config import AgentSpec, ServerConfig
from agentflow.server.conversation import Conversation, planned_question
from agentflow.server.failures import EmptyAnswerError, public_failure, public_node_error
from agentflow.server.metrics import ServerMetrics
from agentflow.server.progress import describe
from agentflow.server.protocol import ChatCompletionRequest, RequestError
from agentflow.server.readiness import ModelProbe
from agentflow.server.runs import RunId, RunRecord, RunStore
from agentflow.tool import PooledSource
from agentflow.trace import Trace

__all__ = [
    "ChatRun",
    "ChatService",
    "Content",
    "Failed",
    "Finished",
    "Reasoning",
    "RunId",
    "RunRecord",
    "Update",
]

logger = logging.getLogger("agentflow.server")

REWRITE_SETTINGS = ModelSettings(temperature=0.0, max_tokens=96)
SHUTTING_DOWN = "the server is shutting down"
ANSWER_FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})
"""An answer call's finish reasons passed to the client as they are (OpenAI's; vLLM sends
`stop` and `length`). Any other, such as vLLM's `abort` (the request was dropped mid-answer)
or `error`, means the text is not a whole answer: the run fails with a 502."""
CHARS_PER_TOKEN = 3
"""A cautious guess of the answer prompt's tokens from its characters (English runs ~4), so
the answer call's cap keeps the run inside its token limit before the server counts."""


@dataclass(frozen=True)
class Reasoning:
    """A line of progress: the plan, a node starting or finishing."""

    text: str


@dataclass(frozen=True)
class Content:
    """A piece of the answer as the model writes it."""

    text: str


@dataclass(frozen=True)
class Finished:
    usage: Usage
    """Every model call of the run: rewrite, planning, nodes, joiner and answer."""
    finish_reason: str = "stop"
    """The answer call's, as the model server said it (`length` when cut at its cap)."""


@dataclass(frozen=True)
class Failed:
    """The run stopped without an answer; `message` is short and safe to show."""

    message: str
    status: int = 500


Update = Reasoning | Content | Finished | Failed


class _ObservedAgent(Agent):
    """An agent for one run that keeps its trace, so progress lines can show a node's result
    the moment it finishes (the events carry no outputs)."""

    trace: Trace | None = None

    def _new_trace(self, question: str) -> Trace:
        self.trace = super()._new_trace(question)
        return self.trace


class ChatService:
    """Runs chat requests against the configured agents; one per app, built in its lifespan."""

    def __init__(self, config: ServerConfig, runs: RunStore[RunRecord] | None = None) -> None:
        """`runs` is where runs are kept for `GET /v1/runs/{id}`: by default a store of this
        process's; a replica passes one that publishes them to the store the replicas share."""
        if not config.agents:
            raise UserError("a server needs at least one agent")
        self.config = config
        self.agents = {spec.id: spec for spec in config.agents}
        if runs is None:  # not `runs or`: an empty store is falsy (it has a length)
            runs = RunStore(
                ttl=config.trace_ttl, max_count=config.runs_kept, max_bytes=config.runs_kept_bytes
            )
        self.runs = runs
        self.accepting = True
        self.in_flight = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(config.max_runs)
        self._active: dict[asyncio.Task[None], ChatRun] = {}
        self._hurry = asyncio.Event()
        """Set by `hurry`: the drain's grace is over now."""
        self._planners: dict[str, Planner] = {}
        self.metrics = ServerMetrics(lambda: self.in_flight, lambda: self.waiting)
        self.probe = ModelProbe(spec.model for spec in config.agents)

    def start(self, request: ChatCompletionRequest, owner: str | None = None) -> ChatRun:
        """Check the request and admit it (429 when the queue is full); the run starts now.
        `owner` is the API key that asked: only it may read the run back."""
        request.check_supported()
        spec = self.agents.get(request.model)
        if spec is None:
            raise RequestError(
                f"the model {request.model!r} does not exist; served: {', '.join(self.agents)}",
                param="model",
                status=404,
                code="model_not_found",
            )
        conversation = Conversation.from_messages(request.messages)
        planner = self._planner(request, spec)
        try:
            self._admit()
        except RequestError as exc:
            self.metrics.rejected.labels(status=str(exc.status)).inc()
            raise
        run = ChatRun(self, spec, planner, request, conversation)
        run.record.owner = owner
        self.runs.add(run.record)
        run.task = asyncio.create_task(run.produce())
        self.waiting += 1
        self._active[run.task] = run
        run.task.add_done_callback(lambda task: self._settle(run, task))
        return run

    def _settle(self, run: ChatRun, task: asyncio.Task[None]) -> None:
        """Account for a run whose task ended, even one cancelled before it ever ran (a
        client gone at once): it leaves the queue and is recorded as cancelled."""
        self._active.pop(task, None)
        if run.queued:
            run.queued = False
            self.waiting -= 1
        if run.record.finished is None:
            run.never_ran()
        self.runs.finish(run.record)

    def _admit(self) -> None:
        if not self.accepting:
            raise RequestError(SHUTTING_DOWN, status=503, type="server_error")
        admitted = self.in_flight + self.waiting
        if admitted >= self.config.max_runs + self.config.max_queue:
            raise RequestError(
                f"too many runs: {self.in_flight} running and {self.waiting} queued",
                status=429,
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(self.config.retry_after)},
            )

    def _planner(self, request: ChatCompletionRequest, spec: AgentSpec) -> Planner:
        """The run's planner (shared between runs, as planners are designed to be)."""
        options = request.agentflow
        name = (options.planner if options else None) or spec.planner
        if isinstance(name, Planner):
            return name
        if name not in self._planners:
            try:
                self._planners[name] = load_planner(name)
            except UserError as exc:
                raise RequestError(str(exc), param="agentflow.planner") from exc
        return self._planners[name]

    @contextlib.asynccontextmanager
    async def slot(self, run: ChatRun) -> AsyncIterator[None]:
        """Wait in the queue for one of `max_runs` slots."""
        await self._slots.acquire()
        run.queued = False
        self.waiting -= 1
        self.in_flight += 1
        waited = time.time() - run.record.created
        self.metrics.queue_seconds.labels(agent=run.spec.id).observe(waited)
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()

    async def drain(self, grace: float) -> None:
        """Stop accepting, give running answers `grace` seconds, then stop the rest with an
        error their clients see (503: the server is shutting down), and wait until they have
        put it out."""
        self.accepting = False
        if not self._active:
            return
        await self._grace(grace)
        late = [task for task in self._active if not task.done()]
        for task in late:
            run = self._active.get(task)
            if run is not None:
                run.stop(SHUTTING_DOWN)
        await asyncio.gather(*late, return_exceptions=True)

    def hurry(self) -> None:
        """End the drain's grace now (a second SIGTERM): the runs still going stop with the
        shutting-down error at once."""
        self._hurry.set()

    async def _grace(self, grace: float) -> None:
        """Until the running runs have ended, `grace` seconds have passed or `hurry`."""
        ended = asyncio.ensure_future(asyncio.wait(set(self._active), timeout=grace))
        hurried = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({ended, hurried}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the runs themselves are not cancelled by this: `drain` stops them
            for waiter in (ended, hurried):
                waiter.cancel()
            await asyncio.gather(ended, hurried, return_exceptions=True)

    async def aclose(self, grace: float) -> None:
        """Drain (see `drain`), then close the models' connections and the pooled MCP
        sessions (their servers stop)."""
        await self.drain(grace)
        await self.runs.aclose()
        for spec in self.config.agents:
            await spec.model.aclose()
            for source in spec.tool_sources:
                if isinstance(source, PooledSource):
                    await source.aclose()


class ChatRun:
    """One request's run: `produce` does the work, `updates` is what the response sends."""

    def __init__(
        self,
        service: ChatService,
        spec: AgentSpec,
        planner: Planner,
        request: ChatCompletionRequest,
        conversation: Conversation,
    ) -> None:
        self.id = RunId(uuid.uuid4().hex[:24])
        self.service = service
        self.spec = spec
        self.planner = planner
        self.request = request
        self.conversation = conversation
        self.record = RunRecord(id=self.id, model=spec.id, question=conversation.message)
        self.created = int(time.time())
        self.task: asyncio.Task[None] | None = None
        self.queued = True
        """Admitted and waiting for a slot (counted in `ChatService.waiting`)."""
        self.limits = self._limits()
        self._stopping: str | None = None
        self._queue: asyncio.Queue[Update] = asyncio.Queue()

    async def updates(self, keepalive: float) -> AsyncGenerator[Update | None, None]:
        """The run's updates until it finishes or fails; None after `keepalive` seconds of
        silence. Leaving early (a disconnect) cancels the run."""
        getter: asyncio.Future[Update] | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter}, timeout=keepalive)
                if not done:
                    yield None
                    continue
                update, getter = getter.result(), None
                yield update
                if isinstance(update, Finished | Failed):
                    return
        finally:
            if getter is not None:
                getter.cancel()
            if self.task is not None and not self.task.done():
                self.task.cancel()

    def stop(self, message: str) -> None:
        """Cancel the run, telling its client why (a 503 error it can read, not a cut)."""
        self._stopping = message
        if self.task is not None:
            self.task.cancel()

    def never_ran(self) -> None:
        """Record a run cancelled before its task took its first step; one stopped at
        shutdown still tells its client why."""
        record = self.record
        record.status, record.error, record.finished = "cancelled", "cancelled", time.time()
        seconds = record.finished - record.created
        self.service.metrics.finished(self.spec.id, record.status, seconds, record.usage)
        if self._stopping:
            self._fail(self._stopping, 503, "shutdown")

    async def produce(self) -> None:
        record = self.record
        try:
            async with self.service.slot(self):
                record.status = "running"
                self.service.runs.update(record)
                async with asyncio.timeout(self.service.config.run_timeout):
                    self._put(await self._answer())
            record.status = "ok"
        except asyncio.CancelledError:
            record.status, record.error = "cancelled", "cancelled"
            if self._stopping:
                self._fail(self._stopping, 503, "shutdown")
            raise
        except TimeoutError:
            timeout = self.service.config.run_timeout
            self._fail(f"the run took longer than its limit of {timeout:g} s", 504, "timeout")
        except Exception as exc:
            self._failed(exc)
        finally:
            record.finished = time.time()
            seconds = record.finished - record.created
            self.service.metrics.finished(self.spec.id, record.status, seconds, record.usage)

    def _failed(self, exc: Exception) -> None:
        """The client gets a fixed sentence for the error's kind; the log gets all of it."""
        failure = public_failure(exc)
        if failure.kind == "internal":
            logger.exception("run %s failed", self.id)
        else:
            logger.warning("run %s failed: %s", self.id, _one_line(str(exc)))
        self._fail(failure.message, failure.status, failure.kind)

    def _put(self, update: Update) -> None:
        self._queue.put_nowait(update)

    def _fail(self, message: str, status: int, kind: str) -> None:
        self.record.status, self.record.error = "failed", message
        self.service.metrics.failures.labels(agent=self.spec.id, kind=kind).inc()
        self._put(Failed(message=message, status=status))

    async def _answer(self) -> Finished:
        """Rewrite a follow-up, research it with the agent, then stream the answer."""
        conversation = self.conversation
        question, usage = await self._standalone_question()
        reminder = conversation.reminder(self.service.config.remind_after_turns)
        result = await self._research(planned_question(question, reminder), usage)
        usage = usage + result.usage
        messages = conversation.answer_messages(result, reminder)
        return await self._write(messages, usage)

    async def _write(self, messages: list[Message], usage: Usage) -> Finished:
        """The answer call, streamed to the client; a stream with no text is a failure."""
        finish_reason = "stop"
        settings = self._answer_settings(messages, usage)
        async for delta in self.spec.model.stream(messages, settings):
            if delta.text and not self.record.answer:
                waited = time.time() - self.record.created
                self.service.metrics.first_content_seconds.labels(agent=self.spec.id).observe(
                    waited
                )
            if delta.text:
                self.record.answer += delta.text
                self._put(Content(delta.text))
            finish_reason = delta.finish_reason or finish_reason
            if delta.usage is not None:
                usage = usage + delta.usage
            if delta.timing is not None:
                self.service.metrics.model_calls(self.spec.id, [delta.timing])
        self.record.usage = usage
        if not self.record.answer.strip():
            raise EmptyAnswerError("the answer call's stream had no text", body=self.record.answer)
        if finish_reason not in ANSWER_FINISH_REASONS:
            raise ModelResponseError(
                f"the answer call ended with finish_reason {finish_reason!r}",
                body=self.record.answer,
            )
        return Finished(usage=usage, finish_reason=finish_reason)

    async def _standalone_question(self) -> tuple[str, Usage]:
        """A follow-up as a question that stands alone (one model call), or the message."""
        conversation = self.conversation
        if not conversation.turns:
            return conversation.message, Usage()
        response = await self.spec.model.complete(conversation.rewrite_messages(), REWRITE_SETTINGS)
        question = response.text.strip().strip('"').strip() or conversation.message
        self._put(Reasoning(f"Question: {question}\n"))
        return question, response.usage

    async def _research(self, question: str, used: Usage) -> RunResult:
        agent = _ObservedAgent(
            model=self.spec.model,
            planner=self.planner,
            tools=[*self.spec.tools, *self.spec.tool_sources],
            limits=self._research_limits(used),
            max_concurrency=self.spec.max_concurrency,
        )
        try:
            async with contextlib.aclosing(agent.run_stream(question)) as events:
                async for item in events:
                    if isinstance(item, RunResult):
                        return item
                    line = describe(item, agent.trace)
                    if line:
                        self._put(Reasoning(line))
        finally:
            self.record.trace = agent.trace
            if agent.trace is not None:
                self.record.usage = agent.trace.usage
                self.service.metrics.model_calls(self.spec.id, agent.trace.requests)
                self._log_node_errors(agent.trace)
        raise ExecutionError("the run ended without a result", trace=agent.trace)

    def _log_node_errors(self, trace: Trace) -> None:
        """The log gets in full the node errors the run's record shows its client redacted."""
        for node in trace.nodes.values():
            if node.error is not None and public_node_error(node.error) != node.error:
                logger.warning("run %s node %s: %s", self.id, node.id, _one_line(node.error))

    def _limits(self) -> RunLimits:
        """The operator's caps, which the request's `agentflow` options may only lower."""
        options, limits = self.request.agentflow, self.spec.limits
        calls, tokens = limits.max_model_calls, limits.max_tokens
        if options is not None:
            calls = min(calls, options.max_model_calls or calls)
            tokens = min(tokens, options.max_tokens or tokens)
        return RunLimits(max_model_calls=calls, max_tokens=tokens, deadline=limits.deadline)

    def _research_limits(self, used: Usage) -> RunLimits:
        """The run's limits less what the rewrite used and one call kept for the answer."""
        limits = self.limits
        calls = limits.max_model_calls - used.calls - 1
        if calls < 1:
            raise LimitExceededError(
                f"the run reached its cap of {limits.max_model_calls} model calls: none left "
                "to research after the answer call's"
            )
        tokens = limits.max_tokens - used.total_tokens
        return RunLimits(max_model_calls=calls, max_tokens=tokens, deadline=limits.deadline)

    def _answer_settings(self, messages: list[Message], used: Usage) -> ModelSettings:
        """The request's sampling parameters apply to the answer-writing call, whose
        completion is capped by the operator, the request and what the run's tokens leave."""
        request, limits = self.request, self.limits
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // CHARS_PER_TOKEN
        left = limits.max_tokens - used.total_tokens - prompt
        if left < 1:
            raise LimitExceededError(
                f"the run reached its cap of {limits.max_tokens} tokens before the answer call"
            )
        cap = min(self.service.config.answer_max_tokens, request.answer_max_tokens or left, left)
        return ModelSettings(
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=cap,
            seed=request.seed,
            stop=request.stop_list,
        )


def _one_line(text: str, limit: int = 2000) -> str:
    """An error for one log line: newlines in model output or a server's reply cannot start
    a line of their own (a forged log entry)."""
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[:limit] + "..."
