"""How late the event loop is running, and deadlines that count only the time it was not.

A Redis reply that has arrived but waits in a busy loop's queue is not Redis being slow.
With a plain timeout (redis-py's socket timeout is measured on the loop's clock) a loop kept
busy by its own load, at 64 concurrent exact hits on two cores say, timed out replies that
were in time, and those hits went to the paid upstream as bypasses. `LoopLag` ticks every
`TICK_S` and adds up how late each tick ran; `deadline(budget_s)` expires only once the
budget has passed with the lateness since it started taken off, so it measures the time the
loop was free to read the reply: Redis's time, not the queue's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

TICK_S = 0.01
"""How often lateness is sampled: 100 callbacks a second, a few microseconds each."""


class LoopLag:
    def __init__(self, tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self._late = 0.0
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.tick_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._late += max(0.0, now - self._due)
        self._due = now + self.tick_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def late_s(self) -> float:
        """Seconds the loop has run late since start, the tick overdue right now included
        (so a deadline checked in the same turn as a stall already sees it)."""
        if self._loop is None:
            return 0.0
        return self._late + max(0.0, self._loop.time() - self._due)

    @contextlib.asynccontextmanager
    async def deadline(self, budget_s: float) -> AsyncIterator[None]:
        """Like `asyncio.timeout(budget_s)` (TimeoutError past it), but the loop's lateness
        while it runs does not count against the budget."""
        loop = asyncio.get_running_loop()
        started, late_before = loop.time(), self.late_s()
        async with asyncio.timeout(None) as timeout:
            handles: list[asyncio.TimerHandle] = []

            def check() -> None:
                used = loop.time() - started - (self.late_s() - late_before)
                if used >= budget_s:
                    timeout.reschedule(loop.time())
                else:
                    handles[0] = loop.call_later(budget_s - used, check)

            handles.append(loop.call_later(budget_s, check))
            try:
                yield
            finally:
                handles[0].cancel()
