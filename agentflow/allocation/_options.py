"""The `--allocation` options `ask` and `eval` share, and the allocator they name."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentflow.allocation._allocator import Allocator
from agentflow.allocation._budget import STRATEGIES, THINK
from agentflow.allocation._config import ALLOCATIONS, load_allocator
from agentflow.exceptions import UserError

__all__ = ["add_allocation_options", "allocation_settings", "allocator_from_settings"]


def add_allocation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("compute allocation (System 1 / System 2 per llm node)")
    group.add_argument(
        "--allocation",
        choices=ALLOCATIONS,
        help="how each llm node's difficulty is judged: off, uniform-fast, uniform-think, score "
        "(a rating call), agreement (fast samples agree), confidence (token log-probs), static "
        "(the planner's); default: the planner's own (scale: score, others: off)",
    )
    group.add_argument(
        "--tau",
        type=float,
        help="think iff difficulty > tau (default: the calibrated tau in the allocation config "
        "for that estimator, else 0.5)",
    )
    group.add_argument(
        "--vote",
        choices=("none", "esc", "adaptive"),
        default="none",
        help="early-stopping vote for think-mode nodes: esc (a window that agrees) or adaptive "
        "(Adaptive-Consistency, 95%% sure of the leader)",
    )
    group.add_argument(
        "--vote-samples",
        type=int,
        default=8,
        help="most samples a vote draws (default %(default)s)",
    )
    group.add_argument(
        "--vote-draw",
        choices=("parallel", "n"),
        default="parallel",
        help="parallel requests (cancelled when the vote settles) or n=window per request",
    )
    _add_think_budget(group)
    _add_strategy(group)
    group.add_argument(
        "--allocation-config",
        type=Path,
        help="calibrated thresholds (default $AGENTFLOW_ALLOCATION_CONFIG or "
        "$AGENTFLOW_HOME/allocation.json)",
    )


def _add_think_budget(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--think-max-tokens",
        type=int,
        help=f"answer tokens of a think-mode call (default {THINK.max_tokens})",
    )
    group.add_argument(
        "--thinking-tokens",
        type=int,
        help="cap on thinking tokens in think mode, for thinking models "
        f"(default {THINK.thinking_tokens}; SCALE-scale runs want tens of thousands)",
    )


def _add_strategy(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="how a think-mode node spends System 2: chain (one long pass), vote (parallel "
        "samples under the early-stopping vote; esc unless --vote names one), threads "
        "(an outline of independent threads decoded at once from a shared prefix, then "
        "joined); default: the allocation config's band for the difficulty, else vote when "
        "--vote is set, else chain",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=3,
        help="most threads the threads strategy runs (default %(default)s)",
    )


def allocation_settings(args: argparse.Namespace, planner_default: str | None) -> dict[str, Any]:
    """The options as plain values (what an eval config stores), the allocation resolved to
    the planner's default when not given."""
    return {
        "allocation": args.allocation or planner_default or "off",
        "tau": args.tau,
        "vote": args.vote,
        "vote_samples": args.vote_samples,
        "vote_draw": args.vote_draw,
        "allocation_config": args.allocation_config,
        "think_max_tokens": args.think_max_tokens,
        "thinking_tokens": args.thinking_tokens,
        **_strategy_settings(args),
    }


def _strategy_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Only when a strategy is named, so configs stored before strategies existed still match."""
    strategy = getattr(args, "strategy", None)
    return {"strategy": strategy, "threads": args.threads} if strategy else {}


def allocator_from_settings(values: dict[str, Any]) -> Allocator | None:
    """The allocator `allocation_settings` describes; None when allocation is off."""
    samples = values.get("vote_samples")
    if samples is not None and samples < 2:  # 0 or 1 used to turn the vote off without a word
        raise UserError(
            f"--vote-samples must be at least 2, a vote's smallest size (got {samples}); "
            "for one sample, leave --vote at none"
        )
    allocator = load_allocator(
        values["allocation"],
        tau=values["tau"],
        vote=values["vote"],
        samples=values["vote_samples"],
        draw=values["vote_draw"],
        config=values["allocation_config"],
    )
    if allocator is not None and values.get("strategy"):
        threads = int(values.get("threads", 3))
        if threads < 1:
            raise UserError("--threads must be at least 1")
        samples = int(values.get("vote_samples") or 8)
        think = allocator.think.with_strategy(values["strategy"], samples=samples, threads=threads)
        allocator = replace(allocator, think=think)
    answer, thinking = values.get("think_max_tokens"), values.get("thinking_tokens")
    if allocator is None or (answer is None and thinking is None):
        return allocator
    if any(v is not None and v < 1 for v in (answer, thinking)):
        raise UserError("--think-max-tokens and --thinking-tokens must be at least 1")
    think = replace(
        allocator.think,
        max_tokens=answer or allocator.think.max_tokens,
        thinking_tokens=thinking or allocator.think.thinking_tokens,
    )
    return replace(allocator, think=think)
