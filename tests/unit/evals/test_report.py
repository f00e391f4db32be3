from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from agentflow.exceptions import UserError
from agentflow_evals.report import Run, load_run, markdown_table, plot_runs, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL = "Qwen/Qwen2.5-7B-Instruct"


def _manifest(planner: str, **changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "dataset": "hotpotqa-dev",
        "dataset_sha256": "ab12cd34ef56" + "0" * 52,
        "planner": planner,
        "model": MODEL,
        "base_urls": ["http://127.0.0.1:8100/v1"],
        "judge_model": None,
        "prompts_sha256": "fe" * 32,
        "git_revision": "0123456789abcdef0123456789abcdef01234567",
        "seed": 0,
        "samples": 1,
        "temperature": 0.0,
        "max_tokens": 512,
        "concurrency": 8,
        "limit": 200,
        "started_at": "2026-01-02T03:04:05+00:00",
        "finished_at": "2026-01-02T03:34:05+00:00",
        "agentflow_version": "0.1.0",
        "command": f"agentflow eval hotpotqa-dev --planner {planner} --out runs/{planner}",
    }
    return manifest | changes


def _summary(planner: str, **changes: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "dataset": "hotpotqa-dev",
        "planner": planner,
        "model": MODEL,
        "n": 200,
        "accuracy": 0.615,
        "em": 0.58,
        "f1": 0.7024,
        "avg_at_k": None,
        "maj_at_k": None,
        "samples": 1,
        "calibration_error": 0.0831,
        "latency_p50": 3.214,
        "latency_p90": 7.5,
        "tokens_total": 1_234_567,
        "completion_tokens": 100_000,
        "model_calls": 700,
        "tool_calls": 1500,
        "errors": 2,
        "wall_seconds": 1800.0,
        "throughput_tokens_per_s": 685.9,
    }
    return summary | changes


def _write_run(
    root: Path,
    name: str,
    *,
    manifest: dict[str, Any] | None,
    summary: dict[str, Any] | None,
) -> Path:
    run = root / name
    run.mkdir()
    if manifest is not None:
        (run / "manifest.json").write_text(json.dumps(manifest))
    item = {"id": "q1", "question": "?", "answers": ["a"], "task": "qa", "samples": []}
    (run / "results.jsonl").write_text(json.dumps(item | {"correct": 1.0}) + "\n")
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    return [
        _write_run(tmp_path, "dag-run", manifest=_manifest("dag"), summary=_summary("dag")),
        _write_run(
            tmp_path,
            "react-run",
            manifest=_manifest("react", seed=1),
            summary=_summary(
                "react", accuracy=0.58, tokens_total=2_500_000, latency_p50=6.0, errors=0
            ),
        ),
        _write_run(
            tmp_path,
            "direct-run",
            manifest=_manifest("direct", seed=2),
            summary=_summary(
                "direct",
                accuracy=0.4,
                em=None,
                f1=None,
                calibration_error=None,
                tokens_total=90_000,
                latency_p50=0.8,
                latency_p90=None,
                model_calls=200,
                tool_calls=0,
                errors=0,
            ),
        ),
    ]


