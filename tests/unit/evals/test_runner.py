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


async def test_a_server_failure_is_never_recorded_and_a_resume_retries_it(
    dataset: Path, tmp_path: Path
) -> None:
    from agentflow.exceptions import ModelConnectionError
    from agentflow_evals.runner import EvalIncompleteError

    def down(*_: Any) -> str:
        raise ModelConnectionError("server gone", base_url="http://x/v1")

    out = tmp_path / "run"
    with pytest.raises(EvalIncompleteError, match=r"3 items failed .*3 connection.*resume"):
        await run_eval(config(dataset, out), FunctionModel(down, name="typo"))
    assert RunDirectory(out).read_results() == ([], [])  # no "answered" rows
    # the server is fixed, and so is the mistyped model name: nothing finished, nothing to mix
    summary = await run_eval(config(dataset, out), answering({"Sky?": "blue"}))
    assert summary["n"] == 3 and summary["accuracy"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["errors"] == 0 and summary["infrastructure_failures"] == {}


async def test_a_dead_server_stops_the_run_after_a_few_items(tmp_path: Path) -> None:
    from agentflow.exceptions import ModelHTTPError
    from agentflow_evals.runner import EvalIncompleteError

    path = tmp_path / "many.jsonl"
    path.write_text(
        "".join(f'{{"id": "{i}", "question": "q{i}?", "answer": "a"}}\n' for i in range(50))
    )
    calls: list[int] = []

    def failing(*_: Any) -> str:
        calls.append(1)
        raise ModelHTTPError("HTTP 500", status_code=500, body="boom")

    with pytest.raises(EvalIncompleteError, match="stopped early"):
        await run_eval(
            EvalConfig(dataset=str(path), out=tmp_path / "run", concurrency=2, max_failures=3),
            FunctionModel(failing),
        )
    assert len(calls) <= 3 + 2  # three failures and what was in flight beside them, not fifty


async def test_a_model_failure_is_a_recorded_wrong_answer(dataset: Path, tmp_path: Path) -> None:
    def off_schema(*_: Any) -> str:
        return "not json at all"

    summary = await run_eval(
        config(dataset, tmp_path / "run", planner="dag"), FunctionModel(off_schema)
    )
    rows, _ = RunDirectory(tmp_path / "run").read_results()
    assert summary["errors"] == 3 and summary["accuracy"] == 0.0
    assert {r["samples"][0]["error_kind"] for r in rows} == {"plan"}


async def test_rows_without_a_manifest_are_not_reused_for_another_run(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    await run_eval(config(dataset, out, limit=1), answering({}))
    (out / "manifest.json").unlink()
    with pytest.raises(UserError, match="manifest.json is missing or not a JSON object"):
        await run_eval(config(dataset, out, planner="react"), answering({}))
    (out / "manifest.json").write_text("[]")
    with pytest.raises(UserError, match="missing or not a JSON object"):
        await run_eval(config(dataset, out), answering({}))


async def test_a_sample_failing_on_the_server_cancels_its_siblings(
    dataset: Path, tmp_path: Path
) -> None:
    import asyncio

    from agentflow.exceptions import ModelConnectionError
    from agentflow_evals.runner import EvalIncompleteError

    started: list[int | None] = []
    cancelled: list[int | None] = []
    all_started = asyncio.Event()

    async def reply(messages: Any, settings: ModelSettings, *_: Any) -> str:
        started.append(settings.seed)
        if len(started) == 3:
            all_started.set()
        if settings.seed == 0:
            # Fail only once every sibling is in flight (a fixed sleep could run out first on a
            # loaded machine); the guard is reached only if the samples do not run at once.
            async with asyncio.timeout(10):
                await all_started.wait()
            raise ModelConnectionError("gone", base_url="http://x/v1")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(settings.seed)
            raise
        return "Answer: x"

    with pytest.raises(EvalIncompleteError):
        await run_eval(
            config(dataset, tmp_path / "run", limit=1, samples=3, seed=0, max_failures=1),
            FunctionModel(reply),
        )
    assert sorted(s or 0 for s in started) == [0, 1, 2]
    assert sorted(s or 0 for s in cancelled) == [1, 2]


@pytest.mark.parametrize(
    "change", [{"max_model_calls": 2}, {"allocation": {"mode": "uniform-think"}}]
)
async def test_a_resume_with_another_call_budget_or_allocation_is_refused(
    dataset: Path, tmp_path: Path, change: dict[str, Any]
) -> None:
    out = tmp_path / "run"
    await run_eval(config(dataset, out, limit=1), answering({}))
    with pytest.raises(UserError, match=f"different run \\({next(iter(change))}: "):
        await run_eval(config(dataset, out, **change), answering({}))


async def test_hand_edited_rows_missing_fields_are_rerun_not_a_crash(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    await run_eval(config(dataset, out, limit=2), answering({}))
    rows, _ = RunDirectory(out).read_results()
    del rows[0]["seconds"]
    del rows[1]["samples"][0]["prompt_tokens"]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls: list[str] = []
    summary = await run_eval(config(dataset, out, limit=2), answering({}, calls))
    assert len(calls) == 2 and summary["n"] == 2  # both rerun, the summary whole
