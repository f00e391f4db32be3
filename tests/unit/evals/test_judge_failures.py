"""A judge that gives no verdict (issue 19, item 5): flagged in the row, counted in
`summary.json`, kept out of calibration, and judged again by `eval regrade --only-failed-judge`;
an off-schema JSON verdict still gives its `extracted_final_answer` to maj@k."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.context import RunContext
from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow.tool import Toolset
from agentflow.trace import Trace
from agentflow_evals.browsecomp import judge
from agentflow_evals.results import RunDirectory
from agentflow_evals.runner import EvalConfig, run_eval
from tests.unit.evals.test_scoring_end_to_end import (
    PLANNERS,
    planner_playing_model,
    write_browsecomp,
)
from tests.unit.scripted_server import Reply, chat_body, reply_json, scripted_server

REFUSAL = "I'm sorry, but I can't help with grading this."


def _ctx(model: FunctionModel) -> RunContext:
    return RunContext(model=model, tools=Toolset(), trace=Trace(question="q", planner="judge"))


@pytest.mark.parametrize("text", [REFUSAL, "", "   ", '{"reasoning": "cut off', "correct: maybe"])
async def test_a_refused_empty_or_unreadable_verdict_is_flagged_failed(text: str) -> None:
    result = await judge(_ctx(FunctionModel(lambda *_: text)), "Q?", "R", "C")
    assert (result.correct, result.parsed_with) == (False, "failed")


@pytest.mark.parametrize(
    ("text", "correct", "extracted", "confidence"),
    [
        # an extra field: off the schema, so the schema read fails; before, the answer was ""
        ('{"extracted_final_answer": "Paris", "reasoning": "same", "correct": "yes", '
         '"confidence": 90, "note": "x"}', True, "Paris", 90),
        # a code fence and prose around it, "Yes", a confidence written as a string
        ('Here is my verdict:\n```json\n{"extracted_final_answer": "Lyon", "correct": "No", '
         '"confidence": "85%"}\n```', False, "Lyon", 85),
        ('{"extracted_final_answer": "1990", "correct": false, "confidence": 30}',
         False, "1990", 30),
    ],
)  # fmt: skip
async def test_an_off_schema_json_verdict_is_read_whole(
    text: str, correct: bool, extracted: str, confidence: int
) -> None:
    result = await judge(_ctx(FunctionModel(lambda *_: text)), "Q?", "R", "C")
    assert result.parsed_with == "regex"
    assert (result.correct, result.extracted_final_answer, result.confidence) == (
        correct,
        extracted,
        confidence,
    )


ITEMS = {
    "b1": ("B-1 which city?", "Paris"),
    "b2": ("B-2 which year?", "1987"),
    "b3": ("B-3 which river?", "Danube"),
}
REPLIES = {
    "B-1": "Explanation: capital.\nExact Answer: Paris\nConfidence: 80%",
    "B-2": "Explanation: records.\nExact Answer: 1987\nConfidence: 95%",
    "B-3": "Explanation: guess.\nExact Answer: Rhine\nConfidence: 60%",
}


def _verdict(prompt: str) -> str:
    """A schema verdict: the response's Exact Answer against the gold."""
    response = prompt.split("[response]:", 1)[1]
    gold = prompt.split("[correct_answer]:", 1)[1].split("\n", 1)[0].strip()
    exact = response.split("Exact Answer:", 1)[1].split("\n", 1)[0].strip()
    verdict = "yes" if exact == gold else "no"
    body = {"extracted_final_answer": exact, "reasoning": "-", "correct": verdict,
            "confidence": 100}  # fmt: skip
    return json.dumps(body)


def refusing_on_b2(prompt: str) -> str:
    return REFUSAL if "B-2" in prompt else _verdict(prompt)


