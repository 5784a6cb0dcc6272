"""The start-up rebuild from a real Redis: vectors load in bulk, one graph build per large
scope once the store is read (on the builder's thread), progress in the log; the tail then
applies what came after."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from semcache.index import sync as sync_module
from semcache.index.keys import Keys
from semcache.index.store import Store
from semcache.index.sync import IndexSync
from semcache.index.vectors import IndexSettings, VectorIndex

DIM = 384


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def write_entries(client: aioredis.Redis, scope: str, vectors: np.ndarray, first: int) -> None:
    """Entry hashes with the two fields a rebuild reads (the rest is the store's business)."""
    pipe = client.pipeline(transaction=False)
    for i, vector in enumerate(vectors, first):
        pipe.hset(Keys().entry(f"{i:08x}"), mapping={"scope": scope, "embedding": vector.tobytes()})
    await pipe.execute()


async def test_rebuild_loads_in_bulk_and_builds_each_large_scope_once(
        client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sync_module, "SCAN_BATCH", 200)
    monkeypatch.setattr(sync_module, "PROGRESS_EVERY_S", 0.0)
    rng = np.random.default_rng(30)
    big = rng.standard_normal((2500, DIM)).astype(np.float32)
    small = rng.standard_normal((40, DIM)).astype(np.float32)
    await write_entries(client, "big", big, 0)
    await write_entries(client, "small", small, 10_000)
    await client.hset(Keys().entry("broken"), mapping={"scope": "small", "embedding": b"short"})
    index = VectorIndex(DIM, IndexSettings(device="cpu", hnsw_min_entries=1000))
    loads: list[tuple[str, int]] = []
    real_load = index.load

    def counting_load(scope: str, ids: list[str], vectors: np.ndarray) -> None:
        loads.append((scope, len(ids)))
        real_load(scope, ids, vectors)

    monkeypatch.setattr(index, "load", counting_load)
    sync = IndexSync(Store(client), index, client)
    with caplog.at_level(logging.INFO, logger="semcache.index.sync"):
        assert await sync.rebuild() == 2540
    assert sync.ready.is_set()
    assert "rebuilding the vector index" in caplog.text and "2540 entries" in caplog.text
    # One array per scope and batch, never one call per entry.
    assert len(loads) <= 2 * (2541 // 200 + 2) and sum(n for _, n in loads) == 2540
    assert index.scope_size("big") == 2500 and index.scope_size("small") == 40
    assert await asyncio.to_thread(index.wait_for_builds, 60)
    assert index._scopes["big"].kind == "hnsw" and index._scopes["small"].kind == "flat"
    assert index._scopes["big"].builds == 1  # not one per threshold crossed while loading
    assert index.search("big", big[1234], 1)[0][0] == f"{1234:08x}"
    assert index.search("small", small[7], 1)[0][0] == f"{10_007:08x}"
    index.close()


async def test_events_after_the_rebuild_reach_the_index(client: aioredis.Redis) -> None:
    rng = np.random.default_rng(31)
    vectors = rng.standard_normal((3, DIM)).astype(np.float32)
    await write_entries(client, "s", vectors[:2], 0)
    store = Store(client)
    index = VectorIndex(DIM, IndexSettings(device="cpu"))
    sync = IndexSync(store, index, client)
    await sync.rebuild()
    await write_entries(client, "s", vectors[2:], 2)
    # on the streams of two different shards
    await client.xadd(store.keys.stream(0), {"op": "add", "id": f"{2:08x}", "scope": "s"})
    await client.xadd(store.keys.stream(5), {"op": "del", "id": f"{0:08x}", "scope": "s"})
    tail = asyncio.create_task(sync.tail())
    try:
        for _ in range(500):  # polls the counter the tail bumps (no event to wait on)
            if sync.events_applied >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        sync.stop()
        await asyncio.wait_for(tail, 3)
    assert set(index.ids()) == {f"{1:08x}", f"{2:08x}"}
    index.close()
