"""The store's Redis deadline counts Redis's time, not the event loop's: a reply that came
in time but waited behind a stalled loop is no timeout (a plain timeout calls it one)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import redis.asyncio as aioredis

from semcache.index.store import Store, StoreError
from semcache.proxy.looplag import LoopLag

POSITIONS = 8
"""Turns of the loop between sending a command and the stall: some of them find the command
on the wire, its reply arriving during the stall."""


async def timeouts_through_stalls(store: Store) -> int:
    failed = 0
    for turns in range(POSITIONS):
        call = asyncio.create_task(store.get("some-entry"))
        for _ in range(turns):
            await asyncio.sleep(0)
        time.sleep(0.25)  # noqa: ASYNC251 (the loop stalls; Redis answers meanwhile)
        try:
            await call
        except StoreError:
            failed += 1
        store._down_until = 0.0  # let the next call reach Redis (not the point here)
    return failed


def plain(budget_s: float) -> Callable[[], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def deadline() -> AsyncIterator[None]:
        async with asyncio.timeout(budget_s):
            yield
    return deadline


async def test_replies_that_waited_behind_a_stall_are_not_timeouts(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)
    lag = LoopLag()
    lag.start()
    try:
        assert await timeouts_through_stalls(Store(client, deadline=plain(0.15))) > 0
        assert await timeouts_through_stalls(
            Store(client, deadline=lambda: lag.deadline(0.15))) == 0
    finally:
        lag.stop()
        await client.aclose()
