"""agentflow as an MCP server: one tool, `ask`, that answers a question with an `Agent`.

An MCP client (an IDE, another agent) calls `ask` with a question, a planner and limits; the
run's trace events reach it as progress notifications while the plan runs, and the answer comes
back as text with the run's usage as structured content. A run that cannot finish (the model
server is down, the plan is unusable, the deadline passed) is a tool error carrying agentflow's
own message; the server goes on serving. A client that cancels its call cancels the run.

Built on the official `mcp` SDK (the `mcp` extra). The core never imports this module: the
`agentflow mcp` command loads it when it runs.

>>> server = create_mcp_server(AskConfig(model=OpenAIModel("m", url)))   # doctest: +SKIP
>>> server.run("stdio")                                                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from agentflow.agent import Agent, RunResult
from agentflow.context import RunLimits
from agentflow.exceptions import AgentflowError, ExecutionError, UserError
from agentflow.model import Model, Usage
from agentflow.registry import load_planner, planner_names
from agentflow.tool import Tool, ToolError, ToolSource
from agentflow.trace import Trace, TraceEvent

try:
    from mcp.server.mcpserver import Context, MCPServer
    from mcp_types import CallToolResult, TextContent, ToolAnnotations
except ImportError as _missing:  # the extra is not installed
    raise ImportError(
        f"agentflow as an MCP server needs the mcp package ({_missing}): "
        "pip install 'agentflow-dag[mcp]'"
    ) from _missing

__all__ = ["AskConfig", "AskResult", "AskUsage", "create_mcp_server"]

MESSAGE_CHARS = 200
"""How much of a label, an error or a replan reason one progress message shows."""


@dataclass(frozen=True, kw_only=True)
class AskConfig:
    """What every `ask` call runs with. A call may pick the planner and lower the limits."""

    model: Model
    """Shared by all calls; the caller closes it when the server is done."""
    tools: Sequence[Tool | ToolSource] = ()
    """Given to every run; a `ToolSource` (an MCP server's tools) is opened per run unless
    wrapped in a `PooledSource`, which the caller closes."""
    planner: str = "direct"
    """The planner of a call that names none."""
    limits: RunLimits = field(default_factory=RunLimits)
    """The caps of every run: a call's own limits may lower them, never raise them."""
    max_concurrency: int = 16
    """Nodes of one run at once."""
    node_timeout: float = 180.0
    max_runs: int = 4
    """Calls running at once; more wait for a free slot (told so by a progress message)."""

    def __post_init__(self) -> None:
        if self.max_runs < 1:
            raise UserError(f"max_runs must be at least 1, not {self.max_runs}")
        load_planner(self.planner)  # an unknown name fails at start-up, not at the first call


class AskUsage(BaseModel):
    """The run's model usage."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    model_calls: int


class AskStep(BaseModel):
    """One node of the run's plan."""

    id: str
    label: str
    status: str


class AskResult(BaseModel):
    """The structured content of an `ask` result (also on a tool error, answer empty or the
    best the failed run had)."""

    answer: str
    planner: str
    status: Literal["answered", "deadline", "failed"]
    """`deadline`: answered from the findings made by the deadline, the rest cancelled."""
    error: str | None = None
    seconds: float
    """Wall time of the run, from its start (after any wait for a free slot)."""
    usage: AskUsage
    steps: list[AskStep] = Field(default_factory=list)
    replans: int = 0


Question = Annotated[
    str, Field(min_length=1, max_length=20_000, description="The question to answer.")
]
Positive = Annotated[int | None, Field(ge=1)]


def _planner_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = planner_names()


PlannerName = Annotated[
    str,
    Field(
        description="How to answer: direct (one chain of thought), dag (a plan of parallel "
        "steps), hybrid (rounds of parallel queries), react (one step at a time), scale (math).",
        json_schema_extra=_planner_enum,
    ),
]
MaxModelCalls = Annotated[
    Positive, Field(description="Cap on model calls for this question (the server's cap at most).")
]
MaxTokens = Annotated[
    Positive,
    Field(description="Cap on prompt plus completion tokens (the server's cap at most)."),
]
Deadline = Annotated[
    float | None,
    Field(
        gt=0,
        le=86_400,
        description="Seconds for the whole question: at three quarters of it the work still "
        "running is cancelled and the findings so far are joined into an answer.",
    ),
]

ASK_DESCRIPTION = (
    "Answer a question with agentflow's research agent: a planner breaks it into steps that run "
    "in parallel where they can (model reasoning, and the server's tools such as search over "
    "its corpus), then joins the findings into a short answer. Progress notifications name "
    "each step as it is planned, runs and finishes. The result's structured content holds the "
    "answer, the planner, the status and the usage (tokens, model calls, seconds)."
)


def create_mcp_server(config: AskConfig, *, name: str = "agentflow") -> MCPServer[Any]:
    """An MCP server offering `ask`; run it with `run_stdio_async()` or
    `run_streamable_http_async(host=..., port=...)`, or hand it to `mcp.Client` in-process."""
    from agentflow._version import __version__

    server: MCPServer[Any] = MCPServer(
        name,
        version=__version__,
        instructions="Call `ask` with a question; it answers with a research agent.",
        log_level="WARNING",
    )
    runs = _Runs(config)

    async def ask(
        question: Question,
        ctx: Context[Any, Any],
        planner: PlannerName = config.planner,
        max_model_calls: MaxModelCalls = None,
        max_tokens: MaxTokens = None,
        deadline: Deadline = None,
    ) -> Annotated[CallToolResult, AskResult]:
        limits = _Limits(max_model_calls, max_tokens, deadline)
        return await runs.ask(question, planner, limits, ctx.report_progress)

    server.add_tool(
        ask,
        name="ask",
        title="Ask agentflow",
        description=ASK_DESCRIPTION,
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
    )
    return server


Report = Callable[[float, float | None, str | None], Awaitable[None]]
"""`Context.report_progress(progress, total, message)`."""


@dataclass(frozen=True)
class _Limits:
    """A call's own limits, each None when it set none."""

    max_model_calls: int | None
    max_tokens: int | None
    deadline: float | None

    def within(self, caps: RunLimits) -> RunLimits:
        """The call's limits, none above the server's."""
        deadline = caps.deadline
        if self.deadline is not None:
            deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        return RunLimits(
            max_model_calls=min(caps.max_model_calls, self.max_model_calls or caps.max_model_calls),
            max_tokens=min(caps.max_tokens, self.max_tokens or caps.max_tokens),
            deadline=deadline,
        )


class _Runs:
    """Runs `ask` calls: an `Agent` run each, at most `max_runs` at once."""

    def __init__(self, config: AskConfig) -> None:
        self.config = config
        self.slots = asyncio.Semaphore(config.max_runs)

    async def ask(
        self, question: str, planner: str, limits: _Limits, report: Report
    ) -> CallToolResult:
        started = time.monotonic()
        trace: Trace | None = None
        try:
            agent = self._agent(planner, limits)
            if self.slots.locked():
                await report(0, None, f"waiting: {self.config.max_runs} questions are running")
            async with self.slots:
                started = time.monotonic()
                result = await _run(agent, question, _Progress(report))
        except (AgentflowError, ToolError) as exc:  # ToolError: a tool source did not open
            trace = exc.trace if isinstance(exc, ExecutionError) else None
            best = exc.best_answer if isinstance(exc, ExecutionError) else ""
            failed = _result(planner, trace, started, answer=best, error=str(exc))
            return _tool_result(failed, is_error=True)
        status: Literal["answered", "deadline"] = "deadline" if result.deadline_hit else "answered"
        answered = _result(planner, result.trace, started, answer=result.answer, status=status)
        return _tool_result(answered)

    def _agent(self, planner: str, limits: _Limits) -> Agent:
        config = self.config
        return Agent(
            model=config.model,
            planner=planner,
            tools=config.tools,
            limits=limits.within(config.limits),
            max_concurrency=config.max_concurrency,
            node_timeout=config.node_timeout,
        )


async def _run(agent: Agent, question: str, progress: _Progress) -> RunResult:
    """The run, its events sent as progress; leaving early (the call was cancelled) cancels it."""
    async with contextlib.aclosing(agent.run_stream(question)) as stream:
        async for item in stream:
            if isinstance(item, RunResult):
                return item
            await progress.send(item)
    raise AssertionError("run_stream ends with the RunResult")


def _result(
    planner: str,
    trace: Trace | None,
    started: float,
    *,
    answer: str,
    status: Literal["answered", "deadline", "failed"] = "failed",
    error: str | None = None,
) -> AskResult:
    usage = trace.usage if trace is not None else Usage()
    nodes = trace.nodes.values() if trace is not None else ()
    return AskResult(
        answer=answer,
        planner=planner,
        status=status,
        error=error,
        seconds=round(time.monotonic() - started, 3),
        usage=AskUsage(**usage.as_dict()),
        steps=[AskStep(id=n.id, label=n.label, status=n.status) for n in nodes],
        replans=trace.replans if trace is not None else 0,
    )


def _tool_result(result: AskResult, *, is_error: bool = False) -> CallToolResult:
    if is_error:
        text = result.error or "the run failed"
        if result.answer:
            text += f"\n(the best answer the run had: {result.answer})"
    elif result.status == "deadline":
        text = f"{result.answer}\n\n(reached the deadline: answered from the findings so far)"
    else:
        text = result.answer
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=result.model_dump(mode="json"),
        is_error=is_error,
    )


