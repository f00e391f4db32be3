"""`agentflow eval` against the live model: files written, a killed run resumed, a user file,
and the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentflow.cli import main
from tests.devdata import needs

needs_hotpotqa = needs("multihop/hotpotqa_dev.jsonl", "corpus/*.jsonl")


def read_rows(out: Path) -> list[dict[str, object]]:
    path = out / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@needs_hotpotqa
def test_eval_hotpotqa_dag_writes_results_manifest_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dag"
    assert main(["eval", "hotpotqa", "--planner", "dag", "--limit", "5", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("accuracy", "n", "latency_p50", "latency_p90", "tokens_total", "model_calls"):
        assert key in summary
    assert summary["n"] == 5 and summary["model_calls"] >= 5  # a plan each, a join if it planned
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["planner"] == "dag" and manifest["finished_at"]
    assert len(read_rows(out)) == 5
    # No --concurrency: derived from the server's KV cache, and its counters saved beside.
    (session,) = [json.loads(line) for line in (out / "server.jsonl").read_text().splitlines()]
    assert session["concurrency"] == manifest["concurrency"] >= 1
    (server,) = session["servers"].values()
    assert server["requests"] >= summary["model_calls"]  # other tests may share the server
    assert server["prompt_tokens"] > 0 and server["mean_prefill_time_s"] is not None


@needs_hotpotqa
def test_a_killed_eval_resumes_without_recomputing(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    # Short answers, so an item takes seconds on any model (the 1.5B of `make test-real` wrote
    # one 100-token answer in 2 minutes beside a benchmark); the deadline is only a bound.
    args = ["eval", "hotpotqa", "--planner", "direct", "--limit", "6", "--concurrency", "1",
            "--max-tokens", "24", "--out", str(out)]  # fmt: skip
    command = [sys.executable, "-m", "agentflow.cli", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while len(read_rows(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = read_rows(out)
    assert 2 <= len(before) < 6, "the run was not killed halfway"

    assert main(args) == 0
    after = read_rows(out)
    ids = [row["id"] for row in after]
    assert len(ids) == len(set(ids)) == 6  # nothing twice
    assert after[: len(before)] == before  # nothing lost, nothing recomputed


def test_a_user_jsonl_of_new_questions(tmp_path: Path) -> None:
    questions = tmp_path / "mine.jsonl"
    rows = [
        {"id": "a", "question": "What colour is a clear daytime sky?", "answer": "blue"},
        {"id": "b", "question": "How many legs does a spider have?", "answer": "8",
         "aliases": ["eight"]},
        "not json at all",
    ]  # fmt: skip
    questions.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    out = tmp_path / "user"
    assert main(["eval", str(questions), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["n"] == 2


@needs_hotpotqa
def test_report_compares_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = []
    for planner in ("direct", "hybrid"):
        out = tmp_path / planner
        assert main(["eval", "hotpotqa", "--planner", planner, "--limit", "2",
                     "--out", str(out)]) == 0  # fmt: skip
        runs.append(str(out))
    assert main(["eval", "report", *runs, "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| direct" in report and "| hybrid" in report
    assert list((tmp_path / "report").glob("*.png"))


def test_list_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--list-datasets"]) == 0
    listing = capsys.readouterr().out
    assert "hotpotqa" in listing and "browsecomp" in listing and "multihop-local" in listing


@needs_hotpotqa
def test_eval_sharded_over_a_local_ray_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    args = ["eval", "hotpotqa", "--limit", "3", "--out", str(out), "--ray", "local"]
    try:
        assert main(args) == 0
    finally:
        import ray

        ray.shutdown()
    ids = [r["id"] for r in read_rows(out)]
    assert len(ids) == len(set(ids)) == 3
    assert json.loads((out / "summary.json").read_text())["n"] == 3


def test_browsecomp_judged_by_the_live_model_then_regraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real model answers in BrowseComp's format and judges through the JSON schema; the
    run keeps its replies encrypted, so `eval regrade` can judge them again from disk."""
    from agentflow_evals.browsecomp import encrypt

    canary = "LIVE-TEST-CANARY"
    items = [("What is the capital of France?", "Paris"), ("What colour is the sky?", "blue")]
    lines = ["id,problem,answer,canary"] + [
        f"{i},{encrypt(q, canary)},{encrypt(a, canary)},{canary}" for i, (q, a) in enumerate(items)
    ]
    data = tmp_path / "data"
    (data / "web").mkdir(parents=True)
    (data / "web" / "browsecomp_subset50_encrypted.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("AGENTFLOW_DATA", str(data))
    out = tmp_path / "bc"
    cache = tmp_path / "judge.sqlite3"
    common = ["--max-tokens", "128", "--judge-cache", str(cache)]
    assert main(["eval", "browsecomp", "--out", str(out), *common]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["errors"] == 0
    assert summary["calibration_error"] is not None
    assert summary["calibration_error_hle_convention"] is None
    stored = (out / "results.jsonl").read_text()
    assert "France" not in stored and "Paris" not in stored
    rows = [json.loads(line) for line in stored.splitlines()]
    assert all(s["reply_encrypted"] for r in rows for s in r["samples"])
    capsys.readouterr()
    assert main(["eval", "regrade", str(out), "--judge-cache", str(cache)]) == 0
    assert "0 items gained, 0 lost" in capsys.readouterr().err  # same judge, cached verdicts
