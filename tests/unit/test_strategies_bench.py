"""benchmarks/strategies.py: a failed run is a row, not the end of the benchmark, and a killed
run resumes from its rows (a 2,048-token chain past 900 s on a loaded server ended a 2-hour run
and lost every row but the log's)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from strategies import read_rows, render, rows_path, run_or_record, summarize

from agentflow.exceptions import ModelHTTPError
from agentflow.testing import FunctionModel
from agentflow_evals.datasets import EvalItem


def args(tmp_path: Path, **changes: Any) -> argparse.Namespace:
    values = {"out": tmp_path / "s.json", "budget": 64, "samples": 2, "threads": 2,
              "timeout": 5, "model": "m", "base_url": None}  # fmt: skip
    return argparse.Namespace(**{**values, **changes})


class DeadModel(FunctionModel):
    def __init__(self) -> None:
        def refuse(*_: Any) -> str:
            raise ModelHTTPError("server overloaded", status_code=503, body="")

        super().__init__(refuse)
        self.windows: list[dict[str, float]] = []  # what strategies.MeteredModel measures


async def test_a_failed_run_is_a_row_with_its_error_counted_apart(tmp_path: Path) -> None:
    item = EvalItem(id="q1", question="What is 17 * 23?", answers=("391",), task="math")
    row = await run_or_record(DeadModel(), item, "chain", args(tmp_path))  # type: ignore[arg-type]
    assert row["id"] == "q1" and "overloaded" in row["error"]
    finished = {"strategy": "chain", "set": "math500", "correct": True, "completion_tokens": 10,
                "critical_path_tokens": 10, "seconds": 1.0, "calls": 1}  # fmt: skip
    summary = summarize([{**row, "set": "math500"}, finished])
    assert (summary["chain"]["n"], summary["chain"]["errors"]) == (1, 1)
    assert summary["chain"]["accuracy"] == 1.0


def test_a_resume_keeps_finished_rows_and_runs_failed_ones_and_a_cut_line_again(
    tmp_path: Path,
) -> None:
    path = rows_path(args(tmp_path))
    assert path == tmp_path / "s.rows.jsonl" and read_rows(path, args(tmp_path), {"q1"}) == []
    config = {"budget": 64, "samples": 2, "threads": 2, "model": "m", "base_url": None}
    finished = {"id": "q1", "strategy": "vote", "samples": 1, "config": config}  # drawn: 1
    failed = {"id": "q1", "strategy": "chain", "error": "timed out", "config": config}
    other_item = {**finished, "id": "q9"}
    lines = [json.dumps(r) for r in (finished, failed, other_item)]
    path.write_text("\n".join(lines) + '\n{"id": "q1", "strat')  # killed mid-write
    assert read_rows(path, args(tmp_path, timeout=60), {"q1"}) == [finished]  # a longer timeout
    assert [json.loads(line) for line in path.read_text().splitlines()] == [finished]


@pytest.mark.parametrize("change", [{"budget": 128}, {"model": "other"}])
def test_rows_of_another_run_are_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    path = rows_path(args(tmp_path))
    config = vars(args(tmp_path, **change))
    del config["out"], config["timeout"]
    path.write_text(json.dumps({"id": "q1", "strategy": "vote", "config": config}) + "\n")
    with pytest.raises(SystemExit, match="another run"):
        read_rows(path, args(tmp_path), {"q1"})


def test_a_strategy_whose_every_run_failed_still_shows_its_failures() -> None:
    summary = summarize([{"id": "q1", "strategy": "vote", "error": "timed out"}])
    assert summary["vote"] == {"n": 0, "errors": 1}
    assert "| vote | 0 |" in render(summary)
