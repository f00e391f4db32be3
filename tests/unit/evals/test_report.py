from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from agentflow.exceptions import UserError
from agentflow_evals.report import Run, load_run, markdown_table, plot_runs, write_report
from agentflow_evals.report_compare import differences_section
from agentflow_evals.stats import accuracy_interval

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


def _default_scores(summary: dict[str, Any] | None) -> dict[str, float]:
    """Per-item scores that agree with the summary: the first accuracy * n items right."""
    if summary is None or "n" not in summary or "accuracy" not in summary:
        return {"q1": 1.0}
    right = round(summary["accuracy"] * summary["n"])
    return {f"q{i}": float(i < right) for i in range(summary["n"])}


def _write_run(
    root: Path,
    name: str,
    *,
    manifest: dict[str, Any] | None,
    summary: dict[str, Any] | None,
    scores: dict[str, float] | None = None,
    samples: int = 1,
) -> Path:
    """A run directory; `results.jsonl` holds `scores` (item id -> fraction of `samples`
    right), by default scores that agree with the summary."""
    run = root / name
    run.mkdir()
    if manifest is not None:
        (run / "manifest.json").write_text(json.dumps(manifest))
    rows = []
    for item_id, score in (_default_scores(summary) if scores is None else scores).items():
        right = round(score * samples)
        answers = [{"correct": i < right} for i in range(samples)]
        item = {"id": item_id, "question": "?", "answers": ["a"], "task": "qa", "samples": answers}
        rows.append(json.dumps(item | {"correct": score}) + "\n")
    (run / "results.jsonl").write_text("".join(rows))
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
    bare_dir = _write_run(tmp_path, "bare", manifest=None, summary={"accuracy": 0.5}, scores={})
    bare = load_run(bare_dir)
    full = load_run(
        _write_run(tmp_path, "full", manifest=_manifest("dag"), summary=_summary("dag"))
    )
    assert bare == Run(path=tmp_path / "bare", summary={"accuracy": 0.5}, manifest=None)
    text = markdown_table([full, bare])
    row = dict(zip(_header(text), _row(text, "bare"), strict=True))
    assert row["accuracy"] == "50.0%"
    assert row["planner"] == row["dataset"] == row["model"] == "?"  # manifest facts
    assert row["n"] == row["tokens/item"] == row["95% CI"] == "–"  # no n, no per-item scores
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
    assert "## Differences between runs" in text
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


# --- differences between runs -------------------------------------------------------------


def _scored_run(
    root: Path,
    name: str,
    scores: dict[str, float],
    *,
    dataset: str = "hotpotqa-dev",
    samples: int = 1,
) -> Path:
    accuracy = sum(scores.values()) / len(scores)
    summary = _summary(name, dataset=dataset, n=len(scores), accuracy=accuracy, samples=samples)
    manifest = _manifest(name, dataset=dataset, samples=samples)
    return _write_run(
        root, name, manifest=manifest, summary=summary, scores=scores, samples=samples
    )


def _pair_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]
    return {(row["run A"], row["run B"]): row for row in rows}


def test_differences_mark_significant_and_not_significant_pairs(tmp_path: Path) -> None:
    ids = [f"q{i}" for i in range(20)]
    # base: q0..q9 right (10/20). better: q1..q18 right, so on the 20 shared items 1 is right
    # only in base (q0) and 9 only in better (q10..q18): McNemar p = 2 * (1 + 10) / 2^10 =
    # 0.021484375 -> "0.021", significant; difference (9 - 1) / 20 = +40.0 points.
    base = _scored_run(tmp_path, "base", {k: float(i < 10) for i, k in enumerate(ids)})
    better = _scored_run(tmp_path, "better", {k: float(1 <= i <= 18) for i, k in enumerate(ids)})
    # similar finished only q0..q15 (16 shared with base) and got q3..q12 right: 3 right only
    # in base (q0..q2), 3 only in similar (q10..q12): p = min(1, 2 * 42/64) = 1.000, +0.0.
    # Against better (q1..q15 right on those 16): 5 only in better (q1, q2, q13..q15), 0 only
    # in similar: p = 2 * 1/32 = 0.0625 -> "0.062", not significant.
    similar = _scored_run(
        tmp_path, "similar", {k: float(3 <= i <= 12) for i, k in enumerate(ids[:16])}
    )
    other = _scored_run(tmp_path, "other", dict.fromkeys(ids, 1.0), dataset="musique-dev")
    text = differences_section([load_run(d) for d in (base, better, similar, other)])
    rows = _pair_rows(text)
    assert set(rows) == {("base", "better"), ("base", "similar"), ("better", "similar")}
    significant = rows["base", "better"]
    assert significant["shared items"] == "20"
    assert significant["B − A (points)"] == "+40.0"
    assert significant["right only in A / B"] == "1 / 9"
    assert significant["test"] == "McNemar exact"
    assert (significant["p-value"], significant["verdict"]) == ("0.021", "significant")
    same = rows["base", "similar"]
    assert (same["shared items"], same["B − A (points)"], same["right only in A / B"]) == (
        "16",
        "+0.0",
        "3 / 3",
    )
    assert (same["p-value"], same["verdict"]) == ("1.000", "not significant")
    assert (rows["better", "similar"]["p-value"], rows["better", "similar"]["verdict"]) == (
        "0.062",
        "not significant",
    )
    assert "McNemar" in text and "only: items both runs finished" in text


