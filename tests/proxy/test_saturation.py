"""Saturation: Redis deadlines measured against Redis rather than the event loop's queue,
and a bound on requests in flight that answers 503 with Retry-After when it is reached."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import make_settings

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import build_app
from semcache.proxy.looplag import LoopLag

CHAT = "/v1/chat/completions"


async def reply_during_a_stall(budget_s: float, lag: LoopLag | None) -> None:
    """A reply due after 50 ms, while the loop is blocked for 400 ms by other work."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.05, reply.set_result, 1)
    loop.call_soon(time.sleep, 0.4)  # noqa: ASYNC251 (the stall is the point)
    if lag is None:
        async with asyncio.timeout(budget_s):
            await reply
    else:
        async with lag.deadline(budget_s):
            await reply


async def test_a_stalled_loop_does_not_time_out_a_reply_that_came_in_time() -> None:
    with pytest.raises(TimeoutError):  # what a plain timeout does
        await reply_during_a_stall(0.25, None)
    lag = LoopLag()
    lag.start()
    try:
        await reply_during_a_stall(0.25, lag)  # the loop's lateness does not count
        assert lag.late_s() >= 0.3
    finally:
        lag.stop()


async def test_a_slow_reply_still_times_out_on_time() -> None:
    lag = LoopLag()
    lag.start()
    try:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with lag.deadline(0.2):
                await asyncio.sleep(1.0)
        # late by as much as the loop itself ran late (a loaded CI box), never early
        assert 0.19 <= time.perf_counter() - started < 0.2 + lag.late_s() + 0.5
    finally:
        lag.stop()


async def test_past_max_in_flight_a_request_gets_503_with_retry_after(
        aiohttp_client: Any, upstream: FakeUpstream, redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path, server__max_in_flight=2,
                             server__max_wait_s=0.3, redis__timeout_s=1.0)
    client = await aiohttp_client(build_app(settings))
    admin = aioredis.Redis.from_url(redis_url)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "busy?"}]}
    try:
        await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")  # lookups hold places
        held = [asyncio.create_task(client.post(CHAT, json=body)) for _ in range(2)]
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        refused = await client.post(CHAT, json=body, headers={"X-Request-Id": "third"})
        waited = time.perf_counter() - started
        error = json.loads(await refused.read())["error"]
        assert refused.status == 503 and error["code"] == "saturated", error
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["X-Semcache"] == "bypass"
        assert refused.headers["X-Semcache-Reason"] == "saturated"
        assert refused.headers["X-Request-Id"] == "third"
        assert 0.25 <= waited < 2.0  # max_wait_s, and a margin for a loaded CI box
        for task in held:  # the two in flight are answered (the cache bypassed meanwhile)
            resp = await task
            assert resp.status == 200
            await resp.read()
    finally:
        await admin.aclose()
    metrics = (await (await client.get("/metrics")).read()).decode()
    assert "semcache_saturated_total 1.0" in metrics

