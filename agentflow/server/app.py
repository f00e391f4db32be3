"""`create_app(config)`: the FastAPI app of `agentflow serve`, its services built in the lifespan
and every error turned into OpenAI's `{"error": {...}}` shape once, here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentflow.server.config import ServerConfig
from agentflow.server.protocol import RequestError, error_body, loggable
from agentflow.server.routes import RUN_ID_HEADER, health, router
from agentflow.server.service import ChatService

__all__ = ["create_app"]

logger = logging.getLogger("agentflow.server")
access_log = logging.getLogger("agentflow.server.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name in the metrics; any other a client sends is `other`."""


def create_app(
    config: ServerConfig,
    *,
    grace: float = 30.0,
    service: Callable[[ServerConfig], ChatService] = ChatService,
) -> FastAPI:
    """The app; `grace` is how long running answers may finish at shutdown before they are
    cancelled. `service` builds its `ChatService` in the lifespan (a replica's keeps its runs
    where the other replicas find them)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service(config)
        try:
            yield
        finally:
            await app.state.service.aclose(grace)

    app = FastAPI(title="agentflow", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(health)
    app.include_router(router)
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(_AccessLog)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[RUN_ID_HEADER],
        )
    return app


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.run_id:
        headers[RUN_ID_HEADER] = exc.run_id
    body = error_body(exc.message, type=exc.type, param=exc.param, code=exc.code, run_id=exc.run_id)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A malformed body is a 400 naming the first offending parameter, as OpenAI's API does."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = _param(first.get("loc", ()))
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return JSONResponse(error_body(message, param=param or None), status_code=400)


def _param(loc: Sequence[object]) -> str:
    """`("body", "messages", 0, "content")` -> `messages[0].content`."""
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback here, a short message to the client."""
    run_id = getattr(request.state, "run_id", None)
    logger.error("internal error (run %s)", run_id, exc_info=exc)
    headers = {"x-should-retry": "false"} | ({RUN_ID_HEADER: run_id} if run_id else {})
    return JSONResponse(
        error_body("internal error", type="server_error", code=500, run_id=run_id),
        status_code=500,
        headers=headers,
    )


class _BodyLimit:
    """Refuse a request body over `limit` bytes with a 413 before anything parses it, by its
    Content-Length when it says one and by counting otherwise (chunked). The body read is
    handed on to the app, and later messages (a disconnect) come from the client as usual."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        pieces, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # gone before the body was in: nothing to answer
            pieces.append(message.get("body", b""))
            size += len(pieces[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(pieces), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over the server's limit of {self.limit} bytes"
        body = error_body(message, code="request_too_large")
        await JSONResponse(body, status_code=413)(scope, receive, send)


class _AccessLog:
    """One log line per request with its status, duration and run id, written when the
    response (a whole stream included) is done. Plain ASGI: Starlette's BaseHTTPMiddleware
    would get between a stream and the client's disconnect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, str] = {"status": "-", "run": "-"}

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = str(message["status"])
                headers = dict(message.get("headers") or [])
                seen["run"] = headers.get(RUN_ID_HEADER.lower().encode(), b"-").decode()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            access_log.info(
                "%s %s %s %.0f ms run=%s",
                scope["method"],
                loggable(scope["path"], limit=200),
                seen["status"],
                (time.perf_counter() - started) * 1000,
                seen["run"],
            )
            _count(scope, seen["status"])


def _count(scope: Scope, status: str) -> None:
    """One response in `agentflow_http_responses`, by its route's template (`/v1/runs/{run_id}`,
    never the id: one series per route, not per run) or `other` for unknown paths."""
    service = getattr(scope["app"].state, "service", None)
    if service is None:
        return
    route = getattr(scope.get("route"), "path", "other")
    method = scope["method"] if scope["method"] in _METHODS else "other"
    service.metrics.responses.labels(method=method, route=route, status=status).inc()
