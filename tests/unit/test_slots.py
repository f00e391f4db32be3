"""A node's executor slot: lent while it forks, taken back after, never leaked on cancel."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agentflow.allocation._estimators import _one_by_one
from agentflow.model import Choice, ModelResponse, ModelSettings, Usage
from agentflow.slots import NodeSlot, current_slot, lend_slot

from .inflight import InFlight


async def test_a_lent_slot_is_free_during_the_block_and_held_again_after() -> None:
    semaphore = asyncio.Semaphore(1)
    async with NodeSlot(semaphore) as slot:
        assert semaphore.locked()
        async with slot.lent() as lent:
            assert lent is semaphore and not semaphore.locked()
        assert semaphore.locked()
    assert not semaphore.locked()


async def test_a_fork_that_fails_gives_the_node_its_slot_back() -> None:
    semaphore = asyncio.Semaphore(1)
    async with NodeSlot(semaphore) as slot:
        with pytest.raises(ValueError):
            async with slot.lent():
                raise ValueError("a thread failed")
        assert semaphore.locked()  # the node, which goes on (retried or failed), holds it
    assert not semaphore.locked()


async def test_a_node_cancelled_while_lending_leaks_no_slot() -> None:
    semaphore = asyncio.Semaphore(2)
    forking = asyncio.Event()

    async def node() -> None:
        async with NodeSlot(semaphore) as slot, slot.lent() as lent, lent:
            forking.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(node())
    await asyncio.wait_for(forking.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert semaphore._value == 2  # every permit came back


async def test_a_node_cancelled_while_it_waits_to_take_its_slot_back_leaks_none() -> None:
    semaphore = asyncio.Semaphore(1)
    lent_out, taken = asyncio.Event(), asyncio.Event()

    async def node() -> None:
        async with NodeSlot(semaphore) as slot:
            async with slot.lent():
                lent_out.set()
                await taken.wait()
            raise AssertionError("took the slot back while another held it")

    async with contextlib.AsyncExitStack() as stack:
        task = asyncio.create_task(node())
        await asyncio.wait_for(lent_out.wait(), timeout=5)
        await stack.enter_async_context(semaphore)  # someone else takes the free slot
        taken.set()
        for _ in range(3):  # the node leaves its block and waits for the slot
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert semaphore._value == 1


async def test_outside_an_executor_a_fork_has_no_cap() -> None:
    assert current_slot.get() is None
    async with lend_slot() as slot:
        async with slot, slot, slot:  # entered by every forked request: never waits
            pass


async def test_overlapping_forks_of_one_node_give_the_slot_back_once_and_take_it_once() -> None:
    semaphore = asyncio.Semaphore(2)
    both_lending = asyncio.Barrier(2)

    async def fork(slot: NodeSlot) -> None:
        async with slot.lent():
            await asyncio.wait_for(both_lending.wait(), timeout=5)
            assert semaphore._value == 2  # both lend the node's one slot: given back once

    async with NodeSlot(semaphore) as slot:
        await asyncio.gather(fork(slot), fork(slot))
        assert semaphore._value == 1  # taken back once, by the last
    assert semaphore._value == 2


async def test_a_forked_request_has_no_node_slot_to_lend_again() -> None:
    seen: list[object] = []

    async def request(enter: contextlib.AbstractAsyncContextManager[None]) -> None:
        async with enter:
            seen.append(current_slot.get())

    async with NodeSlot(asyncio.Semaphore(2)) as slot:
        current_slot.set(slot)
        async with lend_slot() as enter:
            await asyncio.gather(request(enter), request(enter))
        assert current_slot.get() is slot  # the node's own context is untouched
    assert seen == [None, None]


async def test_agreement_samples_of_a_node_stay_within_the_executor_slots() -> None:
    inflight = InFlight()

    async def fast(settings: ModelSettings) -> ModelResponse:
        await inflight.hold()
        return ModelResponse(choices=(Choice(text="Answer: 1"),), usage=Usage(), model="m")

    async with NodeSlot(asyncio.Semaphore(2)) as slot:
        current_slot.set(slot)
        merged = await asyncio.wait_for(_one_by_one(fast, ModelSettings(), 3), 5)
    assert len(merged.choices) == 3 and inflight.peak == 2
