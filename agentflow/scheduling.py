"""Request priority: which model call the server should serve first when it is busy.

vLLM, started with `--scheduling-policy priority`, serves lower `priority` values first. The
executor knows where a node sits in the plan; the model layer builds the request. Between the two
sits one context variable: the executor sets it for the task that runs a node, asyncio copies it
into everything that task awaits, and `OpenAIModel` reads it for any call whose own settings name
no priority. Calls made outside a node (planning, joining, answering) see the default, `PLANNER`:
the run cannot move on until they finish, so they go first.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

__all__ = [
    "NODE_BASE",
    "PLANNER",
    "RemainingPaths",
    "current_priority",
    "node_priority",
    "request_priority",
]

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


class RemainingPaths:
    """Longest chains of dependents in a plan that grows while it runs.

    `add` records a node as it is planned; `priority` is asked when a node's model call is about
    to be made, by which time most of its dependents are known. Lengths are memoised, and a new
    node forgets only the lengths it can change (those of what it needs, and of what needs
    them), so a 1,000-node plan streamed in while its first nodes run costs a walk per node, not
    a walk of the whole plan per node."""

    def __init__(self) -> None:
        self._dependents: dict[str, list[str]] = {}
        self._deps: dict[str, list[str]] = {}
        self._memo: dict[str, int] = {}

    def add(self, node_id: str, deps: Iterable[str]) -> None:
        self._dependents.setdefault(node_id, [])
        needs = self._deps.setdefault(node_id, [])
        for dep in deps:
            self._dependents.setdefault(dep, []).append(node_id)
            needs.append(dep)
            self._forget(dep)

    def _forget(self, node_id: str) -> None:
        """Drop the memoised lengths of `node_id` and of everything that needs it. A walk
        memoises every node below the one it starts from, so a node with no memoised length has
        no memoised ancestor either: the climb stops there (and at a cycle, which it pops)."""
        stack = [node_id]
        while stack:
            current = stack.pop()
            if self._memo.pop(current, None) is not None:
                stack.extend(self._deps.get(current, ()))

    def length(self, node_id: str) -> int:
        """Nodes on the longest chain from `node_id` to the end of the plan, itself included."""
        if node_id in self._memo:
            return self._memo[node_id]
        # Iterative depth-first walk (a 1,000-deep chain must not hit the recursion limit). A
        # cycle, which validated plans never have, counts as ending where it closes.
        stack = [(node_id, iter(self._dependents.get(node_id, [])))]
        on_path = {node_id}
        while stack:
            current, dependents = stack[-1]
            for dependent in dependents:
                if dependent not in self._memo and dependent not in on_path:
                    on_path.add(dependent)
                    stack.append((dependent, iter(self._dependents.get(dependent, []))))
                    break
            else:
                stack.pop()
                on_path.discard(current)
                below = (self._memo.get(d, 0) for d in self._dependents.get(current, []))
                self._memo[current] = 1 + max(below, default=0)
        return self._memo[node_id]

    def priority(self, node_id: str) -> int:
        return node_priority(self.length(node_id))
