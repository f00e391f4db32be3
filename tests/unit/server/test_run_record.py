"""What `GET /v1/runs/{id}` shows the run's own key: never the model server's address, its
reply or a flag to set (issue 22); the log keeps all of it. Over loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from ..scripted_server import Reply, chat_body, reply_json, scripted_server
from .conftest import serving
from .model_server import BODY, answering, is_answer_call, server_config
from .test_operating import closed_port_url

LEAK = "upstream http://10.0.0.7:9000/internal exploded"


def refusing(path: str, body: dict[str, Any]) -> Reply:
    """The step call gets a 500 whose body names an internal URL."""
    if is_answer_call(body):
        return reply_json(chat_body(["unused"]))
    return reply_json({"error": {"message": LEAK}}, status=500)


def run_as_shown(base_url: str) -> str:
    made = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
    run_id = made.headers["x-agentflow-run-id"]
    shown = httpx2.get(f"{base_url}/runs/{run_id}", timeout=30)
    assert shown.status_code == 200, shown.text
    return shown.text


def assert_nothing_internal(shown: str) -> None:
    for internal in ("http", "127.0.0.1", "10.0.0.7", "exploded", "agentflow model up", "--"):
        assert internal not in shown, (internal, shown)


@pytest.mark.parametrize(
    "reply", [refusing, answering()], ids=["model-answers-500", "model-answers"]
)
def test_a_run_shows_no_model_server_url_reply_or_advice(
    reply: Callable[[str, dict[str, Any]], Reply], caplog: pytest.LogCaptureFixture
) -> None:
    with scripted_server(reply) as model, serving(server_config(model.base_url)) as base_url:
        shown = run_as_shown(base_url)
    assert_nothing_internal(shown)
    assert '"requests"' in shown  # the trace is there, without where its requests went
    if reply is refusing:
        assert any(LEAK in r.getMessage() for r in caplog.records)  # the operator's log has it


def test_a_run_against_a_down_model_server_shows_no_url_or_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_url = closed_port_url()
    with serving(server_config(model_url)) as base_url:
        shown = run_as_shown(base_url)
    assert_nothing_internal(shown)
    assert "the model server" in shown  # a failure that says what, not where
    assert any(model_url in r.getMessage() for r in caplog.records)
