"""The embedded local model: prepare its weights, start and stop a vLLM server on them."""

from agentflow.runtime.server import LocalServer, ServerStatus
from agentflow.runtime.weights import prepare_weights

__all__ = ["LocalServer", "ServerStatus", "prepare_weights"]
