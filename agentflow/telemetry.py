"""OpenTelemetry traces of runs: a span per run, per node, per model request, after the GenAI
semantic conventions, built from the run's `Trace` with its own times.

Nothing happens unless a tracer provider is configured: the global one (a library user's own
`TracerProvider`, set with `opentelemetry.trace.set_tracer_provider`) or one given to
`configure` (what the CLI's `--otel` does). OpenTelemetry is imported only then: the core works
without it. The run's root span (`invoke_agent agentflow`) is current while the run goes, so it
is a child of the caller's current span (and of a `traceparent` that `serve` received); the
spans of its nodes and requests are made when the run ends, failed or cancelled runs included,
with the start and end times the trace measured, so branches that ran at once overlap.

No question, answer, label, output or error text is recorded unless asked for: `configure(
capture_content=True)` or `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (an error's
message quotes what failed; without text a failed span keeps its status and `error.type`).
"""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentflow._version import __version__
from agentflow.exceptions import UserError
from agentflow.model import RequestTiming
from agentflow.trace import NodeRecord, Trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "AGENT_NAME",
    "CAPTURE_CONTENT_ENV",
    "configure",
    "exporting",
    "remote_parent",
    "run_span",
]

AGENT_NAME = "agentflow"
"""`gen_ai.agent.name` of every run's root span."""
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""`true` records the question, the answer, node labels and outputs (the GenAI convention's
opt-in)."""
INSTALL_HINT = "pip install 'agentflow-dag[otel]'"
FLUSH_SECONDS = 5.0
"""How long the CLI waits at exit for its spans to reach the collector."""
_log = logging.getLogger(__name__)
_ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_ALLOCATION_DICTS = ("budget", "tokens")
"""Allocation record fields that are dicts of numbers, flattened into attributes (`votes` is
not: its keys are answers)."""


@dataclass(frozen=True, kw_only=True)
class _Settings:
    tracer_provider: TracerProvider | None = None
    capture_content: bool | None = None


_settings = _Settings()


def configure(
    tracer_provider: TracerProvider | None = None, *, capture_content: bool | None = None
) -> None:
    """Trace runs with `tracer_provider` (None: the global one, if one is set) and record text
    when `capture_content` (None: as `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` says).
    `configure()` restores both defaults."""
    global _settings
    _settings = _Settings(tracer_provider=tracer_provider, capture_content=capture_content)


def _tracer() -> Tracer | None:
    """The tracer runs are recorded with, or None when no tracer provider is configured (then
    OpenTelemetry is not even imported)."""
    provider = _settings.tracer_provider
    if provider is None:
        if "opentelemetry.trace" not in sys.modules:  # nobody set a global provider
            return None
        from opentelemetry import trace as otel

        provider = otel.get_tracer_provider()
        if isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
            return None
    return provider.get_tracer("agentflow", __version__)


def _capture_content() -> bool:
    if _settings.capture_content is not None:
        return _settings.capture_content
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


@contextlib.contextmanager
def run_span(trace: Trace, model: str) -> Iterator[None]:
    """Record the run `trace` is of as a trace, if a tracer provider is configured: the root
    span is current inside the block; the rest is made from `trace` when the block ends."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    from opentelemetry import trace as otel
    from opentelemetry.trace import StatusCode

    epoch = time.time_ns() - round(trace.now() * 1e9)  # the wall clock at the run's start
    spans = _Spans(tracer, trace, epoch, model, _capture_content())
    root = spans.start_root()
    status = "failed"
    try:
        with otel.use_span(root, record_exception=False, set_status_on_exception=False):
            yield
        status = "ok"
    except asyncio.CancelledError:
        status = "cancelled"
        root.set_status(StatusCode.ERROR, "the run was cancelled")
        raise
    except BaseException as exc:
        # An error's message quotes what failed (a tool's input, the model's text): text.
        if spans.content:
            root.record_exception(exc)
        why = f"{type(exc).__name__}: {exc}" if spans.content else type(exc).__name__
        root.set_status(StatusCode.ERROR, why)
        root.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        try:
            spans.finish(root, status)
        except Exception:  # the run's own outcome stands whatever its spans did
            _log.exception("could not record the run's spans")


