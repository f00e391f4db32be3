"""The HTTP routes: thin, each hands the request to the `ChatService` on `app.state`."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from agentflow.server.protocol import ChatCompletionRequest, RequestError
from agentflow.server.service import ChatService, RunId
from agentflow.server.streaming import collect, sse
from agentflow.telemetry import remote_parent

__all__ = ["RUN_ID_HEADER", "router"]

RUN_ID_HEADER = "X-Agentflow-Run-Id"


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


def _authorize(request: Request) -> str | None:
    """The caller's API key (None when the server needs none); a wrong one is a 401."""
    keys = _service(request).config.api_keys
    if not keys:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or token.strip() not in keys:
        raise RequestError(
            "invalid or missing API key (send it as `Authorization: Bearer KEY`)",
            status=401,
            code="invalid_api_key",
        )
    return token.strip()


health = APIRouter()
router = APIRouter(prefix="/v1", dependencies=[Depends(_authorize)])


@health.get("/health")
async def get_health(request: Request) -> JSONResponse:
    """Liveness: 200 while the process serves, draining included (restarting it would only
    cut the answers it is finishing); whether to send it chats is `/ready`."""
    service = _service(request)
    status = "ok" if service.accepting else "draining"
    body = {"status": status, "runs_in_flight": service.in_flight, "queued": service.waiting}
    return JSONResponse(body)


@health.get("/ready")
async def get_ready(request: Request) -> JSONResponse:
    """Readiness: 503 while draining at shutdown or while an agent's model server does not
    answer, so a load balancer sends chats elsewhere."""
    service = _service(request)
    if not service.accepting:
        return JSONResponse({"status": "draining"}, status_code=503)
    down = await service.probe.unreachable()
    if down:
        return JSONResponse({"status": "model unreachable", "models": down}, status_code=503)
    return JSONResponse({"status": "ready"})


@health.get("/", include_in_schema=False)
async def chat_page() -> HTMLResponse:
    """The chat page: one self-contained file, nothing from a CDN, so it works offline."""
    return HTMLResponse(_chat_page())


@functools.cache
def _chat_page() -> str:
    return (resources.files("agentflow.server") / "static" / "index.html").read_text("utf-8")


@health.get("/metrics")
async def get_metrics(request: Request) -> Response:
    """Prometheus text format; like /health, open without a key (scrapers rarely send one)."""
    return Response(_service(request).metrics.text(), media_type=CONTENT_TYPE_LATEST)


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "agentflow"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(m) for m in _service(request).agents]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    if model_id not in _service(request).agents:
        raise RequestError(
            f"the model {model_id!r} does not exist",
            param="model",
            status=404,
            code="model_not_found",
        )
    return _model_card(model_id)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, key: Annotated[str | None, Depends(_authorize)]
) -> Response:
    service = _service(request)
    with remote_parent(request.headers):  # a `traceparent`: the run's trace is the caller's
        run = service.start(body, owner=key)
    headers: dict[str, str] = {RUN_ID_HEADER: run.id}
    request.state.run_id = run.id
    if body.stream:
        stream = sse(run, service.config.keepalive)
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    return JSONResponse(await collect(run, request.is_disconnected), headers=headers)


@router.get("/runs/{run_id}")
async def get_run(
    run_id: str, request: Request, key: Annotated[str | None, Depends(_authorize)]
) -> dict[str, object]:
    """A run, to the key that made it only (another key's run is a 404, as if unknown)."""
    record = await _service(request).runs.find(RunId(run_id))
    if record is None or record.owner != key:
        raise RequestError(f"no run {run_id!r} (finished runs are kept for a while)", status=404)
    return record.as_dict()
