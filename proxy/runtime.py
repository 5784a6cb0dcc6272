"""Settings an operator changes while the proxy runs, shared by every replica through Redis.

Today that is the semantic threshold. The value lives in the hash `Keys.runtime` (index/keys.py); each
replica keeps a copy in memory (read on the request path without any I/O) and re-reads the
hash every `refresh_s`, so a change made through any replica's admin API reaches all of them
within that period, and survives restarts. While Redis is unreachable the last known value
stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import cast

import redis.asyncio as aioredis

from semcache.index.connect import is_redis_failure
from semcache.index.keys import Keys

from .errors import ProxyError

log = logging.getLogger(__name__)

REFRESH_S = 2.0
"""How often each replica re-reads the shared values: the longest a change takes to spread."""


class RuntimeStateError(ProxyError):
    """Base of this module's errors (a bad value from an operator)."""


class InvalidThresholdError(RuntimeStateError):
    """A threshold outside [0, 1] or not a number."""


def check_threshold(value: object) -> float | None:
    """A threshold from an operator: a number in [0, 1], or None to return to the config."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidThresholdError("threshold must be a number between 0 and 1, or null")
    threshold = float(value)
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise InvalidThresholdError(f"threshold must be between 0 and 1, got {threshold!r}")
    return threshold


class RuntimeState:
    """The run-time values, as this replica last saw them in Redis."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, refresh_s: float = REFRESH_S) -> None:
        self.client = client
        self.key = Keys(prefix).runtime
        self.refresh_s = refresh_s
        self.threshold: float | None = None
        """Semantic threshold set at run time; None: use the configured one."""
        self.updated_at: float = 0.0
        """Unix time of the last change, as recorded in Redis (0: never changed)."""
        self._loop: Periodic | None = None

    async def refresh(self) -> None:
        """Read the shared values; keeps the current ones if Redis fails or holds garbage."""
        raw = cast(dict[bytes, bytes], await self.client.hgetall(self.key))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            self.threshold = check_threshold(float(fields["threshold"])) if "threshold" in fields else None
            self.updated_at = float(fields.get("updated_at", "0"))
        except (ValueError, InvalidThresholdError):
            log.warning("ignoring an invalid run-time threshold in %s: %r", self.key, fields)

    async def set_threshold(self, value: float | None, now: float) -> None:
        """Store a new threshold (None clears it) for every replica, and use it here at once."""
        threshold = check_threshold(value)
        pipe = self.client.pipeline(transaction=True)
        if threshold is None:
            pipe.hdel(self.key, "threshold")
        else:
            pipe.hset(self.key, "threshold", repr(threshold))
        pipe.hset(self.key, "updated_at", repr(now))
        await pipe.execute()
        self.threshold, self.updated_at = threshold, now

    def to_json(self) -> dict[str, float | None]:
        return {"threshold": self.threshold, "updated_at": self.updated_at or None}

    # the refresh loop -------------------------------------------------------------------

    def start(self) -> None:
        self._loop = Periodic(self.refresh_s, self.refresh)
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None


class Periodic:
    """Runs `work` every `period_s` in a task until `stop()`; Redis failures only skip a turn.

    Stopping sets an event as well as cancelling: a cancellation that lands while redis-py
    waits under its socket timeout can come out as a TimeoutError (an OSError), which the
    loop's error handling would swallow, leaving the task alive and `stop()` waiting forever.
    """

    def __init__(self, period_s: float, work: Callable[[], Awaitable[object]]) -> None:
        self.period_s = period_s
        self.work = work
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.work()
            except Exception as e:
                if not is_redis_failure(e):
                    raise
                # the cache's own probe reports the outage; try again next period
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the wait in a new
            # task each period, and a task that comes and goes looks like a leak to anyone
            # counting them (the reliability tests do)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period_s):
                    await self._stop.wait()
