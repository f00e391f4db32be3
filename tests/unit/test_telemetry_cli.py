"""`--otel` on the command line: runs reach an OTLP/HTTP receiver on loopback as traces; a
collector that is down or hangs costs one warning, never the command; the extra's absence is
a clear error."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agentflow import telemetry
from agentflow.cli import main

from .otlp_receiver import attributes, otlp_receiver
from .scripted_server import Reply, reply_chat, scripted_server
from .test_planners import plan

QUESTION = "Which was founded first, Oxford or Cambridge?"
EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def dag_reply(path: str, body: dict[str, Any]) -> Reply:
    """The dag planner's three calls: a plan of one step, the step, the join."""
    sent = json.dumps(body)
    if '"lookups"' in sent:
        return reply_chat(body, [plan(("s1", "llm", ["Which was founded first?"]))])
    if '"enough"' in sent:
        answer = {"enough": True, "answer": "Oxford", "missing": ""}
        return reply_chat(body, [json.dumps(answer)])
    return reply_chat(body, ["Oxford is older.\nAnswer: Oxford"])


def ask(base_url: str, *options: str) -> list[str]:
    return ["ask", "--base-url", base_url, "--planner", "dag", "--json", *options, QUESTION]


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*telemetry._ENDPOINT_ENVS, telemetry.CAPTURE_CONTENT_ENV, "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(telemetry, "FLUSH_SECONDS", 2.0)


def test_ask_with_otel_sends_the_runs_span_tree(capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(dag_reply) as model, otlp_receiver() as receiver:
        assert main(ask(model.base_url, "--otel", receiver.url)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(receiver.paths) == {"/v1/traces"}
    assert receiver.resource()["service.name"] == "agentflow"
    spans = receiver.spans()
    (root,) = [s for s in spans if not s.parent_span_id]
    assert root.name == "invoke_agent agentflow"
    assert {s.trace_id for s in spans} == {root.trace_id}
    nodes = [s for s in spans if "agentflow.node.id" in attributes(s)]
    trace = printed["trace"]
    assert sorted(attributes(s)["agentflow.node.id"] for s in nodes) == sorted(
        n["id"] for n in trace["nodes"]
    )
    assert all(s.parent_span_id == root.span_id for s in nodes)
    requests = [s for s in spans if s.name.startswith("chat ")]
    assert len(requests) == len(trace["requests"]) == printed["usage"]["model_calls"] == 3
    inputs = sum(attributes(s)["gen_ai.usage.input_tokens"] for s in requests)
    outputs = sum(attributes(s)["gen_ai.usage.output_tokens"] for s in requests)
    assert inputs == printed["usage"]["prompt_tokens"] > 0
    assert outputs == printed["usage"]["completion_tokens"] > 0
    assert all(attributes(s)["server.address"] == "127.0.0.1" for s in requests)


def test_eval_with_otel_sends_a_trace_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    items = [{"id": str(i), "question": f"{QUESTION} ({i})", "answer": "Oxford"} for i in range(2)]
    questions.write_text("".join(json.dumps(item) + "\n" for item in items))
    with scripted_server(dag_reply) as model, otlp_receiver() as receiver:
        argv = ["eval", str(questions), "--planner", "dag", "--out", str(tmp_path / "run")]
        assert main([*argv, "--base-url", model.base_url, "--otel", receiver.url]) == 0
    roots = [s for s in receiver.spans() if not s.parent_span_id]
    assert len(roots) == 2 and len({s.trace_id for s in roots}) == 2
    assert all(attributes(s)["agentflow.run.status"] == "ok" for s in roots)


def test_the_otlp_environment_variable_alone_turns_export_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with scripted_server(dag_reply) as model, otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "research-bot")
        assert main(ask(model.base_url)) == 0
    assert receiver.resource()["service.name"] == "research-bot"
    assert any(s.name == "invoke_agent agentflow" for s in receiver.spans())


def test_otel_traces_exporter_none_keeps_the_endpoint_from_turning_export_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with scripted_server(dag_reply) as model, otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        assert main(ask(model.base_url)) == 0
        time.sleep(0.2)
    assert receiver.requests == []


def test_without_otel_nothing_is_sent(capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(dag_reply) as model, otlp_receiver() as receiver:
        assert main(ask(model.base_url)) == 0
        time.sleep(0.2)
    assert receiver.requests == []


@contextmanager
def closed_port() -> Iterator[str]:
    """A loopback URL nothing listens at."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def silent_collector() -> Iterator[str]:
    """A loopback URL that takes connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("collector", [closed_port, silent_collector])
def test_a_collector_that_is_down_or_hangs_costs_one_warning(
    collector: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with scripted_server(dag_reply) as model, collector() as url:
        started = time.monotonic()
        assert main(ask(model.base_url, "--otel", url)) == 0
        took = time.monotonic() - started
    assert took < telemetry.FLUSH_SECONDS + 3
    out, err = capsys.readouterr()
    assert json.loads(out)["answer"] == "Oxford"
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("warning: ") and url in warnings[0]


@pytest.mark.parametrize("command", ["ask", "eval", "serve"])
def test_otel_without_the_extra_says_what_to_install(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, EXPORTER_MODULE, None)  # `import` raises ImportError
    argv = {
        "ask": ["ask", QUESTION],
        "eval": ["eval", "hotpotqa", "--limit", "1"],
        "serve": ["serve", "--port", "9"],
    }[command]
    with scripted_server(dag_reply) as model:
        code = main([*argv, "--base-url", model.base_url, "--otel", "http://127.0.0.1:9"])
        assert model.requests == []  # stopped before any run
    assert code == 1
    err = capsys.readouterr().err
    assert "pip install 'agentflow-dag[otel]'" in err and "Traceback" not in err


def test_the_environment_without_the_extra_warns_and_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, EXPORTER_MODULE, None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    with scripted_server(dag_reply) as model:
        assert main(ask(model.base_url)) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["answer"] == "Oxford"
    assert "pip install 'agentflow-dag[otel]'" in err


def test_otel_takes_an_http_url_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["ask", "--otel", QUESTION])
    assert caught.value.code == 2
    assert "not an http(s) URL" in capsys.readouterr().err


def test_the_traces_url_of_an_endpoint() -> None:
    assert telemetry._traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert telemetry._traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert telemetry._traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    assert telemetry._traces_url("") is None
