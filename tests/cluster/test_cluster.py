"""The proxy on a real Redis Cluster (3 masters, 3 replicas) and behind a real Sentinel set:
every kind of write, exact and semantic hits, tenant isolation across slots, a second
replica kept current by the per-shard streams, admin listings and stats over every shard."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
from admin.admin_helpers import api, ask
from cluster.flows import chat_turns, exercise_writes
from conftest import make_settings

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.loadtest.redis_topologies import LocalCluster
from semcache.proxy.app import SEMANTIC, SERVICE, STORE, build_app

PARAPHRASES = ("How do I learn Python quickly?", "How can I learn Python fast?")


def check_flow(out: dict[str, Any]) -> None:
    assert out["first"] == "miss" and out["again"] == "hit-exact"
    assert out["other_tenant"] == "miss"  # never the other tenant's answer
    assert out["kept"] == "hit-exact"
    assert out["report"]["result"] in ("raised", "recorded")  # the observation was written
    assert out["after_delete"] == "miss"
    assert out["flushed"]["deleted"] == 1


async def test_every_write_and_hit_on_a_cluster(aiohttp_client: Any, cluster_url: str,
                                                upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings(cluster_url, upstream.base_url, tmp_path, cache__max_entries=3)
    proxy = await aiohttp_client(build_app(settings))
    store = proxy.app[STORE]
    assert store.cluster
    check_flow(await exercise_writes(proxy))
    assert await chat_turns(proxy) == ["miss", "hit-exact"]  # answer keys found again
    assert store.failures == 0  # not one command refused (a CROSSSLOT would be one)
    assert store.evicted >= 2  # the bound of 3 holds across the shards
    stats = await api(proxy, "GET", "stats")
    assert stats["redis_up"] is True and stats["inventory"]["redis_used_memory"] > 0
    assert stats["inventory"]["entries"] <= 3


async def test_tenants_spread_over_the_masters_and_listings_cover_every_shard(
        aiohttp_client: Any, cluster_url: str, redis_cluster: LocalCluster, upstream: FakeUpstream,
        tmp_path: Path) -> None:
    proxy = await aiohttp_client(build_app(make_settings(cluster_url, upstream.base_url, tmp_path)))
    tenants = [f"key-{i}" for i in range(24)]
    for key in tenants:
        await ask(proxy, "the same question", Authorization=f"Bearer {key}")
    for key in tenants:  # each tenant hits its own entry, wherever its slot is
        resp = await ask(proxy, "the same question", Authorization=f"Bearer {key}")
        assert resp.headers["X-Semcache"] == "hit-exact"
    per_master = []
    for port in redis_cluster.master_ports():
        client = redis.Redis(port=port)
        per_master.append(client.dbsize())
        client.close()
    assert sum(1 for n in per_master if n) >= 2, per_master  # not all on one master
    # a listing pages through every shard, each entry once, oldest first
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await api(proxy, "GET", "entries?limit=5" + (f"&cursor={cursor}" if cursor else ""))
        seen += page["entries"]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(tenants) and len({e["id"] for e in seen}) == len(tenants)
    assert [e["last_hit"] for e in seen] == sorted(e["last_hit"] for e in seen)
    stats = await api(proxy, "GET", "stats")
    assert stats["inventory"]["entries"] == len(tenants)
    assert (await api(proxy, "POST", "flush", {"api_key": "key-3"}))["deleted"] == 1
    assert proxy.app[STORE].failures == 0


async def test_semantic_hits_reach_a_second_replica_through_the_shard_streams(
        aiohttp_client: Any, cluster_url: str, upstream: FakeUpstream, model_dir: Path) -> None:
    settings = make_settings(cluster_url, upstream.base_url, model_dir, cache__semantic=True)
    first = await aiohttp_client(build_app(settings))
    second = await aiohttp_client(build_app(settings))
    for proxy in (first, second):
        await asyncio.wait_for(proxy.app[SEMANTIC].ready.wait(), 60)
    for i, key in enumerate(("key-a", "key-b", "key-c")):
        headers = {"Authorization": f"Bearer {key}"}
        assert (await ask(first, PARAPHRASES[0], **headers)).headers["X-Semcache"] == "miss"
        for _ in range(200):  # the second replica's tail applies the add event
            if len(second.app[SEMANTIC].index) > i:
                break
            await asyncio.sleep(0.01)
        resp = await ask(second, PARAPHRASES[1], **headers)
        assert resp.headers["X-Semcache"] == "hit-semantic", resp.headers.get("X-Semcache-Reason")
    await first.app[SERVICE].drain(5)
    assert first.app[STORE].failures == 0 and second.app[STORE].failures == 0


async def test_every_write_and_hit_behind_sentinel(aiohttp_client: Any, sentinel_url: str,
                                                   upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings(sentinel_url, upstream.base_url, tmp_path, cache__max_entries=3)
    proxy = await aiohttp_client(build_app(settings))
    check_flow(await exercise_writes(proxy))
    assert await chat_turns(proxy) == ["miss", "hit-exact"]
    assert proxy.app[STORE].failures == 0 and not proxy.app[STORE].cluster
    assert (await api(proxy, "GET", "stats"))["redis_up"] is True


@pytest.mark.parametrize("scheme", ["redis+cluster", "cluster-setting"])
async def test_a_cluster_named_either_way(aiohttp_client: Any, cluster_url: str, scheme: str,
                                          upstream: FakeUpstream, tmp_path: Path) -> None:
    one_node = cluster_url.removeprefix("redis+cluster://").split(",")[0]
    if scheme == "redis+cluster":
        settings = make_settings(f"redis+cluster://{one_node}", upstream.base_url, tmp_path)
    else:
        settings = make_settings(f"redis://{one_node}", upstream.base_url, tmp_path,
                                 redis__cluster=True)
    proxy = await aiohttp_client(build_app(settings))
    for key in ("key-a", "key-b", "key-c", "key-d"):  # some slots are on other masters
        await ask(proxy, "q", Authorization=f"Bearer {key}")
        assert (await ask(proxy, "q", Authorization=f"Bearer {key}")).headers["X-Semcache"] == "hit-exact"
    assert proxy.app[STORE].cluster and proxy.app[STORE].failures == 0
