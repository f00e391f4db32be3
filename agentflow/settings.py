"""Where agentflow finds its model server and keeps its files, from flags or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentflow.exceptions import UserError

__all__ = ["DEFAULT_MODEL", "DEFAULT_PORT", "Settings", "agentflow_home"]

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""The embedded model's served name."""
DEFAULT_PORT = 8100


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Connection and storage settings. Flags win over the environment, which wins over defaults."""

    base_url: str
    """The OpenAI-compatible API root, e.g. `http://127.0.0.1:8100/v1`."""
    model: str
    api_key: str = "EMPTY"
    timeout: float = 120.0
    """Seconds for one model request."""
    idle_timeout: float | None = None
    """Seconds a streamed answer may send nothing before its connection counts as dead."""
    home: Path
    """agentflow's cache and state directory (converted weights, pid and log files)."""

    @classmethod
    def from_env(
        cls,
        *,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> Settings:
        env = os.environ
        port = _port(env)
        if timeout is None:
            timeout = _number(env, "AGENTFLOW_TIMEOUT", 120.0)
        if not timeout > 0:  # also NaN
            raise UserError(f"the request timeout must be seconds above 0, not {timeout}")
        if idle_timeout is None and env.get("AGENTFLOW_IDLE_TIMEOUT"):
            idle_timeout = _number(env, "AGENTFLOW_IDLE_TIMEOUT", 0.0)
        if idle_timeout is not None and not idle_timeout > 0:
            raise UserError(f"the idle timeout must be seconds above 0, not {idle_timeout}")
        return cls(
            base_url=base_url or env.get("AGENTFLOW_BASE_URL") or f"http://127.0.0.1:{port}/v1",
            model=model or env.get("AGENTFLOW_MODEL") or DEFAULT_MODEL,
            api_key=env.get("AGENTFLOW_API_KEY") or env.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            idle_timeout=idle_timeout,
            home=agentflow_home(env),
        )

    @property
    def local_port(self) -> int:
        return _port(os.environ)


def _port(env: Mapping[str, str]) -> int:
    text = env.get("AGENTFLOW_PORT", str(DEFAULT_PORT))
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise UserError(f"AGENTFLOW_PORT must be a port number (1-65535), not {text!r}")
    return int(text)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{name} must be a number, not {text!r}") from None


def agentflow_home(env: Mapping[str, str] | None = None) -> Path:
    """agentflow's cache and state directory: `$AGENTFLOW_HOME`, default ~/.cache/agentflow."""
    env = os.environ if env is None else env
    return Path(env.get("AGENTFLOW_HOME") or Path.home() / ".cache" / "agentflow")
