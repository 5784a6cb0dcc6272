"""Admission: a bound on the requests in the cache's own stages at once.

The event loop does every request's parsing, lookup and replay; past some number in flight
each one only waits longer in the loop's queue, for everyone. Requests beyond
`server.max_in_flight` wait for a place up to `server.max_wait_s`, then get 503 with
`Retry-After` (which OpenAI's clients honour), instead of piling onto the loop. A place is
held from parsing to the end of a hit's replay; a miss gives it back before it waits on the
upstream, which costs the loop nothing (a slow upstream must not turn into 503s), and the
body is read before, so a client that uploads slowly holds no place either.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

from ..errors import SaturatedError
from ..metrics import Metrics


class Admission:
    def __init__(self, max_in_flight: int, max_wait_s: float, metrics: Metrics) -> None:
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self._places = asyncio.Semaphore(max_in_flight)
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold one place while the block runs; SaturatedError when none came in time."""
        if self._places.locked():
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._places.acquire()
            except TimeoutError:
                self.metrics.saturated.inc()
                raise SaturatedError(
                    f"the proxy is saturated ({self.max_in_flight} requests in flight); "
                    "retry shortly", code="saturated",
                    headers={"Retry-After": str(max(1, math.ceil(self.max_wait_s)))},
                ) from None
        else:
            await self._places.acquire()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._places.release()
