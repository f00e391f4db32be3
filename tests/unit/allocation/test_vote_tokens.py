"""What a vote costs: samples cancelled when the vote settled were partly decoded, and what the
client received of them is counted (an estimate, and said to be one in the node's record).

Adaptive-Consistency settles at the 4th agreeing answer. The server streams four whole answers
of 6 tokens, and for the other two of the window sends 5 tokens and then holds: the client
cancels those two. Before, the node was charged 24 completion tokens, as if they cost nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

from agentflow import Agent
from agentflow.allocation import Allocator, Budget, Constant
from agentflow.models import OpenAIModel
from tests.unit.scripted_server import Reply, reply_sse, scripted_server, sse_pieces

WORDS = ["The", " answer", " is", " 4.", "\nAnswer:", " 4"]
"""A whole sample: six pieces, a token each."""
HELD_PIECES = 5


def test_cancelled_samples_are_charged_what_they_decoded() -> None:
    released, held_sent = threading.Event(), threading.Semaphore(0)
    lock, arrived = threading.Lock(), [0]

    def whole() -> Iterator[bytes]:
        for _ in range(2):  # the held two have sent their pieces
            held_sent.acquire(timeout=10)
            held_sent.release()
        time.sleep(0.2)  # and the client has read them
        yield from sse_pieces(WORDS)

    def held() -> Iterator[bytes]:
        pieces = sse_pieces(WORDS * 3)
        yield from pieces[: 1 + HELD_PIECES]  # the role, then five tokens
        held_sent.release()
        released.wait(30)

    def answer(path: str, body: dict[str, Any]) -> Reply:
        assert body.get("stream")
        with lock:
            arrived[0] += 1
            index = arrived[0]
        return reply_sse(whole() if index <= 4 else held())

    think = Budget(
        mode="think", max_tokens=50, temperature=0.6, samples=6, vote="adaptive", window=6
    )
    allocator = Allocator(estimator=Constant("uniform-think", 1.0), think=think)

    async def run() -> Any:
        model = OpenAIModel("m", served.base_url)
        try:
            return await Agent(model=model, planner="direct", allocation=allocator).run("2+2?")
        finally:
            await model.aclose()

    with scripted_server(answer) as served:
        try:
            result = asyncio.run(run())
        finally:
            released.set()
    node = result.trace.nodes["answer"]
    record = node.allocation
    assert record["samples"] == 4 and record["stopped_early"] and result.answer == "4"
    estimated = record["estimated_tokens"]
    assert (estimated["samples"], estimated["completion_tokens"]) == (2, 2 * HELD_PIECES)
    assert estimated["prompt_tokens"] == 2 * 10  # a finished sample's prompt, twice
    assert record["tokens"]["think"] == 4 * len(WORDS) + 2 * HELD_PIECES
    assert node.usage.completion_tokens == 4 * len(WORDS) + 2 * HELD_PIECES
    assert node.usage.calls == 6