class _Spans:
    """The spans of one run, made from its trace."""

    def __init__(self, tracer: Tracer, trace: Trace, epoch: int, model: str, content: bool):
        from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

        self.tracer, self.trace, self.epoch, self.model = tracer, trace, epoch, model
        self.content = content
        self.gen_ai = gen_ai

    def at(self, seconds: float) -> int:
        """Nanoseconds since the epoch of `seconds` on the run's clock."""
        return self.epoch + round(seconds * 1e9)

    def start_root(self) -> Span:
        gen_ai, trace = self.gen_ai, self.trace
        attributes: dict[str, Any] = {
            gen_ai.GEN_AI_OPERATION_NAME: "invoke_agent",
            gen_ai.GEN_AI_AGENT_NAME: AGENT_NAME,
            gen_ai.GEN_AI_REQUEST_MODEL: self.model,
            "agentflow.planner": trace.planner,
            "agentflow.question.length": len(trace.question),
        }
        if self.content:
            attributes[gen_ai.GEN_AI_INPUT_MESSAGES] = _messages("user", trace.question)
        name = f"invoke_agent {AGENT_NAME}"
        return self.tracer.start_span(name, attributes=attributes, start_time=self.epoch)

    def finish(self, root: Span, status: str) -> None:
        """The node and request spans under `root`, then `root`'s own totals; `root` ends."""
        end = self.trace.now()
        node_spans = self.nodes(root, end)
        for request in self.trace.requests:
            parent = node_spans.get(request.node_id or "", root)
            self.request(parent, request)
        self.events(root)
        gen_ai, trace = self.gen_ai, self.trace
        answer = next((e for e in reversed(trace.events) if e.type == "answer"), None)
        answered = "none" if answer is None else "answered"
        if answer is not None and answer.data.get("deadline_hit"):
            answered = "answered at deadline"
        root.set_attributes(
            {
                "agentflow.run.status": status,
                "agentflow.answer.status": answered,
                "agentflow.nodes": len(trace.nodes),
                "agentflow.replans": trace.replans,
                "agentflow.usage.model_calls": trace.usage.calls,
                gen_ai.GEN_AI_USAGE_INPUT_TOKENS: trace.usage.prompt_tokens,
                gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: trace.usage.completion_tokens,
            }
        )
        if self.content and answer is not None:
            text = str(answer.data.get("text", ""))
            root.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, _messages("assistant", text))
        root.end(end_time=self.at(end))

    def nodes(self, root: Span, end: float) -> dict[str, Span]:
        """A span per node, made in dependency order so each links to its inputs' spans; a
        thread forked inside a node is a child of that node's span."""
        from opentelemetry.trace import Link, set_span_in_context

        records = self.trace.nodes
        spans: dict[str, Span] = {}
        for node_id in _in_order(records):
            record = records[node_id]
            links = [Link(spans[d].get_span_context()) for d in record.deps if d in spans]
            parent = spans.get(record.parent or "", root)
            start = record.started_at if record.started_at is not None else end
            span = self.tracer.start_span(
                _node_name(record),
                context=set_span_in_context(parent),
                attributes=self.node_attributes(record),
                links=links,
                start_time=self.at(start),
            )
            self.node_status(span, record)
            finished = record.finished_at if record.finished_at is not None else end
            span.end(end_time=self.at(max(start, finished)))
            spans[node_id] = span
        return spans

    def node_attributes(self, record: NodeRecord) -> dict[str, Any]:
        gen_ai = self.gen_ai
        attributes: dict[str, Any] = {
            "agentflow.node.id": record.id,
            "agentflow.node.kind": record.kind,
            "agentflow.node.deps": list(record.deps),
            "agentflow.node.round": record.round,
            "agentflow.node.status": record.status,
            "agentflow.usage.input_tokens": record.usage.prompt_tokens,
            "agentflow.usage.output_tokens": record.usage.completion_tokens,
            "agentflow.usage.model_calls": record.usage.calls,
        }
        if record.tool:
            attributes[gen_ai.GEN_AI_OPERATION_NAME] = "execute_tool"
            attributes[gen_ai.GEN_AI_TOOL_NAME] = record.tool
        if record.parent:
            attributes["agentflow.node.parent"] = record.parent
        if self.content:  # an error's message quotes what failed: text too
            if record.error:
                attributes["agentflow.node.error"] = record.error
            attributes["agentflow.node.label"] = record.label
            if record.output is not None:
                attributes["agentflow.node.output"] = record.output
        attributes.update(_allocation(record.allocation))
        return attributes

    def node_status(self, span: Span, record: NodeRecord) -> None:
        from opentelemetry.trace import StatusCode

        if record.status in ("failed", "cancelled"):
            why = record.error if self.content and record.error else record.status
            span.set_status(StatusCode.ERROR, why)
            span.set_attribute("error.type", record.status)
        elif record.status != "ok":  # the run ended before the node did
            span.set_status(StatusCode.ERROR, f"the run ended while the node was {record.status}")
            span.set_attribute("error.type", "unfinished")

    def request(self, parent: Span, timing: RequestTiming) -> None:
        """A `chat {model}` span for one model request: its tokens and where its time went."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        gen_ai = self.gen_ai
        attributes: dict[str, Any] = {
            gen_ai.GEN_AI_OPERATION_NAME: "chat",
            gen_ai.GEN_AI_REQUEST_MODEL: self.model,
            gen_ai.GEN_AI_USAGE_INPUT_TOKENS: timing.prompt_tokens,
            gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: timing.completion_tokens,
            "agentflow.request.queued_s": timing.queued_s,
            "agentflow.request.attempts": timing.attempts,
        }
        if timing.cached_tokens is not None:
            attributes[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = timing.cached_tokens
        if timing.ttft_s is not None:
            attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = timing.ttft_s
            attributes["agentflow.request.prefill_s"] = max(0.0, timing.ttft_s - timing.queued_s)
            attributes["agentflow.request.decode_s"] = max(0.0, timing.total_s - timing.ttft_s)
        attributes.update(_server(timing.endpoint))
        start = self.at(timing.started_at or 0.0)
        span = self.tracer.start_span(
            f"chat {self.model}",
            context=set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        span.end(end_time=start + round(timing.total_s * 1e9))

    def events(self, root: Span) -> None:
        """The run's own moments (replans, repairs, a plan that broke off, the answer) as events
        on the root span; their text only when content is recorded."""
        for event in self.trace.events:
            if event.type not in ("plan", "replan", "repaired", "summary", "answer"):
                continue
            attributes: dict[str, Any] = {}
            if event.node_id is not None:
                attributes["agentflow.node.id"] = event.node_id
            for key, value in event.data.items():
                if isinstance(value, bool | int | float) or (
                    self.content and isinstance(value, str)
                ):
                    attributes[f"agentflow.{key}"] = value
            root.add_event(f"agentflow.{event.type}", attributes, timestamp=self.at(event.at))


def _in_order(records: Mapping[str, NodeRecord]) -> list[str]:
    """Node ids with every node after its dependencies and its parent (the trace's order if
    that cannot be: never, for a validated plan)."""
    graph = {
        node_id: {d for d in (*r.deps, r.parent) if d is not None and d in records}
        for node_id, r in records.items()
    }
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return list(records)


def _node_name(record: NodeRecord) -> str:
    if record.tool:
        return f"execute_tool {record.tool}"
    return f"{record.kind} {record.id}"


def _allocation(allocation: Mapping[str, Any] | None) -> dict[str, Any]:
    """An allocated node's mode, difficulty, budget, samples, ... as attributes."""
    attributes: dict[str, Any] = {}
    for key, value in (allocation or {}).items():
        if isinstance(value, str | bool | int | float):
            attributes[f"agentflow.allocation.{key}"] = value
        elif key in _ALLOCATION_DICTS and isinstance(value, Mapping):
            for inner, number in value.items():
                if isinstance(number, str | bool | int | float):
                    attributes[f"agentflow.allocation.{key}.{inner}"] = number
        elif key == "notes" and value:
            attributes["agentflow.allocation.notes"] = [str(note) for note in value]
    return attributes


