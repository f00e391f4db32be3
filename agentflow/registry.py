"""Names to objects: planners and tools registered under the `agentflow.planners` and
`agentflow.tools` entry-point groups, so the CLI can say `--planner dag --tool calculator`."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from agentflow.exceptions import UserError
from agentflow.planner import Planner
from agentflow.tool import Tool

__all__ = ["load_planner", "load_tool", "planner_names", "tool_names"]

PLANNER_GROUP = "agentflow.planners"
TOOL_GROUP = "agentflow.tools"


def planner_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=PLANNER_GROUP))


def tool_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=TOOL_GROUP))


def load_planner(name: str) -> Planner:
    """A new planner registered under `name`; unknown names fail with the known ones listed."""
    planner_class = _load(PLANNER_GROUP, name, "planner").load()
    if not (isinstance(planner_class, type) and issubclass(planner_class, Planner)):
        raise UserError(f"entry point {name!r} is not a Planner subclass: {planner_class!r}")
    return planner_class()


def load_tool(name: str) -> Tool:
    """The tool registered under `name`."""
    try:
        found = _load(TOOL_GROUP, name, "tool").load()
    except ImportError as exc:  # a tool whose optional extra is not installed
        raise UserError(f"tool {name!r} cannot be loaded: {exc}") from exc
    if not isinstance(found, Tool):
        raise UserError(f"entry point {name!r} is not a Tool: {found!r}")
    return found


def _load(group: str, name: str, what: str) -> EntryPoint:
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        known = sorted(ep.name for ep in entry_points(group=group))
        raise UserError(f"unknown {what} {name!r}; available: {', '.join(known) or '(none)'}")
    return matches[0]