@dataclass
class _Progress:
    """The run's events as MCP progress notifications.

    `progress` counts the milestones the plan has reached (a step planned, started, done; a
    replan; the answer) and `total` those known so far, so progress rises with every
    notification, as the protocol asks, and equals the total at the answer. The message says
    what happened, in a line.
    """

    report: Report
    labels: dict[str, str] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    done: int = 0
    reached: int = 0
    known: int = 1
    """The answer's milestone, plus three per step and one per replan."""

    async def send(self, event: TraceEvent) -> None:
        message = self._message(event)
        if message is not None:
            await self.report(self.reached, self.known, message)

    def _message(self, event: TraceEvent) -> str | None:
        node = event.node_id or ""
        if event.type == "planned":
            self.labels[node] = _line(str(event.data.get("label") or node))
            self.known += 3
            self.reached += 1
            return f"planned {node}: {self.labels[node]} ({_steps(len(self.labels))} planned)"
        if event.type == "started":
            self.started.add(node)
            self.reached += 1
            return f"started {node}: {self.labels.get(node, node)}"
        if event.type in ("finished", "failed", "cancelled"):
            return self._ended(event, node)
        if event.type == "replan" or (event.type == "plan" and event.data.get("error")):
            self.known += 1
            self.reached += 1
            if event.type == "plan":
                return f"the plan broke off: {_line(str(event.data['error']))}"
            return f"replanning: {_line(str(event.data.get('reason', '')))}"
        if event.type == "answer":
            self.reached = self.known
            return "answered at the deadline" if event.data.get("deadline_hit") else "answered"
        return None

    def _ended(self, event: TraceEvent, node: str) -> str:
        self.done += 1
        self.reached += 1 if node in self.started else 2  # never started: both milestones
        label = self.labels.get(node, node)
        count = f"({self.done} of {_steps(len(self.labels))} done)"
        if event.type == "finished":
            return f"{label} finished {count}"
        error = event.data.get("error")
        why = f": {_line(str(error))}" if error and event.type == "failed" else ""
        return f"{label} {event.type}{why} {count}"


def _line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MESSAGE_CHARS else flat[: MESSAGE_CHARS - 3] + "..."


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"
