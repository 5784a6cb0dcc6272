"""The real `semcache serve` process under load: SIGTERM drops nothing within the grace
period, and a bounded sustained run keeps its memory flat with no error."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import redis

from semcache.index.keys import Keys
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


def unique_items(prefix: str = "q") -> Any:
    i = 0
    while True:
        body = {"model": "fake-model", "messages": [{"role": "user",
                                                     "content": f"{prefix} {i}"}],
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


SIGTERM_RUNS = 3
"""Runs of the SIGTERM test with the semantic tier (the benchmark, bench_stalls, does 20)."""
GRACE_S = 10.0


def prefill(redis_url: str, count: int, dim: int = 384) -> None:
    """Entries of one scope with vectors only (all a start-up rebuild reads): enough that the
    proxy's start builds an HNSW graph in the background."""
    client = redis.Redis.from_url(redis_url)
    vectors = np.random.default_rng(40).standard_normal((count, dim)).astype(np.float32)
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, count)):
            pipe.hset(Keys().entry(f"{i:064x}"), mapping={"scope": "prefilled",
                                                          "embedding": vectors[i].tobytes()})
        pipe.execute()
    client.close()


async def test_sigterm_with_the_semantic_tier_exits_within_the_grace_period(
    upstream: FakeUpstream, redis_url: str, tmp_path: Path, model_dir: Path
) -> None:
    """The tail blocked in XREAD, write-backs embedding, a graph build on the builder: each
    run exits 0 within server.shutdown_grace_s, every request sent before SIGTERM answered."""
    upstream.delay_s = 0.6
    await asyncio.to_thread(prefill, redis_url, 25_000)
    building = [await sigterm_once(upstream, redis_url, tmp_path / f"proxy-{run}", model_dir,
                                   run) for run in range(SIGTERM_RUNS)]
    assert any(building), "no graph build was in flight at SIGTERM: a path left untested"


async def sigterm_once(upstream: FakeUpstream, redis_url: str, data_dir: Path, model_dir: Path,
                       run: int) -> bool:
    """One run; whether a graph build was in flight when SIGTERM was sent."""
    data_dir.mkdir()  # noqa: ASYNC240 (a local directory, once)
    (data_dir / "models").symlink_to(model_dir / "models")  # the exported encoder
    sent_term_at: list[float] = []
    building: list[int] = []
    async with served_proxy(upstream.base_url, redis_url, data_dir,
                            server__shutdown_grace_s=str(GRACE_S), cache__semantic="true",
                            index__hnsw_min_entries="20000") as proxy:
        await wait_semantic(proxy.url)

        async def terminate() -> None:
            await asyncio.sleep(1.5)
            building.append(await scopes_building(proxy.url))
            sent_term_at.append(time.perf_counter())
            proxy.proc.send_signal(signal.SIGTERM)

        t0 = time.perf_counter()
        killer = asyncio.create_task(terminate())
        result = await run_load(proxy.url, unique_items(f"run {run}"), concurrency=16,
                                duration_s=4.0, progress=None)
        await killer
        code = await asyncio.to_thread(proxy.proc.wait, GRACE_S + 15)
        exit_s = time.perf_counter() - sent_term_at[0]
    term = sent_term_at[0] - t0
    before = [s for s in result.samples if s.start_s < term - 0.05]
    assert before and all(s.status == 200 for s in before), [s for s in before
                                                             if s.status != 200][:5]
    assert code == 0 and exit_s <= GRACE_S, (code, exit_s, proxy.log.read_text()[-3000:])
    return bool(building[0])


async def scopes_building(url: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{url}/admin/api/stats") as resp:
        stats = await resp.json()
    return int(stats["inventory"]["index"]["builder"]["scopes_waiting"])


async def wait_semantic(url: str, timeout_s: float = 120.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{url}/admin/api/stats") as resp:
                if resp.status == 200 and (await resp.json()).get("semantic"):
                    return
            await asyncio.sleep(0.25)
    raise AssertionError("the semantic tier did not start")


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
