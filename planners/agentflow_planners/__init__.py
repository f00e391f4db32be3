"""The planners shipped with agentflow, registered under `agentflow.planners` entry points."""

from agentflow_planners.direct import DirectPlanner

__all__ = ["DirectPlanner"]
