"""The semantic tier's stop() is bounded whatever Redis and the index are doing: a tail whose
cancellation is lost, a Redis that stops answering, a rebuild or a graph build in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from semcache.index import sync as sync_module
from semcache.index.keys import Keys
from semcache.index.store import Store
from semcache.index.sync import TAIL_BLOCK_MS, IndexSync
from semcache.index.vectors import IndexSettings, VectorIndex
from semcache.proxy.semantic import STOP_WAIT_S, SemanticTier

DIM = 384


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)
    tail = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)
    yield client, tail
    await tail.aclose()
    await client.aclose()


def tier_for(client: aioredis.Redis, tail: aioredis.Redis,
             settings: IndexSettings | None = None) -> SemanticTier:
    index = VectorIndex(DIM, settings or IndexSettings(device="cpu"))
    sync = IndexSync(Store(client), index, tail)
    return SemanticTier(None, index, sync, offload_min_entries=4096)  # type: ignore[arg-type]


async def timed_stop(tier: SemanticTier) -> float:
    started = time.monotonic()
    async with asyncio.timeout(STOP_WAIT_S + 5):  # a hang fails the test instead of the run
        await tier.stop()
    return time.monotonic() - started


async def test_the_tail_ends_on_its_flag_when_the_cancel_is_lost(
        clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    """What hung SIGTERM: a cancel that reaches XREAD as a timeout error and is then retried."""
    client, tail = clients
    real_xread = tail.xread

    async def xread_losing_cancels(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real_xread(*args, **kwargs)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            raise RedisTimeoutError("Timeout reading from socket") from None

    tail.xread = xread_losing_cancels  # type: ignore[method-assign]
    tier = tier_for(client, tail)
    await tier.start()
    await asyncio.sleep(0.3)  # the tail is inside XREAD BLOCK now
    elapsed = await timed_stop(tier)
    assert elapsed < TAIL_BLOCK_MS / 1000 + 0.5, elapsed
    assert all(task.done() for task in tier._tasks)


@pytest.mark.slow  # waits out a 5 s pause of the shared Redis
async def test_stop_is_bounded_while_redis_does_not_answer(
        clients: tuple[aioredis.Redis, aioredis.Redis], redis_url: str) -> None:
    client, tail = clients
    tier = tier_for(client, tail)
    await tier.start()
    admin = aioredis.Redis.from_url(redis_url)
    pause_s = STOP_WAIT_S + 3.0  # outlasts a bounded stop; it ends on its own (an UNPAUSE
    try:  # would wait behind it)
        await admin.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "ALL")
        paused_at = time.monotonic()
        await asyncio.sleep(1.2)  # the tail's next XREAD now waits on a paused server
        elapsed = await timed_stop(tier)
        assert time.monotonic() - paused_at < pause_s  # it ended while Redis was still mute
        await asyncio.sleep(max(0.0, pause_s - (time.monotonic() - paused_at)) + 0.2)
    finally:
        await admin.aclose()
    assert elapsed < STOP_WAIT_S + 1.5, elapsed
    assert all(task.done() for task in tier._tasks)


async def test_cancelling_a_rebuild_stops_the_tier(
        clients: tuple[aioredis.Redis, aioredis.Redis], monkeypatch: pytest.MonkeyPatch) -> None:
    client, tail = clients
    monkeypatch.setattr(sync_module, "SCAN_BATCH", 50)  # many round trips: time to cancel
    rng = np.random.default_rng(20)
    vectors = rng.standard_normal((5000, DIM)).astype(np.float32)
    pipe = client.pipeline(transaction=False)
    for i, vector in enumerate(vectors):
        pipe.hset(Keys().entry(f"{i:08x}"), mapping={"scope": "s", "embedding": vector.tobytes()})
    await pipe.execute()
    tier = tier_for(client, tail, IndexSettings(device="cpu", hnsw_min_entries=1000))
    starting = asyncio.create_task(tier.start())
    await asyncio.sleep(0.1)
    assert not starting.done()
    started = time.monotonic()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert time.monotonic() - started < 1.0
    assert tier.index.builder.stopping and not tier._tasks


async def test_stop_waits_for_one_chunk_of_a_graph_build_only(
        clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    client, tail = clients
    tier = tier_for(client, tail, IndexSettings(device="cpu", hnsw_min_entries=20_000))
    await tier.start()
    rng = np.random.default_rng(21)
    tier.index.load("s", [f"e{i}" for i in range(30_000)], rng.standard_normal(
        (30_000, DIM)).astype(np.float32))
    await asyncio.sleep(0.5)
    assert tier.index._scopes["s"].building
    elapsed = await timed_stop(tier)
    assert elapsed < 1.5, elapsed  # the build is dropped at its next chunk...
    assert not tier.index.builder.busy  # ...which stop() waited for: no FAISS call at exit
    assert tier.index._scopes["s"].kind == "flat"
    thread = tier.index.builder._thread
    assert thread is not None and thread.daemon
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()
