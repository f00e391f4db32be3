"""The command line's assembly: groups found through `agentflow.commands`, a stand-in for a group
that cannot be imported, and the `GROUP ACTION` rewrite."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from agentflow.cli import _main, main


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_the_core_and_the_registered_groups(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys)
    for command in ("ask", "model", "eval", "index", "search"):
        assert f"\n    {command} " in out
    assert "eval-report" not in out and "SUPPRESS" not in out


def test_eval_report_is_its_own_parser(capsys: pytest.CaptureFixture[str]) -> None:
    assert _help(capsys, "eval", "report").startswith("usage: agentflow eval report ")
    assert "--list-datasets" in _help(capsys, "eval")


def test_a_group_that_cannot_be_imported_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = EntryPoint(
        name="ghost", value="agentflow_ghost.cli:register [ghost]", group=_main.COMMAND_GROUP
    )
    monkeypatch.setattr(_main, "entry_points", lambda group: [ghost])
    assert "pip install 'agentflow-dag[ghost]'" in _help(capsys)
    assert main(["ghost", "anything", "--at-all"]) == 1
    err = capsys.readouterr().err
    assert "agentflow_ghost" in err and "pip install 'agentflow-dag[ghost]'" in err


def test_python_dash_m_runs_the_same_main() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentflow.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("agentflow ")


@pytest.mark.parametrize(
    ("command", "started"),
    [("ask", "started for each run"), ("serve", "kept across"), ("mcp", "kept open")],
)
def test_mcp_help_says_when_a_server_is_started(
    capsys: pytest.CaptureFixture[str], command: str, started: str
) -> None:
    """`serve` and `mcp` keep one session per server across runs: their help says so."""
    out = " ".join(_help(capsys, command).split())
    assert started in out
    assert "starting a server may take this too, but at least 30" in out


@pytest.mark.parametrize("command", ["ask", "mcp"])
@pytest.mark.parametrize(
    "option", [["--max-model-calls", "-5"], ["--max-tokens", "0"], ["--concurrency", "0"]]
)
def test_a_cap_below_one_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str, option: list[str]
) -> None:
    """`--max-model-calls -5` was taken: `ask` then failed with "the run reached its cap of -5
    model calls", and `agentflow mcp` started a server whose every call failed so."""
    argv = [command, *option] + (["a question"] if command == "ask" else [])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option[0]}: " in capsys.readouterr().err
