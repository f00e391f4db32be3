"""Allocation against the embedded model: a vote that stops early, and `scale` on one AMC item.

Budgets are kept tiny (tens of tokens): these check the wiring on a real server, not accuracy.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from agentflow import Agent
from agentflow.allocation import FAST, THINK, Allocator, Budget, Constant, Draw, Score, VoteName
from agentflow.models import OpenAIModel
from agentflow_planners.scale import ScalePlanner

AMC = Path(__file__).parents[2].parent / "shared" / "data" / "math" / "amc23.jsonl"


def _think_vote(vote: VoteName, window: int, draw: Draw = "parallel") -> Allocator:
    think = Budget(
        mode="think",
        max_tokens=3,
        temperature=0.01,
        samples=8,
        vote=vote,
        window=window,
        draw=draw,
    )
    return Allocator(estimator=Constant("uniform-think", 1.0), think=think)


async def test_samples_in_one_request_and_a_vote_that_stops_early(live_model: OpenAIModel) -> None:
    # Near-greedy sampling of 3 tokens (vLLM refuses n > 1 at temperature 0, and a longer
    # answer cut off mid-sentence can differ somewhere under batching): the samples agree, so ESC
    # settles on its first window of 3, drawn as one request with n=3 (one shared prefill)
    # instead of the 8 it may draw.
    allocator = _think_vote(vote="esc", window=3, draw="n")
    result = await Agent(model=live_model, planner="direct", allocation=allocator).run("2+2?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert (record["samples"], record["stopped_early"], record["mode"]) == (3, True, "think"), (
        record
    )
    assert result.trace.nodes["answer"].usage.calls == 1


async def test_parallel_vote_cancels_what_it_no_longer_needs(live_model: OpenAIModel) -> None:
    # Adaptive-Consistency settles at the 4th agreeing answer; at most 6 are in flight by then
    # and the last 2 are never sent.
    allocator = _think_vote(vote="adaptive", window=6)
    result = await Agent(model=live_model, planner="direct", allocation=allocator).run("2+2?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None
    assert record["stopped_early"] and 4 <= record["samples"] <= 6, record
    assert result.trace.nodes["answer"].usage.calls == record["samples"]


async def test_scale_planner_end_to_end_on_one_amc_item(live_model: OpenAIModel) -> None:
    problem = json.loads(AMC.read_text(encoding="utf-8").splitlines()[0])["problem"]
    planner = ScalePlanner()
    planner.decompose_settings = replace(planner.decompose_settings, max_tokens=120)
    allocator = Allocator(
        estimator=Score(),
        fast=replace(FAST, max_tokens=48),
        think=replace(THINK, max_tokens=96),
    )
    result = await Agent(model=live_model, planner=planner, allocation=allocator).run(problem)
    steps = [n for n in result.trace.nodes.values() if n.id.startswith("s")]
    assert steps and all(n.status == "ok" for n in steps)
    for node in steps:
        assert node.allocation is not None
        assert node.allocation["estimator"] == "score"
        assert node.allocation["mode"] in ("fast", "think")
        assert 0.0 <= node.allocation["difficulty"] <= 1.0
    assert "\\boxed{" in result.reply and result.answer
