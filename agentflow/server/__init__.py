"""`agentflow serve`: an OpenAI-compatible chat backend (the `server` extra: FastAPI + uvicorn).

`protocol` is the wire format, `routes` the thin HTTP layer, `service` turns requests into agent
runs, `streaming` turns a run into SSE frames or one body, `app` builds the FastAPI app. `runs`
keeps the runs `GET /v1/runs/{id}` reads, `failures` says what a failed run tells its client,
`readiness` asks the model servers whether they answer, `metrics` counts for `/metrics`.
`replicas` serves the app from several Ray Serve replicas (`--replicas`, the serve-ray extra),
which share their runs through `shared_runs`.
"""

from __future__ import annotations

from agentflow.server.app import create_app
from agentflow.server.config import AgentSpec, ServerConfig

__all__ = ["AgentSpec", "ServerConfig", "create_app"]
