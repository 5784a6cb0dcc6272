"""Faults under load, in-process: Redis stopped and restarted, the upstream failing in every
way, clients leaving mid-stream. Each test counts asyncio tasks and the upstream pool's
checked-out connections before and after, so a leak fails it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from conftest import make_settings

from semcache.index.redis_server import EmbeddedRedis
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.loadtest.loadgen import WorkItem, run_load
from semcache.proxy.app import SERVICE, build_app

from .conftest import busy_upstream_connections, settle, working_tasks

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CHAT = "/v1/chat/completions"


def item(q: str, *, stream: bool = False, key: str = "k1") -> WorkItem:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": q}]}
    if stream:
        body["stream"] = True
    return WorkItem(path=CHAT, body=json.dumps(body).encode(), stream=stream,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def cycle(questions: list[str]) -> Any:
    i = 0
    while True:
        yield item(questions[i % len(questions)], stream=i % 3 == 0)
        i += 1


async def outcome_of(client: Any, q: str, **kw: Any) -> str:
    resp = await client.post(CHAT, json={"model": "fake-model",
                                         "messages": [{"role": "user", "content": q}], **kw},
                             headers={"Authorization": "Bearer k1"})
    await resp.read()
    await client.app[SERVICE].drain(5)
    return str(resp.headers.get("X-Semcache"))


async def test_redis_stopped_during_load_then_back(aiohttp_client: Any, upstream: FakeUpstream,
                                                   tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    await redis.start()
    try:
        settings = make_settings(redis.url, upstream.base_url, tmp_path, redis__retry_after_s=0.2)
        client = await aiohttp_client(build_app(settings))
        questions = [f"question {i}" for i in range(20)]
        for q in questions:  # stored before the outage
            assert await outcome_of(client, q) == "miss"
        await asyncio.sleep(1.2)  # past appendfsync everysec: on disk

        async def outage() -> None:
            await asyncio.sleep(0.8)
            await redis.stop()
            await asyncio.sleep(1.0)
            await redis.start()  # same port, same append-only file

        url = str(client.make_url("")).rstrip("/")
        chaos = asyncio.create_task(outage())
        result = await run_load(url, cycle(questions), concurrency=8, duration_s=3.5, progress=None)
        await chaos
        summary = result.summary()
        assert summary["errors"] == 0 and set(summary["status"]) == {"200"}, summary
        outcomes = Counter(s.outcome for s in result.samples)
        assert outcomes["bypass"] > 0 and outcomes["hit-exact"] > 0, outcomes
        await asyncio.sleep(1.3)  # the gate re-opens, the probe sees Redis again
        assert await outcome_of(client, questions[0]) == "hit-exact"  # kept across the restart
        assert await outcome_of(client, "after the outage") == "miss"
        assert await outcome_of(client, "after the outage") == "hit-exact"  # the cache resumed
    finally:
        await redis.stop()


async def test_redis_hung_requests_bypass_within_its_timeout(aiohttp_client: Any,
                                                             upstream: FakeUpstream,
                                                             tmp_path: Path) -> None:
    """A Redis that stops answering (CLIENT PAUSE: connections open, no replies) costs a
    request at most the command timeout; it is served from the upstream as a bypass."""
    redis = EmbeddedRedis(tmp_path / "redis")
    await redis.start()
    admin = aioredis.Redis.from_url(redis.url)
    try:
        settings = make_settings(redis.url, upstream.base_url, tmp_path,
                                 redis__timeout_s=0.25, redis__retry_after_s=0.2)
        client = await aiohttp_client(build_app(settings))
        assert await outcome_of(client, "before the pause") == "miss"
        assert await outcome_of(client, "before the pause") == "hit-exact"
        pause_s = 3.0
        loop = asyncio.get_running_loop()
        await admin.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "ALL")
        paused_until = loop.time() + pause_s
        for q in ("before the pause", "during the pause"):
            started = loop.time()
            assert await outcome_of(client, q) == "bypass"
            # The command timeout (0.25 s), then the upstream: not the pause (3 s). The
            # margin is for a loaded CI machine.
            assert loop.time() - started < 1.0
        assert loop.time() < paused_until
        # The pause ends on its own (an UNPAUSE would wait behind it too), then retry_after_s
        # passes and the cache is tried again.
        await asyncio.sleep(paused_until - loop.time() + 0.5)
        assert await outcome_of(client, "before the pause") == "hit-exact"
    finally:
        await admin.aclose()
        await redis.stop()


@pytest.mark.parametrize("fault", ["status-500", "timeout", "reset-mid-stream"])
async def test_upstream_faults_relayed_nothing_cached_nothing_leaked(
    aiohttp_client: Any, upstream: FakeUpstream, redis_url: str, tmp_path: Path, fault: str
) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path, upstream__timeout_s=0.5)
    client = await aiohttp_client(build_app(settings))
    app = client.app
    assert await outcome_of(client, "warm the pool") == "miss"
    before = set(working_tasks())
    if fault == "status-500":
        upstream.status = 500
    elif fault == "timeout":
        upstream.delay_s = 1.5
    else:
        upstream.cut_stream_after = 3
    questions = [f"{fault} {i}" for i in range(6)]
    stream_only = fault == "reset-mid-stream"

    async def one(q: str, stream: bool) -> tuple[int, bytes]:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": q}], "stream": stream}
        try:
            resp = await client.post(CHAT, json=body, headers={"Authorization": "Bearer k1"})
            return resp.status, await resp.read()
        except aiohttp.ClientPayloadError:
            return -1, b""  # the proxy cut the client's stream, as it must mid-stream

    results = await asyncio.gather(*(one(q, stream_only or i % 2 == 0)
                                      for i, q in enumerate(questions * 3)))
    statuses = Counter(status for status, _ in results)
    expected = {"status-500": 500, "timeout": 504, "reset-mid-stream": -1}[fault]
    assert set(statuses) <= {expected, 200} and statuses[expected] > 0, statuses
    if fault != "reset-mid-stream":
        for _status, raw in results:
            assert json.loads(raw)["error"]["message"], raw  # relayed / OpenAI-shaped
    upstream.status, upstream.delay_s, upstream.cut_stream_after = 200, 0.0, None
    await asyncio.sleep(0.1)
    assert await settle(app, before) == []
    assert busy_upstream_connections(app) == 0
    for q in questions:  # nothing was cached: each is a miss now, then a hit
        assert await outcome_of(client, q, stream=stream_only) == "miss"
        assert await outcome_of(client, q, stream=stream_only) == "hit-exact"


async def test_clients_leaving_mid_stream(aiohttp_client: Any, upstream: FakeUpstream,
                                          redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path)
    client = await aiohttp_client(build_app(settings))
    app = client.app
    assert await outcome_of(client, "warm the pool") == "miss"
    before = set(working_tasks())
    upstream.words_per_answer = 300
    upstream.chunk_delay_s = 0.01
    n = 10

    async def leave(i: int) -> None:
        async with aiohttp.ClientSession() as session:
            body = {"model": "fake-model", "stream": True,
                    "messages": [{"role": "user", "content": f"walk away {i}"}]}
            async with session.post(client.make_url(CHAT), json=body) as resp:
                await resp.content.readany()
        # leaving the blocks closes the connection mid-stream

    await asyncio.gather(*(leave(i) for i in range(n)))
    for _ in range(200):
        if upstream.streams_cancelled + upstream.streams_finished >= n:
            break
        await asyncio.sleep(0.05)
    # The upstream request of each was cancelled, none ran to the end.
    assert upstream.streams_cancelled == n and upstream.streams_finished == 0
    assert await settle(app, before) == []
    assert busy_upstream_connections(app) == 0
    upstream.chunk_delay_s = 0.0
    for i in range(n):  # nothing partial was stored
        assert await outcome_of(client, f"walk away {i}", stream=True) == "miss"
