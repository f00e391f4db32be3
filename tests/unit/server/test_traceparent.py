"""`serve` follows an incoming W3C `traceparent`: the run's root span is a child of the
caller's span, in the caller's trace. Spans go to an in-memory exporter behind a local tracer
provider (`telemetry.configure`, taken back after each test); over loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ..otlp_receiver import otlp_receiver
from ..scripted_server import scripted_server
from .conftest import config, serving
from .model_server import answering
from .test_sigterm import _free_port, _wait_healthy

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
BODY = {"model": "agentflow-direct", "messages": [{"role": "user", "content": "Capital?"}]}


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


def test_serve_with_otel_sends_the_callers_trace_and_flushes_at_exit(tmp_path: Path) -> None:
    """The whole chain, as a process: `serve --otel URL`, a chat with a `traceparent`, SIGTERM;
    the collector has the run's spans, in the caller's trace, once the server has stopped."""
    with scripted_server(answering()) as model, otlp_receiver() as receiver:
        port = _free_port()
        command = [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)]
        command += ["--base-url", model.base_url, "--model", "m", "--planner", "direct"]
        log = tmp_path / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen([*command, "--otel", receiver.url], stdout=sink, stderr=sink)
        try:
            base_url = _wait_healthy(port, server, log)
            headers = {"traceparent": TRACEPARENT}
            reply = httpx2.post(f"{base_url}/chat/completions", json=BODY, headers=headers)
            assert reply.status_code == 200, reply.text
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=15) == -signal.SIGTERM, log.read_text()
        finally:
            server.kill()
            server.wait()
        spans = receiver.spans()
    assert receiver.resource()["service.name"] == "agentflow"
    (root,) = [s for s in spans if s.name == "invoke_agent agentflow"]
    assert int.from_bytes(root.trace_id, "big") == TRACE_ID
    assert int.from_bytes(root.parent_span_id, "big") == PARENT_ID
    assert any(s.name.startswith("chat ") for s in spans)
    assert "warning" not in log.read_text()
