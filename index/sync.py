"""Keeps a replica's in-memory vector index in step with Redis.

At start the index is rebuilt from the entries in Redis in bulk: keys are scanned in
batches, each batch's scopes and vectors are fetched in one pipelined round trip, and each
scope's vectors of a batch go into the index as one array (graph builds wait until the
whole store is read, then run on the index builder's thread). Progress is logged for large
stores. Then the event stream is tailed, so an entry written or deleted through any replica
reaches every other replica's index within milliseconds. Entries that simply expire produce
no event: a search that finds one drops it (the store returns nothing), and a periodic sweep
drops the rest.

Stopping: `stop()` sets a flag that the tail loop checks after every XREAD (which blocks for
at most TAIL_BLOCK_MS), so the tail ends on its own even where a cancellation is lost. And
redis-py does lose them: measured with redis-py 8.1 on Python 3.11, a task cancelled during
a command often sees the command return normally (redis-py retries what the cancel
interrupted), with only `Task.cancelling()` left to tell. So every loop here checks it after
each round trip (`raise_if_cancelling`), besides its flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis

from .connect import REDIS_ERRORS, is_redis_failure
from .store import Store, is_cluster
from .vectors import VectorIndex

log = logging.getLogger(__name__)

SCAN_BATCH = 1000
"""Entries fetched per round trip while rebuilding (1.5 MB of vectors)."""
PROGRESS_EVERY_S = 5.0
"""How often a long rebuild logs how far it has got."""
TAIL_BLOCK_MS = 1000
"""How long one XREAD waits for new events: bounds how late the tail sees `stop()`."""
RETRY_S = 1.0
"""Pause after a failed XREAD before the next."""
SWEEP_BATCH = 2000


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that redis-py swallowed (retried, or turned into a timeout
    error): the task was asked to stop, whatever the command returned."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class IndexSync:
    def __init__(self, store: Store, index: VectorIndex, tail_client: aioredis.Redis) -> None:
        self.store = store
        self.index = index
        self.tail_client = tail_client
        """A connection of its own: XREAD BLOCK holds it for up to TAIL_BLOCK_MS."""
        self.last_ids: dict[str, str] = {}
        """The last event applied of each shard's stream (none: from the start)."""
        self.events_applied = 0
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def streams(self) -> list[str]:
        """One per shard (index/keys.py); every replica tails them all."""
        return self.store.keys.streams()

    def stop(self) -> None:
        """Ask the tail (and a rebuild in progress) to end at their next step."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def rebuild(self) -> int:
        """Load every entry that has a vector; returns how many were indexed."""
        client = self.store.client
        try:
            # Remember where each stream is *before* scanning: events after this point are
            # replayed by the tail, so nothing written during the scan is missed.
            pipe = client.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xrevrange(stream, count=1)
            lasts = cast(list[list[tuple[bytes, Any]]], await pipe.execute())
            raise_if_cancelling()
            self.last_ids = {stream: (last[0][0].decode() if last else "0-0")
                             for stream, last in zip(self.streams, lasts, strict=True)}
            self.index.start_builder()
            self.index.pause_builds()
            try:
                loaded = await self._scan_all()
            finally:
                self.index.resume_builds()
        except REDIS_ERRORS:
            raise_if_cancelling()
            raise
        self.ready.set()
        return loaded

    async def _scan_all(self) -> int:
        """Every shard's entries; on a cluster the SCAN walks each master in turn."""
        started = last_log = time.monotonic()
        loaded = seen = 0
        batch: list[bytes] = []
        scan = self.store.client.scan_iter(match=self.store.keys.all_entries_pattern,
                                           count=SCAN_BATCH)
        done = False
        while not done:
            if self.stopping:
                raise asyncio.CancelledError
            try:
                batch.append(await anext(scan))
            except StopAsyncIteration:
                done = True
            raise_if_cancelling()
            if batch and (done or len(batch) >= SCAN_BATCH):
                loaded += await self._load(batch)
                raise_if_cancelling()
                seen += len(batch)
                batch = []
                now = time.monotonic()
                if now - last_log >= PROGRESS_EVERY_S:
                    last_log = now
                    log.info("rebuilding the vector index: %d entries read, %d indexed (%.0f/s)",
                             seen, loaded, seen / (now - started))
        log.info("vector index rebuilt: %d entries in %.1f s", loaded, time.monotonic() - started)
        return loaded

    async def _load(self, keys: list[bytes]) -> int:
        """One batch of keys: their scopes and vectors in one round trip, then one array per
        scope into the index."""
        pipe = self.store.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "scope", "embedding")
        rows = await pipe.execute()
        width = 4 * self.index.dim
        by_scope: dict[bytes, tuple[list[str], list[bytes]]] = {}
        for key, (scope, embedding) in zip(keys, rows, strict=True):
            if scope and embedding and len(embedding) == width:
                ids, vectors = by_scope.setdefault(scope, ([], []))
                ids.append(self.store.keys.entry_id_of(key))
                vectors.append(embedding)
        for scope, (ids, vectors) in by_scope.items():
            matrix = np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(ids), -1)
            self.index.load(scope.decode(), ids, matrix)
        return sum(len(ids) for ids, _ in by_scope.values())

    def _apply_vector(self, entry_id: str, scope: bytes | None, embedding: bytes | None) -> bool:
        if not scope or not embedding or len(embedding) != 4 * self.index.dim:
            return False
        self.index.add(scope.decode(), entry_id, np.frombuffer(embedding, dtype=np.float32))
        return True

    async def tail(self) -> None:
        """Apply stream events until `stop()`; survives Redis outages by retrying.

        A single Redis (or Sentinel's master) is read with one XREAD over every shard's
        stream. A cluster refuses an XREAD across slots, so there each stream has a reader
        of its own, blocking on its master."""
        if is_cluster(self.tail_client):
            await asyncio.gather(*(self._tail([stream]) for stream in self.streams))
        else:
            await self._tail(self.streams)

    async def _tail(self, streams: list[str]) -> None:
        while not self.stopping:
            try:
                reply = await self.tail_client.xread(
                    {stream: self.last_ids.get(stream, "0-0") for stream in streams}, count=500,
                    block=TAIL_BLOCK_MS,
                )
                raise_if_cancelling()
                for stream, events in cast(list[tuple[bytes, Any]], reply or []):
                    await self._apply(stream.decode(), events)
                    raise_if_cancelling()
            except Exception as e:
                if not is_redis_failure(e):
                    raise
                raise_if_cancelling()
                if self.stopping:
                    return
                log.warning("event stream unavailable (%s); retrying", type(e).__name__)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_S):
                        await self._stopping.wait()

    async def _apply(self, stream: str, events: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        adds: list[str] = []
        for _event_id, fields in events:
            entry_id = fields.get(b"id", b"").decode()
            if fields.get(b"op") == b"del":
                self.index.remove(entry_id)
            elif entry_id:
                adds.append(entry_id)
        if adds:
            pipe = self.tail_client.pipeline(transaction=False)
            for entry_id in adds:
                pipe.hmget(self.store.entry_key(entry_id), "scope", "embedding")
            for entry_id, (scope, embedding) in zip(adds, await pipe.execute(), strict=True):
                self._apply_vector(entry_id, scope, embedding)
        # Only now: if fetching the vectors failed, the same events are read again (applying
        # a deletion twice is harmless).
        if events:
            self.last_ids[stream] = events[-1][0].decode()
        self.events_applied += len(events)

    async def sweep(self) -> int:
        """Drop vectors whose entries expired; returns how many were dropped."""
        dropped = 0
        ids = self.index.ids()
        for start in range(0, len(ids), SWEEP_BATCH):
            if self.stopping:
                break
            chunk = ids[start : start + SWEEP_BATCH]
            pipe = self.store.client.pipeline(transaction=False)
            for entry_id in chunk:
                pipe.exists(self.store.entry_key(entry_id))
            found = await pipe.execute()
            raise_if_cancelling()
            for entry_id, exists in zip(chunk, found, strict=True):
                if not exists and self.index.remove(entry_id):
                    dropped += 1
        return dropped
