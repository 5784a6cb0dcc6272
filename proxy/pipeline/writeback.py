"""Write-back: a complete 200 answer of a miss becomes an entry, off the response path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from semcache.embeddings.service import EmbeddingError
from semcache.index.store import Entry, Store, StoreError

from ..apis import APIS
from ..apis.answers import answer_text
from ..config import CacheSettings
from ..metrics import Metrics
from ..semantic import WRITE_WAIT_S, SemanticTier
from .chains import Chains
from .lookup import Lookup


class WriteBack:
    def __init__(self, settings: CacheSettings, store: Store, metrics: Metrics,
                 semantic: Callable[[], SemanticTier | None],
                 semantic_text: Callable[[Lookup], str | None], chains: Chains) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.semantic = semantic
        """The semantic tier once it has loaded (None before)."""
        self.semantic_text = semantic_text
        self.chains = chains

    async def write(self, lookup: Lookup, body: bytes, upstream_s: float) -> None:
        writes = self.metrics.writes
        if len(body) + len(stored_query(lookup).encode()) > self.settings.max_entry_bytes:
            writes.labels("too-large").inc()  # the prompt counts as much as the answer
            return
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            writes.labels("not-json").inc()
            return
        if not APIS[lookup.req.endpoint].is_answer(parsed):
            writes.labels("not-an-answer").inc()
            return
        await self._ensure_vector(lookup)
        entry = self.make_entry(lookup, body, upstream_s)
        if entry.size_bytes() > self.settings.max_entry_bytes:
            writes.labels("too-large").inc()
            return
        try:
            await self.store.put(entry)
            await self.chains.remember(entry.tenant, entry.namespace, answer_text(parsed),
                                       entry.id, entry.query, entry.ttl_s)
        except StoreError:
            writes.labels("failed").inc()
            return
        writes.labels("stored").inc()

    async def _ensure_vector(self, lookup: Lookup) -> None:
        """Embed the question if the lookup did not (no-cache, or the tier was warming)."""
        text = self.semantic_text(lookup)
        if lookup.vector is not None or text is None:
            return
        if not (self.settings.semantic and self.settings.enabled):
            return
        for _ in range(int(WRITE_WAIT_S * 10)):
            if self.semantic() is not None:
                break
            await asyncio.sleep(0.1)
        semantic = self.semantic()
        if semantic is None:
            return  # stored exact-only; still served by the exact tier
        try:
            lookup.vector = await semantic.embed(text)
        except EmbeddingError:
            self.metrics.writes.labels("no-vector").inc()

    def make_entry(self, lookup: Lookup, body: bytes, upstream_s: float) -> Entry:
        req = lookup.req
        vector = lookup.vector
        return Entry(
            id=lookup.entry_id,
            scope=lookup.scope.id,
            tenant=lookup.scope.tenant,
            namespace=lookup.scope.namespace,
            endpoint=req.endpoint,
            model=req.model,
            query=stored_query(lookup),
            response=body,
            created=time.time(),
            ttl_s=lookup.directives.ttl_s or self.settings.ttl_s,
            embedding=b"" if vector is None else vector.astype("float32").tobytes(),
            upstream_s=upstream_s,
        )


def stored_query(lookup: Lookup) -> str:
    """The question as an entry keeps it: what the judge read (a short follow-up with the
    turn it follows), its text, or the canonical message as JSON."""
    return lookup.text or lookup.req.query_text or orjson.dumps(lookup.req.query).decode()
