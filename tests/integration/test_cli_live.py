"""Smoke tests of every CLI command against the live server."""

from __future__ import annotations

import json

import pytest

from agentflow.cli import main


def test_ask_prints_an_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "What is the capital of France?"]) == 0
    assert capsys.readouterr().out.endswith("\n")  # the answer's line, whatever the model said


def test_ask_json_has_answer_usage_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "What is the capital of France?", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result["answer"], str)
    assert result["usage"]["model_calls"] == 1
    assert result["usage"]["total_tokens"] == (
        result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    )
    (node,) = result["trace"]["nodes"]
    assert node["status"] == "ok"
    assert 0 <= node["started_at"] <= node["finished_at"]


def test_ask_with_a_model_the_server_does_not_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "hi", "--model", "no-such-model"]) == 1
    assert "it serves:" in capsys.readouterr().err
