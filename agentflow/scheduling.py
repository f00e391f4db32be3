"""Request priority: which model call the server should serve first when it is busy.

vLLM, started with `--scheduling-policy priority`, serves lower `priority` values first. The
executor knows where a node sits in the plan; the model layer builds the request. Between the two
sits one context variable: the executor sets it for the task that runs a node, asyncio copies it
into everything that task awaits, and `OpenAIModel` reads it for any call whose own settings name
no priority. Calls made outside a node (planning, joining, answering) see the default, `PLANNER`:
the run cannot move on until they finish, so they go first.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["NODE_BASE", "PLANNER", "current_priority", "node_priority", "request_priority"]

PLANNER = 0
"""Planning, joining and answering calls: every branch waits on them."""
NODE_BASE = 1
"""A node with the longest remaining path gets `NODE_BASE`; shorter paths get larger values."""
_MAX_PATH = 16
"""Remaining paths longer than this share the highest node priority."""

request_priority: ContextVar[int] = ContextVar("agentflow_request_priority", default=PLANNER)
"""The priority of model calls made from the current task."""


def node_priority(remaining_path: int) -> int:
    """The priority of a node whose longest chain of dependents, itself included, is
    `remaining_path` nodes long: the longer the chain still to run after it, the sooner it is
    served (critical path first, as in LLMCompiler and Parrot)."""
    return NODE_BASE + _MAX_PATH - min(max(remaining_path, 1), _MAX_PATH)


def current_priority() -> int:
    return request_priority.get()
