"""The event loop is never blocked by the index: the guard itself catches an index build run
on the loop, and the same work through VectorIndex and the semantic tier trips it never."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from semcache.index.sync import IndexSync
from semcache.index.vectors import IndexSettings, ScopeIndex, VectorIndex
from semcache.proxy.semantic import SemanticTier

from .loop_guard import LoopGuard

DIM = 384
LIMIT_S = 0.25
"""Longest the loop may stand still. The stalls this guards against were 0.8-2.6 s; on a
2-core machine shared with other test runs (load average 4) the loop is sometimes not
scheduled for about 100 ms, which is no fault of the code under test."""


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def test_the_guard_fails_on_an_index_build_on_the_loop() -> None:
    rng = np.random.default_rng(10)
    vectors = unit(rng, 6000)
    scope = ScopeIndex(DIM, IndexSettings(hnsw_min_entries=6000))  # no builder: inline
    import faiss  # noqa: F401  (loaded before the guard: the build is what it must see)

    async with LoopGuard(limit_s=LIMIT_S) as guard:
        scope.load([f"e{i}" for i in range(6000)], vectors)
    assert scope.kind == "hnsw"
    with pytest.raises(AssertionError, match="event loop blocked"):
        guard.check()
    assert any("build_graph" in frame for stall in guard.stalls for frame in stall.where), guard.stalls


async def until(condition: Any, timeout_s: float, tier: SemanticTier, queries: np.ndarray) -> None:
    """Search the scopes on the loop (as requests do) until `condition()` holds."""
    deadline = time.monotonic() + timeout_s
    i = 0
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        for scope in ("big", "small"):
            assert await tier.search(scope, queries[i % len(queries)], 4)
        i += 1
        await asyncio.sleep(0.002)


async def test_index_work_stays_off_the_loop() -> None:
    rng = np.random.default_rng(11)
    vectors = unit(rng, 4000)
    index = VectorIndex(DIM, IndexSettings(device="cpu", hnsw_min_entries=3000))
    sync = IndexSync(None, index, None)  # type: ignore[arg-type]  # no Redis: only stopped
    tier = SemanticTier(None, index, sync, offload_min_entries=1000)  # type: ignore[arg-type]
    big = index._scope_index("big")
    try:
        async with LoopGuard(limit_s=LIMIT_S) as guard:
            for i in range(200):
                index.add("small", f"s{i}", vectors[i])
            for i in range(4000):  # one by one, as the stream tail applies them
                index.add("big", f"b{i}", vectors[i])
                if i % 100 == 0:
                    await until(lambda: True, 1, tier, vectors)
            await until(lambda: big.kind == "hnsw" and not big.building, 60, tier, vectors)
            for i in range(0, 4000, 3):  # a third deleted: a rebuild, on the builder
                index.remove(f"b{i}")
            await until(lambda: big.rows < 4000 and not big.building, 60, tier, vectors)
        guard.check()
        assert big.kind == "hnsw" and len(big) == 2666 and big.rows == 2666
        assert index.builder.jobs_done >= 2
    finally:
        await tier.stop()