def test_differences_with_several_samples_use_a_paired_permutation(tmp_path: Path) -> None:
    # Four samples per item; B gets one more sample right than A on every one of 40 items, so
    # every resampled mean difference is +0.25 (interval [+25.0, +25.0]), and no random sign
    # flip of the 40 differences reaches their sum: p = 1 / 10,001 < 0.001.
    a_scores = {f"q{i}": 0.25 * (i % 4) for i in range(40)}
    b_scores = {key: score + 0.25 for key, score in a_scores.items()}
    a = _scored_run(tmp_path, "a", a_scores, samples=4)
    b = _scored_run(tmp_path, "b", b_scores, samples=4)
    text = differences_section([load_run(a), load_run(b)])
    row = _pair_rows(text)["a", "b"]
    assert row["test"] == "paired permutation"
    assert (row["B − A (points)"], row["95% CI"]) == ("+25.0", "[+25.0, +25.0]")
    assert row["right only in A / B"] == "–"
    assert (row["p-value"], row["verdict"]) == ("< 0.001", "significant")
    assert "paired bootstrap over the shared items (10,000 resamples, seed 0)" in text
    assert "paired sign-flip permutation test" in text
    assert "McNemar" not in text


def test_no_comparable_pair_says_so_and_one_run_has_no_section(tmp_path: Path) -> None:
    a = _scored_run(tmp_path, "a", {"q1": 1.0})
    b = _scored_run(tmp_path, "b", {"q1": 1.0}, dataset="musique-dev")
    c = _scored_run(tmp_path, "c", {"q2": 1.0})  # same dataset as a, no item in common
    text = differences_section([load_run(d) for d in (a, b, c)])
    assert text.startswith("_No two runs ran the same dataset with items in common")
    report = write_report([a], tmp_path / "report").read_text(encoding="utf-8")
    assert "Differences between runs" not in report


def test_fractional_scores_get_a_bootstrap_interval(tmp_path: Path) -> None:
    # 400 items scoring 0.25 or 0.75 (4 samples each): the bootstrap interval is about
    # 50 +- 1.96 * 25 / sqrt(400) = [47.5, 52.5], where a Wilson interval taking each item for
    # a coin flip would claim [45.1, 54.9].
    scores = {f"q{i}": 0.25 + 0.5 * (i % 2) for i in range(400)}
    run = load_run(_scored_run(tmp_path, "k4", scores, samples=4))
    low, high = accuracy_interval(list(scores.values()))
    row = dict(zip(_header(markdown_table([run])), _row(markdown_table([run]), "k4"), strict=True))
    assert row["95% CI"] == f"[{100 * low:.1f}, {100 * high:.1f}]"
    assert 47.0 < 100 * low < 48.0 and 52.0 < 100 * high < 53.0


def test_results_and_summary_that_disagree_are_noted(tmp_path: Path) -> None:
    summary = _summary("dag", n=3, accuracy=1.0)
    scores = {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.0}  # resumed after the summary
    run = load_run(
        _write_run(tmp_path, "stale", manifest=_manifest("dag"), summary=summary, scores=scores)
    )
    assert "stale has 4 items in results.jsonl but n = 3 in summary.json" in markdown_table([run])


def test_an_unfinished_run_is_marked_as_such(tmp_path: Path) -> None:
    run = _write_run(
        tmp_path, "stopped", manifest=_manifest("dag"), summary=_summary("dag", unfinished=3)
    )
    table = markdown_table([load_run(run)])
    assert "stopped is unfinished: 3 items were never answered" in table
