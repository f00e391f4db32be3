"""Where agentflow finds its model server and keeps its files, from flags or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentflow.exceptions import UserError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "EMBEDDED_MODELS",
    "QWEN_CODER",
    "SMOLLM2",
    "EmbeddedModel",
    "Settings",
    "agentflow_home",
    "embedded_model",
]

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""The default embedded model's served name."""
DEFAULT_PORT = 8100


@dataclass(frozen=True, kw_only=True)
class EmbeddedModel:
    """A model `agentflow model up --model NAME` serves on this machine."""

    name: str
    """The short name on the command line, e.g. `qwen2.5-coder-1.5b`."""
    served_name: str
    """The name vLLM serves it under: the `model` every request carries."""
    port_offset: int
    """Its port is `AGENTFLOW_PORT` plus this, so several can be up at once."""


SMOLLM2 = EmbeddedModel(name="smollm2-135m", served_name=DEFAULT_MODEL, port_offset=0)
QWEN_CODER = EmbeddedModel(
    name="qwen2.5-coder-1.5b", served_name="Qwen2.5-Coder-1.5B-Instruct", port_offset=1
)
EMBEDDED_MODELS = {model.name: model for model in (SMOLLM2, QWEN_CODER)}
"""By short name; the first is the default."""


def embedded_model(name: str) -> EmbeddedModel | None:
    """The embedded model a short or served name names (in any case), or None."""
    key = name.strip().lower()
    for model in EMBEDDED_MODELS.values():
        if key in (model.name, model.served_name.lower()):
            return model
    return None


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
        name = model or env.get("AGENTFLOW_MODEL") or DEFAULT_MODEL
        embedded = embedded_model(name)
        if embedded is not None:
            name = embedded.served_name
            if base_url is None and model is not None and model.strip().lower() == embedded.name:
                # A short name on the command line names the embedded server of that model,
                # whatever AGENTFLOW_BASE_URL says; --base-url still wins.
                base_url = _local_url(port + embedded.port_offset)
            port += embedded.port_offset
        return cls(
            base_url=base_url or env.get("AGENTFLOW_BASE_URL") or _local_url(port),
            model=name,
            api_key=env.get("AGENTFLOW_API_KEY") or env.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            idle_timeout=idle_timeout,
            home=agentflow_home(env),
        )

    @property
    def local_port(self) -> int:
        """The default embedded model's port (`AGENTFLOW_PORT`, default 8100)."""
        return _port(os.environ)

    def embedded_port(self, model: EmbeddedModel) -> int:
        """The port `model up --model NAME` serves that model on."""
        port = self.local_port + model.port_offset
        if port > 65535:
            raise UserError(f"AGENTFLOW_PORT leaves no port for {model.name} ({port})")
        return port


def _local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


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
