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