@pytest.mark.parametrize("planner", PLANNERS)
async def test_a_failed_verdict_is_flagged_counted_and_out_of_calibration(
    planner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    write_browsecomp(tmp_path / "data" / "web" / "browsecomp_subset50_encrypted.csv", ITEMS)
    model = planner_playing_model(REPLIES, judge=refusing_on_b2)
    out = tmp_path / "run"
    summary = await run_eval(EvalConfig(dataset="browsecomp", planner=planner, out=out), model)
    rows = {r["id"]: r["samples"][0] for r in RunDirectory(out).read_results()[0]}
    reads = {k: s["judge_parsed_with"] for k, s in rows.items()}
    assert reads == {"b1": "schema", "b2": "failed", "b3": "schema"}
    assert rows["b2"]["correct"] is False  # counted wrong in the accuracy, and said so
    assert summary["accuracy"] == round(1 / 3, 4)
    assert summary["judge_failed"] == 1
    assert summary["judge_parsed_with"] == {"schema": 2, "regex": 0, "failed": 1}
    # calibration over b1 (80%, right) and b3 (60%, wrong) only, one bin: mean confidence
    # 70%, accuracy 50% -> 20 points. Before, b2 (95%, counted wrong) entered too: mean
    # confidence (80 + 95 + 60) / 3 = 78.33%, accuracy 33.33% -> 45 points.
    assert summary["calibration_error"] == pytest.approx(20.0)
    assert summary["confidence_stated"] == 2


def test_regrade_only_failed_judge_retries_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    write_browsecomp(tmp_path / "data" / "web" / "browsecomp_subset50_encrypted.csv", ITEMS)
    out = tmp_path / "run"
    model = planner_playing_model(REPLIES, judge=refusing_on_b2)
    asyncio.run(run_eval(EvalConfig(dataset="browsecomp", out=out), model))
    before = (out / "results.jsonl").read_text()

    def fair_judge(path: str, body: dict[str, Any]) -> Reply:
        return reply_json(chat_body([_verdict(str(body["messages"][-1]["content"]))]))

    with scripted_server(fair_judge) as server:
        args = ["eval", "regrade", str(out), "--only-failed-judge", "--no-judge-cache"]
        assert main([*args, "--judge-base-url", server.base_url, "--judge-model", "j"]) == 0
    judged = [r for r in server.requests if r["path"] == "/chat/completions"]
    assert len(judged) == 1 and "B-2" in str(judged[0]["messages"])  # b1 and b3 stand
    summary = json.loads(capsys.readouterr().out)
    assert summary["accuracy"] == round(2 / 3, 4) and summary["judge_failed"] == 0
    rows = {r["id"]: r["samples"][0] for r in RunDirectory(out).read_results()[0]}
    assert rows["b2"]["correct"] is True and rows["b2"]["judge_parsed_with"] == "schema"
    kept = {json.loads(line)["id"]: json.loads(line) for line in before.splitlines()}
    assert rows["b1"] == kept["b1"]["samples"][0]  # untouched, byte for byte in substance
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["regrade_only_failed_judge"] is True


async def test_off_schema_verdicts_still_vote_in_maj_at_k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    write_browsecomp(
        tmp_path / "data" / "web" / "browsecomp_subset50_encrypted.csv", {"b2": ITEMS["b2"]}
    )
    answers = iter(["1990", "1990", "1987"])

    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        if prompt.startswith("Judge whether the following"):
            verdict = json.loads(_verdict(prompt))
            return json.dumps({**verdict, "judge_note": "off the schema"})
        return f"Explanation: x\nExact Answer: {next(answers)}\nConfidence: 50%"

    config = EvalConfig(dataset="browsecomp", out=tmp_path / "run", samples=3, concurrency=1)
    summary = await run_eval(config, FunctionModel(reply))
    row = RunDirectory(tmp_path / "run").read_results()[0][0]
    assert [s["judge_parsed_with"] for s in row["samples"]] == ["regex"] * 3
    # 1990 twice (wrong), 1987 once (right): 1990 wins. Before, the off-schema verdicts lost
    # their extracted answer, the wrong samples abstained and the lone right one won (1.0).
    assert row["maj_correct"] == 0.0 and summary["maj_at_k"] == 0.0
    assert summary["avg_at_k"] == round(1 / 3, 4)
    assert math.isclose(row["correct"], 1 / 3)
