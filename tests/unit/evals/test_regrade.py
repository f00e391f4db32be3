"""Re-grading a finished run, and the judge cache that makes a rerun or a regrade free."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow_evals.judge_cache import JudgeCache
from agentflow_evals.regrade import regrade
from agentflow_evals.results import RunDirectory
from agentflow_evals.runner import EvalConfig, run_eval
from agentflow_evals.scoring import Judge
from tests.unit.evals.test_scoring_end_to_end import (
    scripted_judge,
    write_browsecomp,
    write_jsonl,
)

ITEMS = {"b1": ("B-1 which city?", "Paris"), "b2": ("B-2 which year?", "1987")}
REPLIES = {
    "B-1": "Explanation: capital.\nExact Answer: Paris\nConfidence: 90%",
    "B-2": "Explanation: guess.\nExact Answer: 1990\nConfidence: 40%",
}


def answering_model(judge: Any, calls: list[str]) -> FunctionModel:
    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        if prompt.startswith("Judge whether the following"):
            calls.append("judge")
            return str(judge(prompt))
        calls.append("answer")
        return next(text for key, text in REPLIES.items() if key in prompt)

    return FunctionModel(reply, name="scripted")


def always_no(prompt: str) -> str:
    """A careless judge: nothing is ever correct."""
    return json.dumps(
        {"extracted_final_answer": "x", "reasoning": "-", "correct": "no", "confidence": 100}
    )


@pytest.fixture
def browsecomp_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTFLOW_DATA", str(tmp_path / "data"))
    return write_browsecomp(tmp_path / "data" / "web" / "browsecomp_subset50_encrypted.csv", ITEMS)


async def test_regrade_with_another_judge_rescores_the_kept_replies(
    browsecomp_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    calls: list[str] = []
    first = await run_eval(
        EvalConfig(dataset="browsecomp", out=out), answering_model(always_no, calls)
    )
    assert first["accuracy"] == 0.0 and calls.count("answer") == 2
    on_disk = (out / "results.jsonl").read_text()
    assert "Paris" not in on_disk and "B-1 which city" not in on_disk  # replies are encrypted

    calls.clear()
    fair = Judge(answering_model(scripted_judge({"B-": "json"}), calls), JudgeCache(tmp_path / "c"))
    result = await regrade(out, fair)
    assert calls == ["judge", "judge"]  # the model under test was not run again
    assert (result.before, result.after) == (0.0, 0.5) and result.gained == ["b1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] == 0.5
    assert (out / "results.before-regrade.jsonl").read_text() == on_disk
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["regraded_at"] and manifest["regrade_judge_model"] == "scripted"

    calls.clear()
    again = await regrade(out, fair)
    assert calls == [] and again.after == 0.5  # every verdict came from the cache


async def test_the_judge_cache_makes_a_rerun_cost_no_judge_call(
    browsecomp_data: Path, tmp_path: Path
) -> None:
    calls: list[str] = []
    model = answering_model(scripted_judge({"B-": "json"}), calls)
    config: dict[str, Any] = {"dataset": "browsecomp", "judge_cache": tmp_path / "cache.sqlite3"}
    await run_eval(EvalConfig(out=tmp_path / "one", **config), model)
    assert calls.count("judge") == 2
    calls.clear()
    summary = await run_eval(EvalConfig(out=tmp_path / "two", **config), model)
    assert calls == ["answer", "answer"] and summary["accuracy"] == 0.5
    cached = (tmp_path / "cache.sqlite3").read_bytes()
    assert b"Paris" not in cached and b"1987" not in cached  # no gold or answer in plaintext


async def test_regrade_of_a_run_that_kept_no_replies_uses_the_short_answer(
    tmp_path: Path,
) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"id": "a", "question": "How many?", "answer": 12, "task": "aime"}],
    )
    out = tmp_path / "run"
    model = FunctionModel(lambda *_: "Counting gives \\boxed{12}.\nAnswer: twelve")
    assert (await run_eval(EvalConfig(dataset=str(path), out=out), model))["accuracy"] == 1.0
    # A row as the previous scoring wrote it: no reply, the short answer only, scored wrong.
    row = RunDirectory(out).read_results()[0][0]
    old = {**row["samples"][0], "correct": False, "answer": "12"}
    del old["reply"]
    (out / "results.jsonl").write_text(json.dumps({**row, "samples": [old], "correct": 0.0}))
    result = await regrade(out, None)
    assert result.gained == ["a"] and result.from_short_answer == 1


async def test_regrade_reads_the_short_answer_from_the_reply_again(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl", [{"id": "q", "question": "Which year?", "answer": "1999"}]
    )
    out = tmp_path / "run"
    reply = "Step 2: it came out then.\nTherefore, the answer is: Answer: 1999"
    assert (
        await run_eval(EvalConfig(dataset=str(path), out=out), FunctionModel(lambda *_: reply))
    )["accuracy"] == 1.0
    # the row as a run before the label was read inside a line wrote it: the whole line, wrong
    row = RunDirectory(out).read_results()[0][0]
    old = {**row["samples"][0], "correct": False, "em": 0.0, "answer": reply.splitlines()[-1]}
    (out / "results.jsonl").write_text(json.dumps({**row, "samples": [old], "correct": 0.0}))
    result = await regrade(out, None)
    assert result.gained == ["q"] and result.from_short_answer == 0
    (sample,) = RunDirectory(out).read_results()[0][0]["samples"]
    assert sample["answer"] == "1999" and sample["em"] == 1.0


def test_eval_regrade_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl", [{"id": "q", "question": "Capital?", "answer": "Paris"}]
    )
    out = tmp_path / "run"

    model = FunctionModel(lambda *_: "Answer: Paris")
    asyncio.run(run_eval(EvalConfig(dataset=str(path), out=out), model))
    assert main(["eval", "regrade", str(out), "--no-judge-cache"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["accuracy"] == 1.0
    assert "accuracy 1.0000 -> 1.0000; 0 items gained, 0 lost" in captured.err
    assert main(["eval", "regrade", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err