def _server(endpoint: str) -> dict[str, Any]:
    if not endpoint:
        return {}
    parts = urlsplit(endpoint)
    server: dict[str, Any] = {"server.address": parts.hostname or endpoint}
    if parts.port is not None:
        server["server.port"] = parts.port
    return server


def _messages(role: str, text: str) -> str:
    """`gen_ai.input.messages` / `gen_ai.output.messages`: one message of one text part."""
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


@contextlib.contextmanager
def remote_parent(headers: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, the span a W3C `traceparent` header in `headers` names is the current
    one, so a run started there is its child (the header alone is read: no header, or no
    OpenTelemetry installed, and nothing changes)."""
    if "traceparent" not in headers:
        yield
        return
    try:
        from opentelemetry import context, propagate
    except ImportError:
        yield
        return
    token = context.attach(propagate.extract(dict(headers)))
    try:
        yield
    finally:
        context.detach(token)


def _env_asks_for_export() -> bool:
    """An OTLP endpoint is set, and `OTEL_TRACES_EXPORTER` does not say `none` (the SDK's
    standard way to turn trace export off while the endpoint stays set for metrics or logs)."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(os.environ.get(k) for k in _ENDPOINT_ENVS)


@contextlib.contextmanager
def exporting(endpoint: str | None) -> Iterator[Callable[[], None]]:
    """The CLI's `--otel [ENDPOINT]`: inside the block, runs are sent as traces over OTLP/HTTP
    (service `agentflow` unless `OTEL_SERVICE_NAME`) to `endpoint` (its `/v1/traces`); "" (the
    flag alone) to the one the OTLP environment variables name, or localhost:4318; None (no
    flag) only if `OTEL_EXPORTER_OTLP_ENDPOINT` is set. At the end the spans are sent, waiting
    `FLUSH_SECONDS` at most: a collector that is down or hangs costs one warning, never the
    command. `UserError` if `--otel` was given without the `otel` extra.

    Yields the function that sends what is left (at the block's end, or earlier when called:
    `serve` calls it before uvicorn re-raises the signal that stopped it, which ends the
    process without running the block's end)."""
    if endpoint is None and (not _env_asks_for_export() or _global_sdk()):
        yield _nothing  # nothing asked, or `opentelemetry-instrument` already set a provider up
        return
    export = _Export.start(endpoint)
    if export is None:
        yield _nothing
        return
    previous = _settings
    configure(export.provider, capture_content=previous.capture_content)
    try:
        yield export.close
    finally:
        configure(previous.tracer_provider, capture_content=previous.capture_content)
        export.close()


def _nothing() -> None:
    pass


def _global_sdk() -> bool:
    """Whether a global tracer provider is set already (by `opentelemetry-instrument`, say)."""
    if "opentelemetry.trace" not in sys.modules:
        return False
    from opentelemetry import trace as otel

    return not isinstance(otel.get_tracer_provider(), otel.ProxyTracerProvider)


class _Export(logging.Handler):
    """An SDK tracer provider sending spans to one OTLP/HTTP endpoint; as a logging handler it
    turns the exporter's complaints into one warning on stderr."""

    def __init__(
        self, provider: SDKTracerProvider, exporter: SpanExporter, where: str, logger: str
    ) -> None:
        super().__init__(logging.WARNING)
        self.provider, self.exporter, self.where = provider, exporter, where
        self.warned = self.closed = False
        self.logger = logging.getLogger(logger)
        self.propagated = self.logger.propagate

    @classmethod
    def start(cls, endpoint: str | None) -> _Export | None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
            from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            missing = f"OpenTelemetry traces need the `otel` extra ({exc}): {INSTALL_HINT}"
            if endpoint is not None:
                raise UserError(missing) from exc
            print(f"warning: OTEL_EXPORTER_OTLP_ENDPOINT is set but {missing}", file=sys.stderr)
            return None
        url = _traces_url(endpoint)
        exporter = OTLPSpanExporter(endpoint=url)
        service = os.environ.get("OTEL_SERVICE_NAME") or AGENT_NAME
        resource = Resource.create({SERVICE_NAME: service, SERVICE_VERSION: __version__})
        provider = SDKTracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        export = cls(provider, exporter, url or "the OTLP endpoint", "opentelemetry")
        export.logger.addHandler(export)
        export.logger.propagate = False
        return export

    def emit(self, record: logging.LogRecord) -> None:
        self.warn(f"could not send traces to {self.where}: {record.getMessage()}")

    def warn(self, text: str) -> None:
        if not self.warned:
            self.warned = True
            print(f"warning: {text}", file=sys.stderr)

    def close(self) -> None:
        """Send what is left, for `FLUSH_SECONDS` at most, and not after the collector has
        failed once (the warning given): then the exporter is stopped and the flushing thread
        (a daemon) left to end by itself, this handler catching the exporter's logs till then."""
        if self.closed:
            return
        self.closed = True
        flushing = threading.Thread(target=self._shut_down, daemon=True)
        flushing.start()
        deadline = time.monotonic() + FLUSH_SECONDS
        while flushing.is_alive() and not self.warned and time.monotonic() < deadline:
            flushing.join(0.05)  # a collector that refused once is not waited for
        if flushing.is_alive():
            self.warn(f"traces not sent to {self.where} within {FLUSH_SECONDS:g} s: given up")
            self.exporter.shutdown()  # ends the exporter's retries; a hung request, its timeout

    def _shut_down(self) -> None:
        try:
            self.provider.shutdown()
        finally:
            self.logger.removeHandler(self)
            self.logger.propagate = self.propagated
            super().close()


def _traces_url(endpoint: str | None) -> str | None:
    """The OTLP/HTTP traces URL of `--otel ENDPOINT` (None: the exporter's own choice, from the
    environment or its default)."""
    if not endpoint:
        return None
    root = endpoint.rstrip("/")
    return root if root.endswith("/v1/traces") else f"{root}/v1/traces"
