"""The eval runner on scripted models: results on disk as items finish, resumable, scored."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow.exceptions import UserError
from agentflow.model import Message, ModelSettings
from agentflow.testing import FunctionModel
from agentflow_evals.results import RunDirectory
from agentflow_evals.runner import EvalConfig, run_eval

QUESTIONS = {"q1": ("Capital of France?", "Paris"), "q2": ("2+3?", "5"), "q3": ("Sky?", "blue")}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "mine.jsonl"
    lines = [json.dumps({"id": k, "question": q, "answer": a}) for k, (q, a) in QUESTIONS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def answering(answers: Mapping[str, str], calls: list[str] | None = None) -> FunctionModel:
    def reply(
        messages: Sequence[Message], settings: ModelSettings, schema: Mapping[str, Any] | None
    ) -> str:
        prompt = str(messages[-1]["content"])
        question = next(q for q, _ in QUESTIONS.values() if q in prompt)
        if calls is not None:
            calls.append(question)
        return f"Answer: {answers.get(question, 'no idea')}"

    return FunctionModel(reply, name="scripted")


def config(dataset: Path, out: Path, **overrides: Any) -> EvalConfig:
    return EvalConfig(dataset=str(dataset), out=out, **overrides)


async def test_writes_results_manifest_and_summary(dataset: Path, tmp_path: Path) -> None:
    model = answering({"Capital of France?": "Paris", "2+3?": "6", "Sky?": "Blue."})
    summary = await run_eval(config(dataset, tmp_path / "run"), model)
    assert summary["n"] == 3
    assert summary["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["model_calls"] == 3 and summary["tokens_total"] > 0
    assert summary["latency_p50"] > 0
    rows, problems = RunDirectory(tmp_path / "run").read_results()
    assert [r["id"] for r in sorted(rows, key=lambda r: r["id"])] == ["q1", "q2", "q3"]
    assert problems == []
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"] == "scripted" and manifest["finished_at"]
    assert len(manifest["dataset_sha256"]) == 64 and manifest["prompts_sha256"]


async def test_resumes_without_recomputing_and_drops_a_partial_line(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    calls: list[str] = []
    await run_eval(config(dataset, out, limit=2), answering({}, calls))
    assert len(calls) == 2
    with (out / "results.jsonl").open("a") as results:
        results.write('{"id": "q3", "quest')  # a kill in the middle of a write
    calls.clear()
    summary = await run_eval(config(dataset, out), answering({}, calls))
    assert calls == ["Sky?"]  # only the unfinished item ran
    assert summary["n"] == 3
    rows, problems = RunDirectory(out).read_results()
    assert sorted(r["id"] for r in rows) == ["q1", "q2", "q3"]
    assert len(problems) == 1 and "results.jsonl:3:" in problems[0]  # stays, reported, skipped


async def test_refuses_to_mix_a_different_run_into_a_directory(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    await run_eval(config(dataset, out, limit=1), answering({}))
    with pytest.raises(UserError, match="planner: 'direct' -> 'react'"):
        await run_eval(config(dataset, out, planner="react"), answering({}))


async def test_a_second_run_on_the_same_directory_is_refused(dataset: Path, tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "run")
    with run_dir.lock(), pytest.raises(UserError, match="another agentflow eval"):
        await run_eval(config(dataset, run_dir.path), answering({}))


async def test_samples_give_avg_and_maj_at_k(dataset: Path, tmp_path: Path) -> None:
    replies = iter(["Paris", "Lyon", "Paris"] * 3)

    def reply(*_: Any) -> str:
        return f"Answer: {next(replies)}"

    summary = await run_eval(
        config(dataset, tmp_path / "run", limit=1, samples=3, seed=7), FunctionModel(reply)
    )
    assert summary["avg_at_k"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["maj_at_k"] == 1.0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["samples"] == 3 and manifest["seed"] == 7


async def test_a_failing_item_is_recorded_not_fatal(dataset: Path, tmp_path: Path) -> None:
    from agentflow.exceptions import ModelConnectionError

    def reply(*_: Any) -> str:
        raise ModelConnectionError("server gone", base_url="http://x/v1")

    summary = await run_eval(config(dataset, tmp_path / "run"), FunctionModel(reply))
    assert summary["errors"] == 3 and summary["accuracy"] == 0.0
    rows, _ = RunDirectory(tmp_path / "run").read_results()
    assert "server gone" in rows[0]["samples"][0]["error"]
