"""`agentflow serve`: an OpenAI-compatible chat backend (the `server` extra: FastAPI + uvicorn).

`protocol` is the wire format, `routes` the thin HTTP layer, `service` turns requests into agent
runs, `streaming` turns a run into SSE frames or one body, `app` builds the FastAPI app.
"""

from __future__ import annotations

from agentflow.server.app import create_app
from agentflow.server.config import AgentSpec, ServerConfig

__all__ = ["AgentSpec", "ServerConfig", "create_app"]
