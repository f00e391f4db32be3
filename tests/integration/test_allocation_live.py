"""Allocation against the embedded model: votes drawn both ways, and `scale` on one AMC item.

Budgets are kept tiny (tens of tokens): these check the wiring on a real server, not accuracy.
"""

from __future__ import annotations

import json
from dataclasses import replace

from agentflow import Agent
from agentflow.allocation import FAST, THINK, Allocator, Budget, Constant, Draw, Score, VoteName
from agentflow.models import OpenAIModel
from agentflow_evals.datasets import PACKAGED_DATA
from agentflow_planners.scale import ScalePlanner

AMC = PACKAGED_DATA / "math" / "amc23.jsonl"


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


async def test_a_vote_drawn_as_n_in_one_request_keeps_a_consistent_record(
    live_model: OpenAIModel,
) -> None:
    # Near-greedy sampling of 3 tokens (vLLM refuses n > 1 at temperature 0). Whether the
    # samples agree is the model's business (SmolLM2 agrees in float32, not in bfloat16): the
    # server must take n=3 and the record must add up. The stopping rule itself is tested over
    # HTTP against a scripted server (tests/unit/allocation/test_votes_over_http.py).
    allocator = _think_vote(vote="esc", window=3, draw="n")
    result = await Agent(model=live_model, planner="direct", allocation=allocator).run("2+2?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None and record["mode"] == "think", record
    assert 3 <= record["samples"] <= 8, record
    assert not any("refused n" in note for note in record["notes"]), record  # n was taken
    assert record["stopped_early"] == (record["samples"] < 8), record
    requests = result.trace.nodes["answer"].usage.calls
    assert requests == -(-record["samples"] // 3), (requests, record)  # waves of n=3 (3, 3, 2)


async def test_a_parallel_vote_keeps_a_consistent_record(live_model: OpenAIModel) -> None:
    allocator = _think_vote(vote="adaptive", window=6)
    result = await Agent(model=live_model, planner="direct", allocation=allocator).run("2+2?")
    record = result.trace.nodes["answer"].allocation
    assert record is not None and record["mode"] == "think", record
    assert 4 <= record["samples"] <= 8, record  # Adaptive-Consistency needs 4 at least
    assert record["stopped_early"] == (record["samples"] < 8), record
    assert record["samples"] <= result.trace.nodes["answer"].usage.calls <= 8, record


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
    assert steps and all(n.status == "ok" for n in steps)  # cut off at 48/96 tokens is still ok
    for node in steps:
        assert node.allocation is not None
        assert node.allocation["estimator"] == "score"
        assert node.allocation["mode"] in ("fast", "think")
        assert 0.0 <= node.allocation["difficulty"] <= 1.0
    assert isinstance(result.reply, str)  # boxed or not is the model's business
