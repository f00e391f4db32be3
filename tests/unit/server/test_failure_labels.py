"""What the client and /metrics say about a model server that failed: the kind of failure,
not the first label that fits (a cut-off stream is no unreachable server, a 504 no refusal)."""

from __future__ import annotations

from typing import Any

import httpx2

from ..scripted_server import Reply, reply_json, reply_sse, scripted_server
from .conftest import serving
from .model_server import BODY, MODEL, answer_events, answering, server_config
from .test_operating import metric


def _failed(answer: Any) -> tuple[httpx2.Response, str]:
    """A chat against a model server answering with `answer`, and /metrics after it."""
    with scripted_server(answer) as model:
        with serving(server_config(model.base_url)) as base_url:
            response = httpx2.post(f"{base_url}/chat/completions", json=BODY, timeout=30)
            metrics = httpx2.get(f"{base_url.removesuffix('/v1')}/metrics").text
    return response, metrics


def _kind(metrics: str, kind: str) -> float:
    return metric(metrics, "agentflow_run_failures_total", agent=MODEL, kind=kind)


def test_a_cut_off_stream_is_an_unusable_reply_not_an_unreachable_server() -> None:
    def cut(body: dict[str, Any]) -> Reply:
        return reply_sse(answer_events(["Paris is the cap"], finish=None, done=False))

    response, metrics = _failed(answering(cut))
    assert response.status_code == 502
    assert response.json()["error"]["message"].startswith("the model server sent an unusable")
    assert _kind(metrics, "model_response") == 1 and _kind(metrics, "model_unreachable") == 0


def test_a_504_from_the_model_server_is_a_timeout_not_a_refusal() -> None:
    def gateway_timeout(path: str, body: dict[str, Any]) -> Reply:
        return reply_json({"error": {"message": "upstream timed out"}}, status=504)

    response, metrics = _failed(gateway_timeout)
    assert response.status_code == 504
    assert response.json()["error"]["message"].startswith("the model server did not answer in")
    assert _kind(metrics, "model_timeout") == 1 and _kind(metrics, "model_http") == 0
