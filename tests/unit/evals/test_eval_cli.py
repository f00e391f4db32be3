"""`agentflow eval` as a user meets it: usage errors, and a server that is not there."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from agentflow.cli import main


@pytest.mark.parametrize(
    "option", [["--limit", "0"], ["--limit", "-3"], ["--samples", "0"], ["--concurrency", "0"]]
)
def test_counts_below_one_are_usage_errors(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", "any.jsonl", *option])
    assert exited.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_an_eval_against_a_closed_port_records_nothing_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": str(i), "question": f"Q{i}?", "answer": "a"}) + "\n" for i in range(4)
        )
    )
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{closed_port()}/v1"
    code = main(["eval", str(questions), "--base-url", url, "--model", "x", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "items failed on the model server" in err and "resume" in err
    assert not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text()


def test_out_that_is_a_file_and_a_missing_corpus_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "1", "question": "Q?", "answer": "a"}) + "\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["eval", str(questions), "--out", str(a_file)]) == 1
    assert "cannot use" in capsys.readouterr().err
    missing = str(tmp_path / "missing.jsonl")
    assert main(["eval", str(questions), "--corpus", missing, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "corpus file not found" in err and "Traceback" not in err and err.count("\n") == 1


def test_a_boolean_gold_answer_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "1", "question": "Q?", "answer": True}) + "\n")
    assert main(["eval", str(questions), "--out", str(tmp_path / "r")]) == 1
    assert "not true/false" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option", [["--max-tokens", "0"], ["--max-tokens", "-5"], ["--temperature", "-1"]]
)
def test_impossible_sampling_settings_are_usage_errors(option: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", "any.jsonl", *option])
    assert exited.value.code == 2


def test_a_report_into_a_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from agentflow.testing import FunctionModel
    from agentflow_evals.runner import EvalConfig, run_eval

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "1", "question": "Q?", "answer": "a"}) + "\n")
    asyncio.run(run_eval(EvalConfig(dataset=str(questions), out=tmp_path / "r"),
                         FunctionModel(lambda *_: "Answer: a")))  # fmt: skip
    assert main(["eval", "report", str(tmp_path / "r"), "--out", str(questions)]) == 1
    assert "cannot write the report" in capsys.readouterr().err
