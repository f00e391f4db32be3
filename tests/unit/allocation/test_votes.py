"""Stopping rules on hand-computed cases; draws that cancel what a settled vote no longer needs."""

from __future__ import annotations

import asyncio

import pytest

from agentflow.allocation import (
    AdaptiveConsistency,
    Budget,
    EarlyStoppingSelfConsistency,
    answer_key,
    beta_tail_above_half,
    draw_and_vote,
)
from agentflow.exceptions import ModelHTTPError
from agentflow.model import Choice, ModelResponse, Usage
from agentflow.slots import NodeSlot, current_slot

from ..inflight import InFlight


@pytest.mark.parametrize(
    ("alpha", "beta", "expected"),
    [(1, 1, 1 / 2), (4, 1, 15 / 16), (5, 1, 31 / 32), (5, 2, 57 / 64), (7, 2, 247 / 256)],
)
def test_beta_tail_is_the_binomial_sum(alpha: int, beta: int, expected: float) -> None:
    # P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) < a), e.g. (5, 2): (64 - 6 - 1) / 64
    assert beta_tail_above_half(alpha, beta) == pytest.approx(expected)


def test_adaptive_consistency_stops_at_four_unanimous_votes() -> None:
    rule = AdaptiveConsistency()
    assert not rule.settled(["7"] * 3)  # Beta(4, 1): 15/16 = 0.9375 < 0.95
    assert rule.settled(["7"] * 4)  # Beta(5, 1): 31/32 = 0.969


def test_adaptive_consistency_with_a_dissenter_needs_six_to_one() -> None:
    rule = AdaptiveConsistency()
    keys: list[str | None] = ["7", "8"]
    stops = []
    for _ in range(6):
        keys.append("7")
        stops.append(rule.settled(keys))
    # 2:1 .. 5:1 stay open (5:1 is Beta(6, 2): 120/128 = 0.9375); 6:1 is 247/256 = 0.965
    assert stops == [False, False, False, False, True, True]
    assert not rule.settled([None] * 6)  # nothing parsed: no leader, never settled


def test_esc_judges_whole_windows_only() -> None:
    rule = EarlyStoppingSelfConsistency(window=3)
    assert not rule.settled(["a", "a"])
    assert rule.settled(["a", "a", "a"])
    assert not rule.settled(["a", "b", "a"])
    assert not rule.settled(["a", "b", "a", "a", "a"])  # 5 is not a whole number of windows
    assert rule.settled(["a", "b", "a", "a", "a", "a"])  # the second window agrees
    assert not rule.settled([None, None, None])  # agreeing on nothing is not agreement


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("Answer: 33.0", "33"),
        ("Answer: $1,000$", "1000"),
        ("Answer: The Eiffel Tower.", "eiffel tower"),
        ("cut off \\boxed{12", None),
        ("", None),
    ],
)
def test_answer_key(text: str, key: str | None) -> None:
    assert answer_key(text) == key


def _response(*texts: str) -> ModelResponse:
    usage = Usage(completion_tokens=len(texts), calls=1)
    return ModelResponse(choices=tuple(Choice(text=t) for t in texts), usage=usage, model="m")


async def test_parallel_draw_cancels_what_is_still_out_when_the_vote_settles() -> None:
    never = asyncio.Event()
    cancelled: list[int] = []

    async def send(index: int, n: int) -> ModelResponse:
        if index >= 4:
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(index)
                raise
        return _response("Answer: 7")

    budget = Budget(mode="think", max_tokens=10, samples=8, vote="adaptive", window=6)
    outcome = await draw_and_vote(send, budget, AdaptiveConsistency())
    assert (outcome.drawn, outcome.stopped_early) == (4, True)
    assert sorted(cancelled) == [4, 5]  # in flight when the 4th vote settled it
    assert outcome.response.usage.completion_tokens == 4
    assert outcome.response.text == "Answer: 7"


