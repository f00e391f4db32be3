"""`serve` follows an incoming W3C `traceparent`: the run's root span is a child of the
caller's span, in the caller's trace. Spans go to an in-memory exporter behind a local tracer
provider (`telemetry.configure`, taken back after each test); over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentflow import telemetry

from .conftest import config, serving

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
BODY = {"model": "agentflow-direct", "messages": [{"role": "user", "content": "Capital?"}]}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(provider)
    yield exporter
    telemetry.configure()
    provider.shutdown()


def run_root(exporter: InMemorySpanExporter) -> ReadableSpan:
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent agentflow"]
    return root


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_runs_root_span_is_the_callers_child(stream: bool, spans: InMemorySpanExporter) -> None:
    with serving(config()) as base_url:
        reply = httpx2.post(
            f"{base_url}/chat/completions",
            json={**BODY, "stream": stream},
            headers={"traceparent": TRACEPARENT},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
    root = run_root(spans)
    assert root.context is not None and root.context.trace_id == TRACE_ID
    assert root.parent is not None and root.parent.span_id == PARENT_ID
    assert root.parent.is_remote
    assert {s.context.trace_id for s in spans.get_finished_spans() if s.context} == {TRACE_ID}


def test_without_a_traceparent_the_run_starts_a_trace(spans: InMemorySpanExporter) -> None:
    with serving(config()) as base_url:
        reply = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
        assert reply.status_code == 200, reply.text
    root = run_root(spans)
    assert root.parent is None
    assert root.context is not None and root.context.trace_id != TRACE_ID


def test_a_malformed_traceparent_is_ignored(spans: InMemorySpanExporter) -> None:
    with serving(config()) as base_url:
        reply = httpx2.post(
            f"{base_url}/chat/completions",
            json=BODY,
            headers={"traceparent": "00-not-a-trace-01"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
    assert run_root(spans).parent is None
