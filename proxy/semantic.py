"""The semantic tier: embed the question, search the request's own scope, verify the entry.

It starts in the background (the encoder may need exporting, the index rebuilding from
Redis) while the proxy already serves; until it is ready, lookups use the exact tier only,
and write-backs wait briefly for it so that their entries still get a vector.

Nothing here waits without a bound: the background tasks (the stream tail, the sweep) end on
a flag as well as on cancellation, `stop()` gives them STOP_WAIT_S and then closes the tail's
connection under them, and the index builder drops its build at the next chunk, which
`stop()` waits for (BUILD_STOP_WAIT_S at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from semcache.embeddings.service import EmbeddingService
from semcache.index.sync import IndexSync
from semcache.index.vectors import VectorIndex

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 300.0
"""How often vectors of expired entries are looked for (a search drops them anyway)."""
WRITE_WAIT_S = 60.0
"""How long a write-back waits for a warming semantic tier before storing without a vector."""
STOP_WAIT_S = 2.0
"""How long `stop()` waits for the background tasks: the tail notices the stop flag after
its current XREAD (at most TAIL_BLOCK_MS), so this is twice what a healthy one needs."""
BUILD_STOP_WAIT_S = 5.0
"""How long `stop()` waits for a graph build to drop at its next chunk (a fraction of a
second unless the machine is saturated): a process that exits while FAISS runs in a daemon
thread crashes in the interpreter's finalization."""


class SemanticTier:
    def __init__(self, embeddings: EmbeddingService, index: VectorIndex, sync: IndexSync,
                 *, offload_min_entries: int) -> None:
        self.embeddings = embeddings
        self.index = index
        self.sync = sync
        self.offload_min_entries = offload_min_entries
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="semcache-search")
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.sync.ready.is_set()

    @property
    def healthy(self) -> bool:
        return self.ready and self.embeddings.healthy

    async def start(self) -> None:
        """Rebuild the index from Redis, then keep it current in the background."""
        try:
            await self.sync.rebuild()
        except BaseException:
            await self.stop()  # the builder may hold queued work: release it
            raise
        self._tasks = [asyncio.create_task(self.sync.tail(), name="semcache-index-tail"),
                       asyncio.create_task(self._sweep(), name="semcache-index-sweep")]

    async def _sweep(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_INTERVAL_S):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                dropped = await self.sync.sweep()
                if dropped:
                    log.info("dropped %d vectors of expired entries", dropped)
            except Exception:  # the next round tries again; a search drops them meanwhile
                log.exception("index sweep failed")

    async def stop(self) -> None:
        """End the background work within about STOP_WAIT_S, whatever state Redis is in."""
        self._stopping.set()
        self.sync.stop()
        self.index.close()
        builder = asyncio.create_task(self._builder_idle())
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            if pending:
                # Stuck in a read that ignores cancellation: closing the connection under it
                # ends the read with an error, which the flag turns into an exit.
                log.warning("index tail did not stop in %.0f s; closing its connection",
                            STOP_WAIT_S)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await self.sync.tail_client.connection_pool.disconnect()
                await asyncio.wait(pending, timeout=1.0)
        await builder
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _builder_idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUILD_STOP_WAIT_S
        while self.index.builder.busy:
            if loop.time() > deadline:
                log.warning("index build still running after %.0f s; exiting under it",
                            BUILD_STOP_WAIT_S)
                return
            await asyncio.sleep(0.02)

    async def embed(self, text: str) -> np.ndarray:
        return await self.embeddings.embed(text)

    def reads_whole(self, text: str) -> bool:
        """Whether the encoder saw all of `text`: two prompts that differ only past its
        window (256 tokens for MiniLM) embed identically."""
        return self.embeddings.fits(text)

    async def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        if self.index.search_rows(scope) < self.offload_min_entries:
            return self.index.search(scope, vector, k)  # microseconds: not worth a thread hop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.index.search, scope, vector, k)