async def test_parallel_samples_of_a_node_stay_within_the_executor_slots() -> None:
    """The node's slot is lent to its samples: two slots, a window of six, two in flight."""
    inflight = InFlight()

    async def send(index: int, n: int) -> ModelResponse:
        await inflight.hold()
        return _response(f"Answer: {index}")  # never agree: all eight are drawn

    semaphore = asyncio.Semaphore(2)
    budget = Budget(mode="think", max_tokens=10, samples=8, vote="adaptive", window=6)
    async with NodeSlot(semaphore) as slot:
        current_slot.set(slot)
        outcome = await asyncio.wait_for(draw_and_vote(send, budget, AdaptiveConsistency()), 5)
        assert semaphore._value == 1  # the node holds its slot again, and only it
    assert outcome.drawn == 8 and inflight.peak == 2


async def test_requests_of_n_are_judged_per_wave_and_the_leader_wins() -> None:
    waves = [("Answer: 1", "Answer: 2", "Answer: 1"), ("Answer: 3",) * 3, ("Answer: 9",) * 3]
    asked: list[tuple[int, int]] = []

    async def send(index: int, n: int) -> ModelResponse:
        asked.append((index, n))
        return _response(*waves[len(asked) - 1])

    budget = Budget(mode="think", max_tokens=10, samples=8, vote="esc", window=3, draw="n")
    outcome = await draw_and_vote(send, budget, EarlyStoppingSelfConsistency(3))
    assert asked == [(0, 3), (3, 3)]
    assert (outcome.drawn, outcome.stopped_early) == (6, True)
    assert outcome.counts == {"1": 2, "2": 1, "3": 3}
    assert outcome.response.text == "Answer: 3"


async def test_a_server_refusing_n_gets_one_request_per_sample() -> None:
    async def send(index: int, n: int) -> ModelResponse:
        if n > 1:
            raise ModelHTTPError("no n", status_code=400, body="n must be 1")
        return _response("Answer: 4")

    budget = Budget(mode="think", max_tokens=10, samples=6, vote="esc", window=3, draw="n")
    outcome = await draw_and_vote(send, budget, EarlyStoppingSelfConsistency(3))
    assert outcome.drawn == 3 and outcome.stopped_early
    assert outcome.notes == ("server refused n=3 (HTTP 400): one request per sample",)


async def test_a_vote_where_nothing_parses_keeps_the_first_sample_and_says_so() -> None:
    async def send(index: int, n: int) -> ModelResponse:
        return _response(" ")

    budget = Budget(mode="think", max_tokens=10, samples=3, vote="adaptive", window=3)
    outcome = await draw_and_vote(send, budget, AdaptiveConsistency())
    assert outcome.drawn == 3 and not outcome.stopped_early
    assert "none of 3 samples had a parseable answer" in outcome.notes[0]


async def test_a_sample_cut_off_before_its_answer_abstains_and_a_finished_one_wins() -> None:
    """A cut-off sample's last line is where it stopped: it used to vote "391" with a finished
    sample and, drawn first, be the winner whose text had no answer."""
    samples = [
        Choice(text="17 * 23 is 340 + 51\n391", finish_reason="length"),
        Choice(text="17 * 23 = 391\nAnswer: 391", finish_reason="stop"),
        Choice(text="17 * 23 = 391\nAnswer: 391", finish_reason="stop"),
        Choice(text="We get \\boxed{390}.\nBut wait, 17 *", finish_reason="length"),
    ]

    async def send(index: int, n: int) -> ModelResponse:
        return ModelResponse(choices=(samples[index],), usage=Usage(calls=1), model="m")

    budget = Budget(mode="think", max_tokens=10, samples=4, vote="adaptive", window=1)
    outcome = await draw_and_vote(send, budget, AdaptiveConsistency())
    assert outcome.drawn == 4 and outcome.counts == {"391": 2}
    assert outcome.response.choices[0].finish_reason == "stop"
