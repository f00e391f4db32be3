"""A ReAct step cut off inside its JSON is never the final answer (review finding: the raw cut
JSON, `\\boxed{42}` in its thought, was recorded as the answer and scored right). It is salvaged
or asked again under the repetition guard; if still unusable, the item is the model's failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from tests.unit.scripted_server import Reply, chat_body, reply_json, scripted_server

CUT_STEP = '{"thought": "Maybe the result is \\\\boxed{42} but I must check", "tool": "llm", "inp'


def cut_steps(path: str, body: dict[str, Any]) -> Reply:
    reply = chat_body([CUT_STEP], completion_tokens=200)
    reply["choices"][0]["finish_reason"] = "length"
    return reply_json(reply)


def prose_answer(path: str, body: dict[str, Any]) -> Reply:
    return reply_json(chat_body(["The product is \\boxed{42}."]))


def run_eval(tmp_path: Path, url: str) -> dict[str, Any]:
    questions = tmp_path / "q.jsonl"
    row = {"id": "a", "question": "What is 6*7?", "answer": "42", "task": "math"}
    questions.write_text(json.dumps(row) + "\n")
    out = tmp_path / "run"
    args = ["eval", str(questions), "--planner", "react", "--out", str(out)]
    assert main([*args, "--base-url", url, "--model", "m"]) == 0
    (line,) = (out / "results.jsonl").read_text().splitlines()
    return dict(json.loads(line))


def test_a_cut_off_step_is_the_models_failure_not_an_answer(tmp_path: Path) -> None:
    with scripted_server(cut_steps) as served:
        row = run_eval(tmp_path, served.base_url)
    (sample,) = row["samples"]
    assert sample["correct"] is False and sample["error_kind"] == "model_output", sample
    assert sample["answer"] == ""
    guarded = [r for r in served.requests if r.get("repetition_penalty")]
    assert len(served.requests) == 2 and len(guarded) == 1  # asked once more, under the guard


def test_a_model_that_ignores_the_schema_still_answers_in_prose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with scripted_server(prose_answer) as served:
        row = run_eval(tmp_path, served.base_url)
    (sample,) = row["samples"]
    assert sample["correct"] is True and sample["error_kind"] is None, sample
