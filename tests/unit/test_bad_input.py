"""Bad input gets one clear line, never a traceback: settings, search queries, a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.exceptions import UserError
from agentflow.settings import Settings
from agentflow.tool import ToolError
from agentflow_tools.search import LocalIndex


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AGENTFLOW_PORT", "abc", "AGENTFLOW_PORT must be a port number"),
        ("AGENTFLOW_PORT", "70000", "AGENTFLOW_PORT must be a port number"),
        ("AGENTFLOW_TIMEOUT", "abc", "AGENTFLOW_TIMEOUT must be a number"),
        ("AGENTFLOW_TIMEOUT", "0", "timeout must be seconds above 0"),
        ("AGENTFLOW_TIMEOUT", "nan", "timeout must be seconds above 0"),
    ],
)
def test_bad_environment_values_are_named(
    name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=message):
        Settings.from_env()


def test_a_zero_timeout_flag_is_refused_not_replaced_by_the_default() -> None:
    with pytest.raises(UserError, match="above 0"):
        Settings.from_env(timeout=0)


@pytest.fixture
def index(tmp_path: Path) -> LocalIndex:
    corpus = tmp_path / "c.jsonl"
    rows = [
        {"id": f"d{i}", "title": f"Ray {i}", "text": f"Ray Charles alpha {i} " * 8}
        for i in range(1200)
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return LocalIndex.open([corpus], cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("query", ["Ray Charles AND", "Was it Ray OR NOT", "(Ray", "+Ray -"])
def test_query_syntax_is_searched_as_words(index: LocalIndex, query: str) -> None:
    assert index.search(query, 3)  # was a tantivy syntax error: the agent's node failed


@pytest.mark.parametrize("k", [0, -1, 10_000_000_000])
def test_k_out_of_range_is_a_clear_error(index: LocalIndex, k: int) -> None:
    with pytest.raises(ToolError, match="k must be between 1 and 1000"):
        index.search("Ray", k)


def test_a_reader_that_stops_early_is_not_an_error(index: LocalIndex, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    command = [sys.executable, "-m", "agentflow.cli", "search", "alpha", "--json", "-k", "1000",
               "--corpus", str(corpus)]  # fmt: skip
    env = {"AGENTFLOW_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(10)  # `| head -c 10`: well under the ~100 KB it writes
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
