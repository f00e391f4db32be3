"""Model implementations."""

from agentflow.models.openai_compat import OpenAIModel, RetryPolicy

__all__ = ["OpenAIModel", "RetryPolicy"]
