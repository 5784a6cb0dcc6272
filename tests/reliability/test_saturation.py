"""The real `semcache serve` process saturated: exact hits at 64 concurrent make no upstream
call (a Redis reply that waits in the busy event loop's queue is not a timeout), and 4 MB
bodies built to be slow to parse do not stall the other requests."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from semcache.loadtest.bench_reliability import saturation, stall
from semcache.loadtest.fake_upstream import FakeUpstream

from .conftest import served_proxy

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


async def test_exact_hits_at_64_concurrent_cost_no_upstream_call(
        upstream: FakeUpstream, redis_url: str, tmp_path: Path) -> None:
    async with served_proxy(upstream.base_url, redis_url, tmp_path / "proxy") as proxy:
        result = await saturation(upstream, proxy.url, duration_s=6.0, levels=(64,))
    row = result["64"]
    assert row["requests"] > 1000, row
    assert row["upstream_calls"] == 0, row
    assert row["outcomes"] == {"hit-exact": row["requests"]} and row["status"] == {
        "200": row["requests"]}, row


async def test_bodies_slow_to_parse_do_not_stall_the_others(
        upstream: FakeUpstream, redis_url: str, tmp_path: Path) -> None:
    async with served_proxy(upstream.base_url, redis_url, tmp_path / "proxy") as proxy, \
            aiohttp.ClientSession() as session:
        port = int(proxy.url.rsplit(":", 1)[1])
        result = await stall(session, proxy.url, port, phase_s=3.0)
    loaded = result["hostile_4mb_bodies"]
    assert loaded["outcomes"] == {"hit-exact": loaded["probes"]}, loaded
    assert all(not s.startswith("5") and s != "0" for s in loaded["load"]["status"]), loaded
    # one such body stalled every request for 2.7 s before; a loaded CI box gets a margin
    assert loaded["max_ms"] < 500, loaded
