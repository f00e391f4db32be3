"""The executor's slot of a running node, and how the node lends it to requests it forks.

The executor runs each node inside one slot of its global semaphore (`--max-concurrency`). A
node that forks requests of its own (the `threads` strategy) must not add them on top of that
cap, and must not wait for more slots while it holds its own: two such nodes, each holding a
slot and waiting for a second, would wait for each other forever. So the node lends its slot
back while the fork runs, every forked request takes a slot of its own, and the node takes a
slot again before it goes on. No task ever holds a slot while it waits for another.

The executor sets `current_slot` for the task that runs a node (asyncio copies it into what that
task awaits); code run outside an executor sees None and forks without a cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar

__all__ = ["NodeSlot", "current_slot", "lend_slot"]


class NodeSlot:
    """One slot of `semaphore`, held by a running node (`async with`), lendable (`lent`)."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = False
        self._lenders = 0

    async def __aenter__(self) -> NodeSlot:
        await self._semaphore.acquire()
        self._held = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()

    @asynccontextmanager
    async def lent(self) -> AsyncIterator[asyncio.Semaphore]:
        """The slot given back for the block, which gets the semaphore its forked requests
        each take a slot of. The slot is taken again when the block ends, also on an error
        (the node goes on: its failure is recorded, or it is retried), but not when the node
        is cancelled: it ends without waiting for a slot it would only give back. Forks of one
        node may overlap: the first gives the slot back, the last takes it again."""
        self._lenders += 1
        if self._held:
            self._held = False
            self._semaphore.release()
        try:
            yield self._semaphore
        except Exception:
            await self._end_lending()
            raise
        except BaseException:
            self._lenders -= 1
            raise
        else:
            await self._end_lending()

    async def _end_lending(self) -> None:
        self._lenders -= 1
        if self._lenders == 0 and not self._held:
            await self._semaphore.acquire()
            self._held = True


current_slot: ContextVar[NodeSlot | None] = ContextVar("agentflow_node_slot", default=None)
"""The slot of the node the current task runs, if an executor runs it."""


class _ForkedRequest:
    """What each forked request enters (`async with`) in its own task: a slot of its own (none
    outside an executor), and no node slot to lend in turn (it does not hold that one)."""

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self._semaphore = semaphore

    async def __aenter__(self) -> None:
        if self._semaphore is not None:
            await self._semaphore.acquire()
        current_slot.set(None)  # this task's own context: the node's is untouched

    async def __aexit__(self, *exc_info: object) -> None:
        if self._semaphore is not None:
            self._semaphore.release()


@asynccontextmanager
async def lend_slot() -> AsyncIterator[AbstractAsyncContextManager[None]]:
    """For a fork: the current node's slot lent for the block, which gets what each forked
    request enters (`async with`, in its own task) to take a slot of its own; no cap outside
    an executor."""
    slot = current_slot.get()
    if slot is None:
        yield _ForkedRequest(None)
        return
    async with slot.lent() as semaphore:
        yield _ForkedRequest(semaphore)
