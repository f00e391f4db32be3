"""Counting the calls a fake has in flight at once, for tests of concurrency caps."""

from __future__ import annotations

import asyncio


class InFlight:
    """`await inflight.hold()` inside a fake call: counts it while it runs, and yields a few
    times first, so every call that may start does so before this one ends. A cap on the
    calls, not their timing, then decides `peak`."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def hold(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        for _ in range(3):
            await asyncio.sleep(0)
        self.running -= 1
