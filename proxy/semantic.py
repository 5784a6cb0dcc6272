"""The semantic tier: embed the question, search the request's own scope, verify the entry.

It starts in the background (the encoder may need exporting, the index rebuilding from
Redis) while the proxy already serves; until it is ready, lookups use the exact tier only,
and write-backs wait briefly for it so that their entries still get a vector.
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


class SemanticTier:
    def __init__(self, embeddings: EmbeddingService, index: VectorIndex, sync: IndexSync,
                 *, offload_min_entries: int) -> None:
        self.embeddings = embeddings
        self.index = index
        self.sync = sync
        self.offload_min_entries = offload_min_entries
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="semcache-search")
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        return self.sync.ready.is_set()

    @property
    def healthy(self) -> bool:
        return self.ready and self.embeddings.healthy

    async def start(self) -> None:
        """Rebuild the index from Redis, then keep it current in the background."""
        await self.sync.rebuild()
        self._tasks = [asyncio.create_task(self.sync.tail()), asyncio.create_task(self._sweep())]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                dropped = await self.sync.sweep()
                if dropped:
                    log.info("dropped %d vectors of expired entries", dropped)
            except Exception:  # the next round tries again; a search drops them meanwhile
                log.exception("index sweep failed")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def embed(self, text: str) -> np.ndarray:
        return await self.embeddings.embed(text)

    def reads_whole(self, text: str) -> bool:
        """Whether the encoder saw all of `text`: two prompts that differ only past its
        window (256 tokens for MiniLM) embed identically."""
        return self.embeddings.fits(text)

    async def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        if self.index.scope_size(scope) < self.offload_min_entries:
            return self.index.search(scope, vector, k)  # microseconds: not worth a thread hop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.index.search, scope, vector, k)
