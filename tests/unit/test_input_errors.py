"""Inputs that used to fail loudly or silently (issue 21, item 6): an unusable `--corpus` in
`eval` is one line, not a 291-line ExceptionGroup traceback; `--vote-samples` below 2 is refused
instead of turning the vote off; a killed index build's scratch directory is swept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow_tools.search import LocalIndex
from agentflow_tools.search.corpus import corpus_fingerprint
from agentflow_tools.search.local import INDEX_VERSION


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("corpus_text", ["", "not json\n{broken\n"], ids=["empty", "corrupt"])
def test_an_unusable_eval_corpus_is_one_line(
    corpus_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "1", "question": "q?", "answer": "a"}) + "\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(corpus_text)
    args = ["eval", str(questions), "--corpus", str(corpus), "--out", str(tmp_path / "run")]
    code = main([*args, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: no usable passages in {corpus}") and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.parametrize("samples", ["0", "1", "-3"])
@pytest.mark.parametrize("command", ["ask", "eval"])
def test_vote_samples_below_two_are_refused(
    command: str, samples: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = "q?" if command == "ask" else str(tmp_path / "q.jsonl")
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "q?", "answer": "a"}) + "\n")
    args = [command, target, "--vote", "esc", "--vote-samples", samples]
    code = main([*args, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"])
    assert code == 1
    assert "--vote-samples must be at least 2" in capsys.readouterr().err


def test_a_killed_builds_scratch_directory_is_swept_by_the_next_build(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"title": "Oxford", "text": "A university town."}) + "\n")
    cache = tmp_path / "cache"
    key = corpus_fingerprint([corpus], INDEX_VERSION)
    stale = cache / f".{key}-k1ll3d"  # what `kill -9` during a build leaves: its finally never ran
    (stale / "tantivy").mkdir(parents=True)
    (stale / "tantivy" / "half-written").write_bytes(b"\0" * 1024)
    index = LocalIndex.open([corpus], cache_dir=cache)
    assert index.search("university")[0].title == "Oxford"
    assert not stale.exists()
    assert [p.name for p in cache.iterdir() if p.name.startswith(f".{key}-")] == []
