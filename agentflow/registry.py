"""Planner names to planner objects, through the `agentflow.planners` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from agentflow.exceptions import UserError
from agentflow.planner import Planner

__all__ = ["load_planner", "planner_names"]

PLANNER_GROUP = "agentflow.planners"


def planner_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=PLANNER_GROUP))


def load_planner(name: str) -> Planner:
    """A new planner registered under `name`; unknown names fail with the known ones listed."""
    matches = [ep for ep in entry_points(group=PLANNER_GROUP) if ep.name == name]
    if not matches:
        raise UserError(
            f"unknown planner {name!r}; available: {', '.join(planner_names()) or '(none)'}"
        )
    planner_class = matches[0].load()
    if not (isinstance(planner_class, type) and issubclass(planner_class, Planner)):
        raise UserError(f"entry point {name!r} is not a Planner subclass: {planner_class!r}")
    return planner_class()
