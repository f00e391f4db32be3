"""agentflow: agentic reasoning and parallel search with LLMs."""

from agentflow._version import __version__
from agentflow.agent import Agent, RunResult
from agentflow.context import RunContext, RunLimits
from agentflow.endpoints import EndpointPool
from agentflow.exceptions import (
    AgentflowError,
    DeadlineExceededError,
    ExecutionError,
    LimitExceededError,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOutputError,
    ModelResponseError,
    ModelTimeoutError,
    PlanError,
    RuntimeSetupError,
    UserError,
)
from agentflow.model import Choice, Model, ModelResponse, ModelSettings, Usage
from agentflow.models import OpenAIModel, RetryPolicy
from agentflow.plan import Plan, PlanLimits, TaskId, TaskNode, validate_plan
from agentflow.planner import Answer, Continue, Planner, Replan, RunState, TaskResult
from agentflow.tool import RetryTask, Tool, ToolError, Toolset, tool
from agentflow.trace import NodeRecord, Trace, TraceEvent

__all__ = [
    "Agent",
    "AgentflowError",
    "Answer",
    "Choice",
    "Continue",
    "DeadlineExceededError",
    "EndpointPool",
    "ExecutionError",
    "LimitExceededError",
    "Model",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelNotFoundError",
    "ModelOutputError",
    "ModelResponse",
    "ModelResponseError",
    "ModelSettings",
    "ModelTimeoutError",
    "NodeRecord",
    "OpenAIModel",
    "Plan",
    "PlanError",
    "PlanLimits",
    "Planner",
    "Replan",
    "RetryPolicy",
    "RetryTask",
    "RunContext",
    "RunLimits",
    "RunResult",
    "RunState",
    "RuntimeSetupError",
    "TaskId",
    "TaskNode",
    "TaskResult",
    "Tool",
    "ToolError",
    "Toolset",
    "Trace",
    "TraceEvent",
    "Usage",
    "UserError",
    "__version__",
    "tool",
    "validate_plan",
]
