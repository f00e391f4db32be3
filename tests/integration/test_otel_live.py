"""`agentflow ask --planner dag --otel URL` against the live server: a loopback OTLP/HTTP
collector receives a span tree consistent with the run's own trace. Only the structure is
checked (spans, parents, token counts), never what the model writes: the plan itself may fail
on a small model, and a failed run's spans are sent all the same."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentflow.cli import main
from tests.unit.otlp_receiver import attributes, otlp_receiver


def test_ask_dag_with_otel_sends_a_span_tree_consistent_with_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    question = "Which river flows through the capital of France?"
    with otlp_receiver() as receiver:
        code = main(["ask", "--planner", "dag", "--json", "--otel", receiver.url, question])
    out = capsys.readouterr().out
    # a plan the model could not write ends the run with an error and no trace printed; its
    # spans are sent all the same
    printed: dict[str, Any] = (
        json.loads(out) if out.strip() else {"error": "no plan", "trace": None}
    )
    assert code == 0 or "error" in printed
    spans = receiver.spans()
    assert spans, "the collector received no span"
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    (root,) = [s for s in spans if not s.parent_span_id]
    assert root.name == "invoke_agent agentflow"
    assert {s.trace_id for s in spans} == {root.trace_id}
    root_attributes = attributes(root)
    assert root_attributes["agentflow.planner"] == "dag"
    assert root_attributes["agentflow.run.status"] == ("ok" if "error" not in printed else "failed")
    nodes = {str(attributes(s)["agentflow.node.id"]): s for s in spans if s.name != root.name
             and "agentflow.node.id" in attributes(s)}  # fmt: skip
    assert all(s.parent_span_id == root.span_id for s in nodes.values())
    trace = printed["trace"] or _trace_of(root_attributes)
    assert sorted(nodes) == sorted(n["id"] for n in trace["nodes"])
    requests = [s for s in spans if s.name.startswith("chat ")]
    assert len(requests) == trace["usage"]["model_calls"] >= 1
    span_ids = {s.span_id for s in nodes.values()} | {root.span_id}
    assert all(s.parent_span_id in span_ids for s in requests)
    for request in requests:
        assert attributes(request)["gen_ai.usage.input_tokens"] > 0
        assert request.start_time_unix_nano >= root.start_time_unix_nano
        assert request.end_time_unix_nano <= root.end_time_unix_nano
    inputs = sum(attributes(s)["gen_ai.usage.input_tokens"] for s in requests)
    outputs = sum(attributes(s)["gen_ai.usage.output_tokens"] for s in requests)
    assert outputs > 0
    assert (inputs, outputs) == (
        trace["usage"]["prompt_tokens"],
        trace["usage"]["completion_tokens"],
    )
    assert question not in json.dumps([attributes(s) for s in spans])  # no text by default


def _trace_of(root_attributes: dict[str, Any]) -> dict[str, Any]:
    """What a run that printed no trace (its plan failed) is known to have done, from its root
    span: no node, and the model calls and tokens it counted."""
    return {
        "nodes": [],
        "usage": {
            "model_calls": root_attributes["agentflow.usage.model_calls"],
            "prompt_tokens": root_attributes["gen_ai.usage.input_tokens"],
            "completion_tokens": root_attributes["gen_ai.usage.output_tokens"],
        },
    }
