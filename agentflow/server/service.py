"""Chat requests to agent runs: admission (a cap on runs in flight, a bounded queue), the run
itself (rewrite a follow-up, research with the agent, write the answer as a stream), and the
record of finished runs that `GET /v1/runs/{id}` returns.

Each run is one task that puts `Update`s on a queue; whoever sends the response reads the queue
and cancels the task when it stops reading (a client that disconnects cancels its run and its
in-flight model requests: nothing keeps generating for nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, NewType

from agentflow.agent import Agent, RunResult
from agentflow.context import RunLimits
from agentflow.exceptions import AgentflowError, ExecutionError, UserError
from agentflow.model import ModelSettings, Usage
from agentflow.planner import Planner
from agentflow.registry import load_planner
from agentflow.server.config import AgentSpec, ServerConfig
from agentflow.server.conversation import Conversation, planned_question
from agentflow.server.metrics import ServerMetrics
from agentflow.server.progress import describe
from agentflow.server.protocol import ChatCompletionRequest, RequestError
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

RunId = NewType("RunId", str)
REWRITE_SETTINGS = ModelSettings(temperature=0.0, max_tokens=96)
RunStatus = Literal["queued", "running", "ok", "failed", "cancelled"]


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


@dataclass(frozen=True)
class Failed:
    """The run stopped without an answer; `message` is short and safe to show."""

    message: str
    status: int = 500


Update = Reasoning | Content | Finished | Failed


@dataclass(kw_only=True)
class RunRecord:
    """What `GET /v1/runs/{id}` shows of a run."""

    id: RunId
    model: str
    question: str
    status: RunStatus = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    answer: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    trace: Trace | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "agentflow.run",
            "model": self.model,
            "status": self.status,
            "created": self.created,
            "finished": self.finished,
            "question": self.question,
            "answer": self.answer,
            "error": self.error,
            "usage": self.usage.as_dict(),
            "trace": self.trace.as_dict() if self.trace else None,
        }


class _ObservedAgent(Agent):
    """An agent for one run that keeps its trace, so progress lines can show a node's result
    the moment it finishes (the events carry no outputs)."""

    trace: Trace | None = None

    def _new_trace(self, question: str) -> Trace:
        self.trace = super()._new_trace(question)
        return self.trace


class ChatService:
    """Runs chat requests against the configured agents; one per app, built in its lifespan."""

    def __init__(self, config: ServerConfig) -> None:
        if not config.agents:
            raise UserError("a server needs at least one agent")
        self.config = config
        self.agents = {spec.id: spec for spec in config.agents}
        self.runs: dict[RunId, RunRecord] = {}
        self.accepting = True
        self.in_flight = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(config.max_runs)
        self._tasks: set[asyncio.Task[None]] = set()
        self._planners: dict[str, Planner] = {}
        self.metrics = ServerMetrics(lambda: self.in_flight, lambda: self.waiting)

    def start(self, request: ChatCompletionRequest) -> ChatRun:
        """Check the request and admit it (429 when the queue is full); the run starts now."""
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
        self.runs[run.id] = run.record
        self._prune()
        run.task = asyncio.create_task(run.produce())
        self.waiting += 1
        self._tasks.add(run.task)
        run.task.add_done_callback(lambda task: self._settle(run, task))
        return run

    def _settle(self, run: ChatRun, task: asyncio.Task[None]) -> None:
        """Account for a run whose task ended, even one cancelled before it ever ran (a
        client gone at once): it leaves the queue and is recorded as cancelled."""
        self._tasks.discard(task)
        if run.queued:
            run.queued = False
            self.waiting -= 1
        record = run.record
        if record.finished is None:
            record.status, record.error, record.finished = "cancelled", "cancelled", time.time()
            self.metrics.finished(record.status, record.finished - record.created, record.usage)

    def _admit(self) -> None:
        if not self.accepting:
            raise RequestError("the server is shutting down", status=503, type="server_error")
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
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()

    def _prune(self) -> None:
        """Forget finished runs older than the trace TTL."""
        horizon = time.time() - self.config.trace_ttl
        expired = [k for k, r in self.runs.items() if r.finished and r.finished < horizon]
        for key in expired:
            del self.runs[key]

    async def aclose(self, grace: float) -> None:
        """Stop accepting, give running answers `grace` seconds, cancel the rest, then close
        the models' connections."""
        self.accepting = False
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for spec in self.config.agents:
            await spec.model.aclose()


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

    async def produce(self) -> None:
        record = self.record
        try:
            async with self.service.slot(self):
                record.status = "running"
                async with asyncio.timeout(self.service.config.run_timeout):
                    self._put(Finished(usage=await self._answer()))
            record.status = "ok"
        except asyncio.CancelledError:
            record.status, record.error = "cancelled", "cancelled"
            raise
        except TimeoutError:
            timeout = self.service.config.run_timeout
            self._fail(f"the run took longer than its limit of {timeout:g} s", 504)
        except AgentflowError as exc:
            self._fail(_short(exc), 500)
        except Exception:
            logger.exception("run %s failed", self.id)
            self._fail("internal error", 500)
        finally:
            record.finished = time.time()
            seconds = record.finished - record.created
            self.service.metrics.finished(record.status, seconds, record.usage)

    def _put(self, update: Update) -> None:
        self._queue.put_nowait(update)

    def _fail(self, message: str, status: int) -> None:
        self.record.status, self.record.error = "failed", message
        self._put(Failed(message=message, status=status))

    async def _answer(self) -> Usage:
        """Rewrite a follow-up, research it with the agent, then stream the answer."""
        conversation = self.conversation
        question, usage = await self._standalone_question()
        reminder = conversation.reminder(self.service.config.remind_after_turns)
        result = await self._research(planned_question(question, reminder))
        usage = usage + result.usage
        messages = conversation.answer_messages(result, reminder)
        async for delta in self.spec.model.stream(messages, self._answer_settings()):
            if delta.text and not self.record.answer:
                waited = time.time() - self.record.created
                self.service.metrics.first_content_seconds.observe(waited)
            if delta.text:
                self.record.answer += delta.text
                self._put(Content(delta.text))
            if delta.usage is not None:
                usage = usage + delta.usage
        self.record.usage = usage
        return usage

    async def _standalone_question(self) -> tuple[str, Usage]:
        """A follow-up as a question that stands alone (one model call), or the message."""
        conversation = self.conversation
        if not conversation.turns:
            return conversation.message, Usage()
        response = await self.spec.model.complete(conversation.rewrite_messages(), REWRITE_SETTINGS)
        question = response.text.strip().strip('"').strip() or conversation.message
        self._put(Reasoning(f"Question: {question}\n"))
        return question, response.usage

    async def _research(self, question: str) -> RunResult:
        agent = _ObservedAgent(
            model=self.spec.model,
            planner=self.planner,
            tools=self.spec.tools,
            limits=self._limits(),
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
        raise ExecutionError("the run ended without a result", trace=agent.trace)

    def _limits(self) -> RunLimits:
        options, limits = self.request.agentflow, self.spec.limits
        if options is None:
            return limits
        return RunLimits(
            max_model_calls=options.max_model_calls or limits.max_model_calls,
            max_tokens=options.max_tokens or limits.max_tokens,
        )

    def _answer_settings(self) -> ModelSettings:
        """The request's sampling parameters apply to the answer-writing call."""
        request = self.request
        return ModelSettings(
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.answer_max_tokens,
            seed=request.seed,
            stop=request.stop_list,
        )


def _short(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error, clipped: what a client may see (never a traceback)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if len(first) <= limit else first[:limit] + "..."
