"""The planners shipped with agentflow, registered under `agentflow.planners` entry points."""

from agentflow_planners.dag import DagPlanner
from agentflow_planners.direct import DirectPlanner
from agentflow_planners.hybrid import HybridPlanner
from agentflow_planners.react import ReactPlanner

__all__ = ["DagPlanner", "DirectPlanner", "HybridPlanner", "ReactPlanner"]
