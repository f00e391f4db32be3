"""Early-stopping votes through the whole stack (Agent, allocator, OpenAIModel, real HTTP) against
a scripted server whose samples agree: what a vote does with the answers it gets.

These used to be live tests on SmolLM2, which agreed with itself in float32 and not in bfloat16;
whether samples agree is the model's business, so the behaviour is pinned here and the live
suite checks only the wiring (tests/integration/test_allocation_live.py).
"""

from __future__ import annotations

import threading
from typing import Any

from agentflow import Agent
from agentflow.allocation import Allocator, Budget, Constant, Draw, VoteName
from agentflow.models import OpenAIModel
from tests.unit.scripted_server import Reply, chat_body, reply_chat, reply_json, scripted_server


def think_vote(vote: VoteName, window: int, draw: Draw) -> Allocator:
    think = Budget(
        mode="think", max_tokens=3, temperature=0.6, samples=8, vote=vote, window=window, draw=draw
    )
    return Allocator(estimator=Constant("uniform-think", 1.0), think=think)


async def run(url: str, allocator: Allocator) -> Any:
    model = OpenAIModel("m", url)
    try:
        return await Agent(model=model, planner="direct", allocation=allocator).run("2+2?")
    finally:
        await model.aclose()


def agreeing(path: str, body: dict[str, Any]) -> Reply:
    return reply_chat(body, ["Answer: 4"] * int(body.get("n", 1)))


async def test_esc_drawn_as_n_settles_on_its_first_window_in_one_request() -> None:
    with scripted_server(agreeing) as served:
        result = await run(served.base_url, think_vote("esc", 3, "n"))
    record = result.trace.nodes["answer"].allocation
    assert (record["samples"], record["stopped_early"], record["mode"]) == (3, True, "think")
    assert [r.get("n") for r in served.requests] == [3]  # one request, one shared prefill
    assert result.trace.nodes["answer"].usage.calls == 1 and result.answer == "4"


async def test_esc_drawn_as_n_goes_on_while_its_windows_disagree() -> None:
    waves = iter([["Answer: 1", "Answer: 2", "Answer: 1"], ["Answer: 3"] * 3])

    def disagreeing_then_agreeing(path: str, body: dict[str, Any]) -> Reply:
        return reply_json(chat_body(next(waves)))

    with scripted_server(disagreeing_then_agreeing) as served:
        result = await run(served.base_url, think_vote("esc", 3, "n"))
    record = result.trace.nodes["answer"].allocation
    assert (record["samples"], record["stopped_early"]) == (6, True)
    assert len(served.requests) == 2 and result.answer == "3"


async def test_a_parallel_vote_cancels_what_it_no_longer_needs() -> None:
    """Adaptive-Consistency settles at the 4th agreeing answer. The server answers four requests
    and holds every later one until the test has its result (or for 60 s): a run that waited for
    a held request instead of cancelling it would only get it when the hold ran out."""
    released = threading.Event()
    answered = threading.Semaphore(4)
    ran_out: list[int] = []

    def four_then_hold(path: str, body: dict[str, Any]) -> Reply:
        if not answered.acquire(blocking=False) and not released.wait(60):
            ran_out.append(1)
        return agreeing(path, body)

    with scripted_server(four_then_hold) as served:
        try:
            result = await run(served.base_url, think_vote("adaptive", 6, "parallel"))
            waited = bool(ran_out)
        finally:
            released.set()
    record = result.trace.nodes["answer"].allocation
    assert record["stopped_early"] and record["samples"] == 4, record
    assert not waited  # the requests it no longer needed were cancelled, not awaited
    assert 4 <= len(served.requests) <= 8 and result.answer == "4"
