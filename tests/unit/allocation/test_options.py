"""`--allocation` and friends, as `ask` and `eval` read them."""

from __future__ import annotations

import argparse

import pytest

from agentflow.allocation import (
    add_allocation_options,
    allocation_settings,
    allocator_from_settings,
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_allocation_options(parser)
    return parser.parse_args(argv)


def test_no_option_keeps_the_planner_default() -> None:
    assert allocation_settings(_parse(), None)["allocation"] == "off"
    assert allocation_settings(_parse(), "score")["allocation"] == "score"
    assert allocator_from_settings(allocation_settings(_parse(), None)) is None


def test_a_vote_goes_to_the_think_budget_only() -> None:
    args = _parse("--allocation", "agreement", "--tau", "0.4", "--vote", "esc", "--vote-draw", "n")
    allocator = allocator_from_settings(allocation_settings(args, "score"))
    assert allocator is not None and allocator.estimator.name == "agreement"
    assert allocator.tau == 0.4
    assert (allocator.think.vote, allocator.think.samples, allocator.think.draw) == ("esc", 8, "n")
    assert allocator.think.temperature == 0.7 and allocator.fast.samples == 1


def test_think_budget_sizes_can_be_set() -> None:
    args = _parse(
        "--allocation", "score", "--thinking-tokens", "32000", "--think-max-tokens", "900"
    )
    allocator = allocator_from_settings(allocation_settings(args, None))
    assert allocator is not None
    assert (allocator.think.thinking_tokens, allocator.think.max_tokens) == (32000, 900)
    with pytest.raises(Exception, match="at least 1"):
        allocator_from_settings(allocation_settings(_parse("--thinking-tokens", "0"), "score"))


def test_bad_values_fail_at_parse_or_load_time() -> None:
    with pytest.raises(SystemExit):
        _parse("--allocation", "vibes")
    with pytest.raises(Exception, match="tau must be between 0 and 1"):
        allocator_from_settings(allocation_settings(_parse("--tau", "2"), "score"))
