"""Keeps a replica's in-memory vector index in step with Redis.

At start the index is rebuilt from the entries in Redis (progress logged); then the event
stream is tailed, so an entry written or deleted through any replica reaches every other
replica's index within milliseconds. Entries that simply expire produce no event: a search
that finds one drops it (the store returns nothing), and a periodic sweep drops the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .store import Store
from .vectors import VectorIndex

log = logging.getLogger(__name__)

SCAN_BATCH = 1000
"""Entries fetched per round trip while rebuilding."""
TAIL_BLOCK_MS = 1000
"""How long one XREAD waits for new events; bounds how late a shutdown is noticed."""
SWEEP_BATCH = 2000


class IndexSync:
    def __init__(self, store: Store, index: VectorIndex, tail_client: aioredis.Redis) -> None:
        self.store = store
        self.index = index
        self.tail_client = tail_client
        """A connection of its own: XREAD BLOCK holds it for up to TAIL_BLOCK_MS."""
        self.last_id = "0-0"
        self.events_applied = 0
        self.ready = asyncio.Event()

    async def rebuild(self) -> int:
        """Load every entry that has a vector; returns how many were indexed."""
        client = self.store.client
        # Remember where the stream is *before* scanning: events after this point are
        # replayed by the tail, so nothing written during the scan is missed.
        last = cast(list[tuple[bytes, Any]], await client.xrevrange(self.store.stream_key, count=1))
        self.last_id = last[0][0].decode() if last else "0-0"
        started, loaded, seen = time.monotonic(), 0, 0
        pattern = self.store.entry_key("*")
        keys: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=SCAN_BATCH):
            keys.append(key)
            if len(keys) >= SCAN_BATCH:
                loaded += await self._load(keys)
                seen += len(keys)
                keys = []
                log.info("rebuilding the vector index: %d entries read, %d indexed", seen, loaded)
        loaded += await self._load(keys)
        log.info("vector index rebuilt: %d entries in %.1f s", loaded, time.monotonic() - started)
        self.ready.set()
        return loaded

    async def _load(self, keys: list[bytes]) -> int:
        if not keys:
            return 0
        pipe = self.store.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "scope", "embedding")
        rows = await pipe.execute()
        prefix = len(self.store.entry_key(""))
        loaded = 0
        for key, (scope, embedding) in zip(keys, rows, strict=True):
            if self._apply_vector(key.decode()[prefix:], scope, embedding):
                loaded += 1
        return loaded

    def _apply_vector(self, entry_id: str, scope: bytes | None, embedding: bytes | None) -> bool:
        if not scope or not embedding or len(embedding) != 4 * self.index.dim:
            return False
        self.index.add(scope.decode(), entry_id, np.frombuffer(embedding, dtype=np.float32))
        return True

    async def tail(self) -> None:
        """Apply stream events forever; survives Redis outages by retrying."""
        while True:
            try:
                reply = await self.tail_client.xread(
                    {self.store.stream_key: self.last_id}, count=500, block=TAIL_BLOCK_MS
                )
            except (RedisError, OSError) as e:
                log.warning("event stream unavailable (%s); retrying", type(e).__name__)
                await asyncio.sleep(1.0)
                continue
            for _stream, events in cast(list[tuple[bytes, Any]], reply or []):
                await self._apply(events)

    async def _apply(self, events: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        adds: list[str] = []
        for event_id, fields in events:
            self.last_id = event_id.decode()
            entry_id = fields.get(b"id", b"").decode()
            if fields.get(b"op") == b"del":
                self.index.remove(entry_id)
            elif entry_id:
                adds.append(entry_id)
            self.events_applied += 1
        if adds:
            pipe = self.tail_client.pipeline(transaction=False)
            for entry_id in adds:
                pipe.hmget(self.store.entry_key(entry_id), "scope", "embedding")
            for entry_id, (scope, embedding) in zip(adds, await pipe.execute(), strict=True):
                self._apply_vector(entry_id, scope, embedding)

    async def sweep(self) -> int:
        """Drop vectors whose entries expired; returns how many were dropped."""
        dropped = 0
        ids = self.index.ids()
        for start in range(0, len(ids), SWEEP_BATCH):
            chunk = ids[start : start + SWEEP_BATCH]
            pipe = self.store.client.pipeline(transaction=False)
            for entry_id in chunk:
                pipe.exists(self.store.entry_key(entry_id))
            for entry_id, exists in zip(chunk, await pipe.execute(), strict=True):
                if not exists and self.index.remove(entry_id):
                    dropped += 1
        return dropped
