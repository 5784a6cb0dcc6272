"""The real `semcache serve` process under load: SIGTERM drops nothing within the grace
period, and a bounded sustained run keeps its memory flat with no error."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.loadtest.loadgen import Sample, WorkItem, run_load
from semcache.loadtest.workload import Workload, WorkloadSpec, load_pairs

from .conftest import served_proxy

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SUSTAINED_S = 20.0
RSS_GROWTH_BOUND_MB = 25.0
"""Allowed growth of the proxy's RSS between the end of warm-up and the end of the run:
room for allocator noise and the fixed-size buffers (recent events, metrics label sets)
filling up, far below what a per-request leak at hundreds of requests a second would add."""


def unique_items() -> Any:
    i = 0
    while True:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": f"q {i}"}],
                "stream": i % 2 == 0}
        yield WorkItem(path="/v1/chat/completions", body=json.dumps(body).encode(),
                       stream=i % 2 == 0, headers={"Content-Type": "application/json"})
        i += 1


async def test_sigterm_under_load_drops_nothing_in_flight(
    upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    upstream.delay_s = 0.6  # every request is in flight for a while (all misses: unique)
    async with served_proxy(upstream.base_url, redis_url, tmp_path / "proxy",
                            server__shutdown_grace_s="10") as proxy:
        sent_term_at: list[float] = []

        async def terminate() -> None:
            await asyncio.sleep(1.5)
            sent_term_at.append(time.perf_counter())
            proxy.proc.send_signal(signal.SIGTERM)

        t0 = time.perf_counter()
        killer = asyncio.create_task(terminate())
        result = await run_load(proxy.url, unique_items(), concurrency=16, duration_s=4.0,
                                progress=None)
        await killer
        code = await asyncio.to_thread(proxy.proc.wait, 15)
    term = sent_term_at[0] - t0
    # Sent before SIGTERM (with a margin for the request to reach the proxy's socket): each
    # must have been answered in full.
    before = [s for s in result.samples if s.start_s < term - 0.05]
    failed = [s for s in before if s.status != 200]
    assert len(before) >= 16 and not failed, failed[:5]
    in_flight = [s for s in before if s.start_s + s.latency_s > term]
    assert in_flight, "nothing was in flight at SIGTERM: the test proves nothing"
    # After SIGTERM new requests are refused (connection errors), never answered with a 5xx.
    after: list[Sample] = [s for s in result.samples if s.start_s > term + 0.05]
    assert all(s.status == 0 or s.status == 200 for s in after)
    assert code == 0, proxy.log.read_text()[-2000:]


async def test_sustained_load_memory_flat_no_errors(
    upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    """A mixed workload (repeats, paraphrases, unique questions, streaming, four tenants)."""
    workload = Workload(WorkloadSpec(pool=300, tenants=4, stream_fraction=0.3), load_pairs())
    async with served_proxy(upstream.base_url, redis_url, tmp_path / "proxy") as proxy:
        proc = psutil.Process(proxy.proc.pid)
        rss: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def sample_rss() -> None:
            t0 = time.perf_counter()
            while not stop.is_set():
                rss.append((time.perf_counter() - t0, proc.memory_info().rss / 2**20))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample_rss())
        result = await run_load(proxy.url, workload.items(), concurrency=8,
                                duration_s=SUSTAINED_S, progress=None)
        stop.set()
        await sampler
    summary = result.summary()
    assert summary["errors"] == 0 and set(summary["status"]) == {"200"}, summary
    assert summary["requests"] > 500
    outcomes = summary["by_outcome"]
    assert outcomes["hit-exact"]["count"] > 0 and outcomes["miss"]["count"] > 0
    warm = [mb for t, mb in rss if t >= SUSTAINED_S / 4]
    growth = max(warm) - warm[0]
    print(f"proxy RSS after warm-up {warm[0]:.1f} MB, max {max(warm):.1f} MB, "
          f"growth {growth:.1f} MB over {SUSTAINED_S * 3 / 4:.0f} s, "
          f"{summary['requests']} requests")
    assert growth < RSS_GROWTH_BOUND_MB, rss
