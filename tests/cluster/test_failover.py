"""A master killed (SIGKILL) while a client sends requests through the proxy: on a Redis
Cluster a replica is promoted, behind Sentinel the sentinels promote one. No client request
may fail (the cache fails open: bypasses are allowed), and hits come back afterwards, for
every entry written before the kill."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from conftest import make_settings

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.loadtest.redis_topologies import LocalCluster, LocalSentinel
from semcache.proxy.app import SERVICE, STORE, build_app

CHAT = "/v1/chat/completions"
TENANTS = [f"key-{i}" for i in range(24)]
"""Enough tenants that some of their shards are on the master that is killed."""


async def request(proxy: Any, key: str) -> tuple[int, str]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "the same question"}]}
    resp = await proxy.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})
    await resp.read()
    return resp.status, resp.headers.get("X-Semcache", "")


async def through_failover(proxy: Any, kill: Any, wait_failed_over: Any,
                           limit_s: float = 45.0) -> dict[str, Any]:
    """Fill, then send requests without pause (one per tenant at once, round after round)
    while `kill` runs and until a whole round is hits again; returns what the client saw."""
    for key in TENANTS:
        await request(proxy, key)
    await proxy.app[SERVICE].drain(5)
    assert {(await request(proxy, key))[1] for key in TENANTS} == {"hit-exact"}
    await asyncio.sleep(1.0)  # replication to the replicas is asynchronous
    seen: list[tuple[float, int, str]] = []
    killed_at = time.monotonic()
    await asyncio.to_thread(kill)
    failover = asyncio.create_task(asyncio.to_thread(wait_failed_over))
    recovered_at = None
    while time.monotonic() - killed_at < limit_s:
        replies = await asyncio.gather(*(request(proxy, key) for key in TENANTS))  # concurrent
        now = time.monotonic() - killed_at
        seen += [(now, status, outcome) for status, outcome in replies]
        outcomes = [outcome for _, outcome in replies]
        if failover.done() and set(outcomes) == {"hit-exact"}:
            recovered_at = time.monotonic() - killed_at
            break
    await failover
    return {"seen": seen, "recovered_s": recovered_at,
            "failed": [s for s in seen if s[1] != 200],
            "outcomes": {o for _, _, o in seen}}


async def test_a_cluster_master_killed_under_load(aiohttp_client: Any, fresh_cluster: LocalCluster,
                                                  upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings(fresh_cluster.url, upstream.base_url, tmp_path,
                             redis__timeout_s=0.5, redis__retry_after_s=0.5)
    proxy = await aiohttp_client(build_app(settings))
    result = await through_failover(proxy, fresh_cluster.kill_master, fresh_cluster.wait_failed_over)
    assert result["failed"] == []
    assert result["recovered_s"] is not None, result["outcomes"]  # every entry is back
    assert "bypass" in result["outcomes"]  # the outage was seen, and served around
    assert proxy.app[STORE].failures > 0


async def test_a_sentinel_master_killed_under_load(aiohttp_client: Any, fresh_sentinel: LocalSentinel,
                                                   upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings(fresh_sentinel.url, upstream.base_url, tmp_path,
                             redis__timeout_s=0.5, redis__retry_after_s=0.5)
    proxy = await aiohttp_client(build_app(settings))
    old: list[int] = []

    def kill() -> None:
        old.append(fresh_sentinel.kill_master())

    result = await through_failover(proxy, kill, lambda: fresh_sentinel.wait_failed_over(old[0]))
    assert result["failed"] == []
    assert result["recovered_s"] is not None, result["outcomes"]
    assert "bypass" in result["outcomes"]
    assert fresh_sentinel.master_port() != old[0]
