"""Byte bounds: what one entry may store (the prompt counts as much as the answer) and what
the cache stores as a whole (`cache.max_bytes`, least recently used evicted first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from conftest import make_settings

from semcache.index.keys import SHARDS, Keys
from semcache.index.store import Entry, Store
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE, build_app

CHAT = "/v1/chat/completions"


def entry(i: int, answer_bytes: int = 1000) -> Entry:
    """Entry i, in shard i (index/keys.py): the bounds hold over all shards together."""
    return Entry(id=eid(i), scope="s", tenant="t", namespace="", endpoint="chat", model="m",
                 query=f"question {i}", response=b"x" * answer_bytes, created=1e9 + i,
                 ttl_s=3600)


def eid(i: int) -> str:
    return f"{i % SHARDS:x}e{i:03d}"


async def stored_ids(client: aioredis.Redis) -> set[str]:
    keys = Keys()
    return {keys.entry_id_of(k) for k in await client.keys(keys.all_entries_pattern)}


async def total_bytes(store: Store) -> int:
    return sum([int(await store.client.get(store.keys.bytes(s)) or 0) for s in range(SHARDS)])


async def events(store: Store) -> list[bytes]:
    return [f[b"op"] for s in range(SHARDS) for _, f in await store.client.xrange(store.keys.stream(s))]


async def test_bytes_are_counted_and_the_least_recently_used_evicted(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    size = entry(0).size_bytes()
    store = Store(client, max_bytes=5 * size + size // 2)
    try:
        for i in range(5):
            await store.put(entry(i))
        assert await total_bytes(store) == 5 * size
        await store.put(entry(2))  # replacing an entry does not count it twice
        assert await total_bytes(store) == 5 * size
        await store.record_hits({eid(0): (1, 1e9 + 100)})  # e000 is used again
        await store.put(entry(5))  # over the bound: the least recently used (e001) goes
        assert await stored_ids(client) == {eid(i) for i in (0, 2, 3, 4, 5)}
        assert await total_bytes(store) == 5 * size
        await store.put(entry(6, answer_bytes=3 * size))  # a big one evicts several
        assert await stored_ids(client) == {eid(i) for i in (0, 5, 6)}, await stored_ids(client)
        assert store.evicted == 4
        assert await store.delete(eid(6))
        assert await total_bytes(store) == 2 * size
        assert sum([await client.hlen(store.keys.sizes(s)) for s in range(SHARDS)]) == 2
        assert (await events(store)).count(b"del") == 5  # every eviction announced to the replicas
    finally:
        await client.aclose()


async def test_entry_and_byte_bounds_together(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = Store(client, max_entries=3, max_bytes=10**9)
    try:
        for i in range(6):
            await store.put(entry(i))
        assert await stored_ids(client) == {eid(i) for i in (3, 4, 5)}
        assert await total_bytes(store) == 3 * entry(0).size_bytes()
    finally:
        await client.aclose()


async def test_a_huge_prompt_is_served_but_not_stored(aiohttp_client: Any, redis_url: str,
                                                      upstream: FakeUpstream, tmp_path: Path) -> None:
    """The answer is small, the prompt is not: the entry would be, so it is not stored."""
    proxy = await aiohttp_client(build_app(make_settings(redis_url, upstream.base_url, tmp_path,
                                                         cache__max_entry_bytes=100_000)))
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "y" * 200_000}]}
    upstream.words_per_answer = 0
    for _ in range(2):
        resp = await proxy.post(CHAT, json=body)
        assert resp.status == 200 and resp.headers["X-Semcache"] == "miss"
        await resp.read()
        await proxy.app[SERVICE].drain(5)
    assert len(upstream.calls) == 2
    small = {"model": "fake-model", "messages": [{"role": "user", "content": "y" * 1000}]}
    for outcome in ("miss", "hit-exact"):
        resp = await proxy.post(CHAT, json=small)
        assert resp.headers["X-Semcache"] == outcome
        await resp.read()
        await proxy.app[SERVICE].drain(5)
    metrics = (await (await proxy.get("/metrics")).read()).decode()
    assert 'semcache_writes_total{result="too-large"} 2.0' in metrics