def _row(table: str, run: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {run} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _header(table: str) -> list[str]:
    return [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]


def test_table_has_one_formatted_row_per_run(run_dirs: list[Path]) -> None:
    table = markdown_table([load_run(d) for d in run_dirs])
    header = _header(table)
    row = dict(zip(header, _row(table, "dag-run"), strict=True))
    assert row["dataset"] == "hotpotqa-dev"
    assert row["planner"] == "dag"
    assert row["model"] == MODEL
    assert row["n"] == "200"
    assert row["accuracy"] == "61.5%"
    assert row["EM"] == "58.0%"
    assert row["F1"] == "70.2%"
    assert row["calib. error"] == "0.083"
    assert (row["p50 (s)"], row["p90 (s)"]) == ("3.21", "7.50")
    assert (row["tokens"], row["tokens/item"]) == ("1,234,567", "6,173")
    assert (row["model calls/item"], row["tool calls/item"]) == ("3.5", "7.5")
    assert row["errors"] == "2"
    assert row["95% CI"].startswith("[54.") and row["95% CI"].endswith("]")
    assert "avg@k" not in header and "maj@k" not in header  # every run has one sample
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == [
        "dag-run",
        "react-run",
        "direct-run",
    ]


def test_missing_optional_fields_are_dashes(run_dirs: list[Path]) -> None:
    table = markdown_table([load_run(d) for d in run_dirs])
    row = dict(zip(_header(table), _row(table, "direct-run"), strict=True))
    assert row["EM"] == row["F1"] == row["calib. error"] == row["p90 (s)"] == "–"
    assert row["accuracy"] == "40.0%"


def test_facts_that_differ_and_that_are_shared(run_dirs: list[Path]) -> None:
    text = markdown_table([load_run(d) for d in run_dirs])
    shared, _, differ = text.partition("**Setup that differs between runs**")
    assert f"- model: `{MODEL}`" in shared
    assert "- dataset sha256: `ab12cd34ef56`" in shared
    assert "- git revision: `0123456789ab`" in shared
    assert "- temperature: 0.0" in shared
    assert "- max tokens: 512" in shared
    assert "- samples: 1" in shared
    assert "- judge model: –" in shared
    seeds = next(line for line in differ.splitlines() if line.startswith("| seed"))
    assert [cell.strip() for cell in seeds.strip("|").split("|")] == ["seed", "0", "1", "2"]
    assert "| model " not in differ
    assert "agentflow eval hotpotqa-dev --planner react --out runs/react" in text
    assert "Note:" not in text  # same dataset and n: comparable


def test_dirty_revision_keeps_its_suffix_and_no_runs_is_an_error(tmp_path: Path) -> None:
    manifest = _manifest("dag", git_revision="0123456789abcdef0123-dirty")
    run = load_run(_write_run(tmp_path, "dirty", manifest=manifest, summary=_summary("dag")))
    assert "- git revision: `0123456789ab-dirty`" in markdown_table([run])
    with pytest.raises(UserError, match="at least one run"):
        markdown_table([])


def test_several_samples_add_avg_and_maj_columns(tmp_path: Path) -> None:
    one = _write_run(tmp_path, "one", manifest=_manifest("dag"), summary=_summary("dag"))
    summary = _summary("dag", samples=5, avg_at_k=0.6, maj_at_k=0.655)
    five = _write_run(tmp_path, "five", manifest=_manifest("dag", samples=5), summary=summary)
    table = markdown_table([load_run(one), load_run(five)])
    header = _header(table)
    assert dict(zip(header, _row(table, "five"), strict=True))["maj@k"] == "65.5%"
    assert dict(zip(header, _row(table, "one"), strict=True))["avg@k"] == "–"
    differ = table.partition("**Setup that differs between runs**")[2]
    assert any(line.startswith("| samples") for line in differ.splitlines())


def test_unfinished_run_is_a_user_error(tmp_path: Path) -> None:
    run = _write_run(tmp_path, "running", manifest=_manifest("dag"), summary=None)
    with pytest.raises(UserError, match="no summary.json") as raised:
        load_run(run)
    message = str(raised.value)
    assert "resume" in message and "finish" in message
    assert "agentflow eval hotpotqa-dev --planner dag" in message


def test_not_a_directory_and_bad_json_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        load_run(tmp_path / "nowhere")
    run = _write_run(tmp_path, "broken", manifest=None, summary=None)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_run(run)


def test_summary_without_manifest_shows_question_marks(tmp_path: Path) -> None:
    bare = load_run(_write_run(tmp_path, "bare", manifest=None, summary={"accuracy": 0.5}))
    full = load_run(
        _write_run(tmp_path, "full", manifest=_manifest("dag"), summary=_summary("dag"))
    )
    assert bare == Run(path=tmp_path / "bare", summary={"accuracy": 0.5}, manifest=None)
    text = markdown_table([full, bare])
    row = dict(zip(_header(text), _row(text, "bare"), strict=True))
    assert row["accuracy"] == "50.0%"
    assert row["planner"] == row["dataset"] == row["model"] == "?"  # manifest facts
    assert row["n"] == row["tokens/item"] == row["95% CI"] == "–"  # summary fields
    differ = text.partition("**Setup that differs between runs**")[2]
    seeds = next(line for line in differ.splitlines() if line.startswith("| seed"))
    assert [cell.strip() for cell in seeds.strip("|").split("|")] == ["seed", "0", "?"]
    assert "# bare: command not recorded" in text


def test_different_datasets_are_flagged(tmp_path: Path) -> None:
    a = _write_run(tmp_path, "a", manifest=_manifest("dag"), summary=_summary("dag"))
    other = _manifest("dag", dataset_sha256="9" * 64)
    b = _write_run(tmp_path, "b", manifest=other, summary=_summary("dag", n=100))
    text = markdown_table([load_run(a), load_run(b)])
    assert "different datasets" in text
    assert "different numbers of items" in text


def test_plots_are_png_files(run_dirs: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    paths = plot_runs([load_run(d) for d in run_dirs], tmp_path / "figures")
    assert [path.name for path in paths] == ["accuracy_vs_tokens.png", "accuracy_vs_latency.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 1000


def test_write_report_embeds_the_plots(run_dirs: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    report = write_report(run_dirs, tmp_path / "report")
    assert report == tmp_path / "report" / "report.md"
    text = report.read_text(encoding="utf-8")
    assert "| dag-run " in text
    assert "](accuracy_vs_tokens.png)" in text and "](accuracy_vs_latency.png)" in text
    assert (tmp_path / "report" / "accuracy_vs_tokens.png").read_bytes().startswith(PNG_MAGIC)


def test_write_report_without_matplotlib_still_writes_markdown(
    run_dirs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_runs([load_run(run_dirs[0])], tmp_path / "figures")
    report = write_report(run_dirs, tmp_path / "report")
    text = report.read_text(encoding="utf-8")
    assert "| dag-run " in text
    assert "pip install matplotlib" in text
    assert not list((tmp_path / "report").glob("*.png"))


@pytest.mark.parametrize("accuracy", [0.0, 1.0])
def test_plots_runs_at_zero_and_full_accuracy(tmp_path: Path, accuracy: float) -> None:
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    run = _write_run(
        tmp_path, "edge", manifest=_manifest("dag"), summary=_summary("dag", accuracy=accuracy)
    )
    assert len(plot_runs([load_run(run)], tmp_path / "figures")) == 2
