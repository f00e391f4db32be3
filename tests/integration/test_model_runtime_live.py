"""The embedded-model commands, run while the shared server is up (`down` is tested on a fake
process in tests/unit/test_runtime.py so the session's server stays up)."""

from __future__ import annotations

import json

import pytest

from agentflow.cli import main
from agentflow.settings import EMBEDDED_MODELS, Settings


def _live_embedded_model() -> str | None:
    """The short name of the embedded model the live server is (`make test` starts SmolLM2,
    `make test-real` the 1.5B), or None for a server of the user's own."""
    settings = Settings.from_env()
    for model in EMBEDDED_MODELS.values():
        url = f"http://127.0.0.1:{settings.embedded_port(model)}/v1"
        if settings.base_url.rstrip("/") == url:
            return model.name
    return None


LIVE = _live_embedded_model()
pytestmark = pytest.mark.skipif(LIVE is None, reason="the live server is not an embedded one")


def test_model_up_reuses_the_running_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "up", "--model", str(LIVE)]) == 0
    assert "model server up" in capsys.readouterr().out


def test_model_status_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "status", "--json", "--model", str(LIVE)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["name"] == LIVE and status["healthy"] is True


def test_model_logs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "logs", "-n", "5", "--model", str(LIVE)]) == 0
