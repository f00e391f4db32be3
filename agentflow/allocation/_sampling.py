"""Drawing the samples of one node under an early-stopping vote, and cancelling the rest.

Two ways to draw, both in waves of `Budget.window`: `parallel` sends each sample as its own
request (at most a window in flight) and judges the vote after every arrival, so the moment it
settles the requests still out are cancelled (vLLM aborts a request whose client goes away);
`n` sends one request per wave with `n=window`, whose samples share one prefill, and judges
after each wave. A server that refuses `n` falls back to `parallel`, noted in the outcome.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from agentflow.allocation._budget import Budget
from agentflow.allocation._vote import VoteRule, answer_key
from agentflow.answers import stated_answer
from agentflow.exceptions import ModelHTTPError
from agentflow.model import Choice, ModelResponse, Usage
from agentflow.slots import lend_slot

__all__ = ["Send", "VoteOutcome", "draw_and_vote"]

Send = Callable[[int, int], Coroutine[Any, Any, ModelResponse]]
"""`send(index, n)`: the node's request as its `index`-th draw, `n` samples in one request."""


@dataclass(frozen=True, kw_only=True)
class VoteOutcome:
    response: ModelResponse
    """The winning sample as the only choice; usage is every sample's."""
    drawn: int
    stopped_early: bool
    counts: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(kw_only=True)
class _Tally:
    rule: VoteRule
    choices: list[Choice] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    settled: bool = False
    model: str = ""

    def add(self, response: ModelResponse) -> None:
        self.usage = self.usage + response.usage
        self.model = response.model
        for choice in response.choices:
            self.choices.append(choice)
            self.keys.append(_vote_key(choice))
            self.settled = self.settled or self.rule.settled(self.keys)


def _vote_key(choice: Choice) -> str | None:
    """The sample's vote; none (it abstains) when it was cut off before it stated an answer:
    its last line is where it stopped, not what it concluded."""
    if choice.finish_reason == "length" and stated_answer(choice.text) is None:
        return None
    return answer_key(choice.text)


async def draw_and_vote(send: Send, budget: Budget, rule: VoteRule) -> VoteOutcome:
    """Up to `budget.samples` samples, stopping as soon as `rule` says the vote is settled."""
    tally = _Tally(rule=rule)
    notes: list[str] = []
    if budget.draw == "n":
        try:
            await _in_requests_of_n(send, budget, tally)
        except ModelHTTPError as exc:
            if exc.status_code != 400 or tally.choices:
                raise
            notes.append(f"server refused n={budget.window} (HTTP 400): one request per sample")
            await _in_parallel(send, budget, tally)
    else:
        await _in_parallel(send, budget, tally)
    return _outcome(tally, budget, notes)


async def _in_requests_of_n(send: Send, budget: Budget, tally: _Tally) -> None:
    while len(tally.choices) < budget.samples and not tally.settled:
        n = min(budget.window, budget.samples - len(tally.choices))
        tally.add(await send(len(tally.choices), n))


async def _in_parallel(send: Send, budget: Budget, tally: _Tally) -> None:
    """One request per sample, `budget.window` in flight, each in an executor slot of its own
    (the node lends its slot meanwhile: `agentflow.slots`)."""
    async with lend_slot() as slot:
        await _draw_in_parallel(send, budget, tally, slot)


async def _draw_in_parallel(
    send: Send, budget: Budget, tally: _Tally, slot: AbstractAsyncContextManager[None]
) -> None:
    async def sample(index: int) -> ModelResponse:
        async with slot:
            return await send(index, 1)

    pending: set[asyncio.Task[ModelResponse]] = set()
    launched = 0
    try:
        while not tally.settled:
            while launched < budget.samples and len(pending) < budget.window:
                pending.add(asyncio.create_task(sample(launched)))
                launched += 1
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:  # every arrival is paid for: all of them vote
                tally.add(task.result())
    finally:
        for task in pending:  # the vote settled (or failed): nothing more is wanted
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _outcome(tally: _Tally, budget: Budget, notes: list[str]) -> VoteOutcome:
    counts = Counter(k for k in tally.keys if k is not None)
    if counts:
        leader = counts.most_common(1)[0][0]
        winner = tally.choices[tally.keys.index(leader)]
    else:
        winner = tally.choices[0]
        notes.append(f"none of {len(tally.choices)} samples had a parseable answer: kept the first")
    response = ModelResponse(choices=(winner,), usage=tally.usage, model=tally.model)
    drawn = len(tally.choices)
    return VoteOutcome(
        response=response,
        drawn=drawn,
        stopped_early=tally.settled and drawn < budget.samples,
        counts=dict(counts),
        notes=tuple(notes),
    )
