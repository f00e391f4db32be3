"""The embedded-model commands, run while the shared server is up (`down` is tested on a fake
process in tests/unit/test_runtime.py so the session's server stays up)."""

from __future__ import annotations

import json
import os

import pytest

from agentflow.cli import main
from agentflow.settings import Settings

pytestmark = pytest.mark.skipif(
    Settings.from_env().base_url.rstrip("/")
    != f"http://127.0.0.1:{os.environ.get('AGENTFLOW_PORT', 8100)}/v1",
    reason="the live server is not the embedded one",
)


def test_model_up_reuses_the_running_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "up"]) == 0
    assert "model server up" in capsys.readouterr().out


def test_model_status_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["healthy"] is True


def test_model_logs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "logs", "-n", "5"]) == 0
