"""Difficulty-based compute allocation (after SCALE): System 1 or System 2 per `llm` node.

An `Allocator` rates each node with a `DifficultyEstimator` and turns the rating into a `Budget`
(fast: no thinking, short, one sample; think: thinking on, more tokens, optionally several
samples under an early-stopping vote). A `ThinkingAdapter` applies the budget to a request the
way the model family switches thinking. `AllocationConfig` is the calibrated threshold on disk.
A budget also names how System 2 is spent (`Strategy`): one chain, samples under a vote, or
threads forked from a shared prefix and joined (`weave`).
"""

from agentflow.allocation._adapters import (
    ADAPTERS,
    AlwaysThinking,
    ChatTemplateSwitch,
    NoThinking,
    ReasoningEffort,
    ThinkingAdapter,
    adapter_for,
)
from agentflow.allocation._allocator import DEFAULT_TAU, Allocator, NodeAllocation
from agentflow.allocation._budget import (
    FAST,
    STRATEGIES,
    THINK,
    Budget,
    Draw,
    Mode,
    Strategy,
    VoteName,
)
from agentflow.allocation._config import (
    ALLOCATIONS,
    AllocationConfig,
    Calibration,
    CurvePoint,
    StrategyBand,
    config_path,
    load_allocator,
    read_config,
)
from agentflow.allocation._estimators import (
    ESTIMATORS,
    Agreement,
    Confidence,
    Constant,
    DifficultyEstimator,
    Estimate,
    Score,
    Static,
    Step,
    parse_score,
)
from agentflow.allocation._forcing import TextModel
from agentflow.allocation._options import (
    add_allocation_options,
    allocation_settings,
    allocator_from_settings,
)
from agentflow.allocation._sampling import VoteOutcome, draw_and_vote
from agentflow.allocation._threads import (
    Outline,
    Weave,
    merge_near_duplicates,
    parse_outline,
    weave,
)
from agentflow.allocation._vote import (
    AdaptiveConsistency,
    EarlyStoppingSelfConsistency,
    VoteRule,
    answer_key,
    beta_tail_above_half,
    last_boxed,
)

__all__ = [
    "ADAPTERS",
    "ALLOCATIONS",
    "DEFAULT_TAU",
    "ESTIMATORS",
    "FAST",
    "STRATEGIES",
    "THINK",
    "AdaptiveConsistency",
    "Agreement",
    "AllocationConfig",
    "Allocator",
    "AlwaysThinking",
    "Budget",
    "Calibration",
    "ChatTemplateSwitch",
    "Confidence",
    "Constant",
    "CurvePoint",
    "DifficultyEstimator",
    "Draw",
    "EarlyStoppingSelfConsistency",
    "Estimate",
    "Mode",
    "NoThinking",
    "NodeAllocation",
    "Outline",
    "ReasoningEffort",
    "Score",
    "Static",
    "Step",
    "Strategy",
    "StrategyBand",
    "TextModel",
    "ThinkingAdapter",
    "VoteName",
    "VoteOutcome",
    "VoteRule",
    "Weave",
    "adapter_for",
    "add_allocation_options",
    "allocation_settings",
    "allocator_from_settings",
    "answer_key",
    "beta_tail_above_half",
    "config_path",
    "draw_and_vote",
    "last_boxed",
    "load_allocator",
    "merge_near_duplicates",
    "parse_outline",
    "parse_score",
    "read_config",
    "weave",
]
