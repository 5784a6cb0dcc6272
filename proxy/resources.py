"""The application's shared resources under typed AppKeys, and the cleanup contexts that
open and close Redis (embedded or external) and the upstream (bundled or a URL).

Nothing here touches the network at import time; `app.py` assembles the application.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from semcache.embeddings.service import EmbeddingService
from semcache.index.connect import close_client, open_client
from semcache.index.redis_server import EmbeddedRedis
from semcache.index.store import Store
from semcache.index.vectors import VectorIndex

from .bundled import BundledBackend
from .config import Settings
from .events import Observer
from .looplag import LoopLag
from .metrics import Metrics
from .runtime import Periodic, RuntimeState
from .semantic import SemanticTier
from .upstream import Upstream


@dataclass
class SemanticState:
    """The semantic tier's parts, filled in once they have loaded (after the app started)."""

    given_embeddings: EmbeddingService | None = None
    """An encoder passed to build_app (tests); not closed by the app."""
    embeddings: EmbeddingService | None = None
    index: VectorIndex | None = None
    tier: SemanticTier | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Shutdown:
    """When a shutdown must be over (a monotonic time; None until one begins): every stage
    of it takes what is left, so the whole stays within `server.shutdown_grace_s`."""

    deadline: float | None = None

    def remaining(self, grace_s: float) -> float:
        import time

        if self.deadline is None:
            return grace_s
        return max(0.1, self.deadline - time.monotonic())


SETTINGS = web.AppKey("settings", Settings)
SHUTDOWN = web.AppKey("shutdown", Shutdown)
METRICS = web.AppKey("metrics", Metrics)
OBSERVER = web.AppKey("observer", Observer)
STORE = web.AppKey("store", Store)
UPSTREAM = web.AppKey("upstream", Upstream)
READY = web.AppKey("ready", asyncio.Event)
EMBEDDED_REDIS = web.AppKey("embedded_redis", EmbeddedRedis)
RUNTIME = web.AppKey("runtime", RuntimeState)
"""Settings changed at run time (the semantic threshold), shared by replicas through Redis."""
REDIS_URL = web.AppKey("redis_url", str)
SEMANTIC = web.AppKey("semantic", SemanticState)
LOOP_LAG = web.AppKey("loop_lag", LoopLag)
"""How late the event loop runs; Redis deadlines discount it (proxy/looplag.py)."""

REDIS_PROBE_S = 1.0
"""How often Redis is pinged to update the gauge and re-open the cache after an outage."""


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    lag = LoopLag()
    lag.start()
    app[LOOP_LAG] = lag
    try:
        yield
    finally:
        lag.stop()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = settings.redis.url
    embedded: EmbeddedRedis | None = None
    if url == "embedded":
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        await embedded.start()
        app[EMBEDDED_REDIS] = embedded
        url = embedded.url
    app[REDIS_URL] = url
    timeout_s = settings.redis.timeout_s
    hard_s = max(2.0, 8 * timeout_s)  # redis-py's timeouts run on the loop's clock
    client = open_client(url, cluster=settings.redis.cluster, socket_timeout=hard_s,
                         socket_connect_timeout=hard_s, max_connections=512)
    lag = app[LOOP_LAG]
    store = Store(client, prefix=settings.redis.key_prefix, retry_after_s=settings.redis.retry_after_s,
                  max_entries=settings.cache.max_entries, max_bytes=settings.cache.max_bytes,
                  deadline=lambda: lag.deadline(timeout_s))
    app[STORE] = store
    metrics = app[METRICS]

    async def probe() -> None:
        metrics.redis_up.set(1 if await store.ping() else 0)
        metrics.loop_late.set(lag.late_s())

    prober = Periodic(REDIS_PROBE_S, probe)
    prober.start()
    try:
        yield
    finally:
        await prober.stop()
        await close_client(client)
        if embedded is not None:
            await embedded.stop()


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    backend: BundledBackend | None = None
    base_url = settings.upstream.base_url
    if base_url == "bundled":
        backend = BundledBackend(settings)
        await backend.start()
        base_url = backend.base_url  # its port is known once it listens
    upstream = Upstream(base_url, settings.upstream)
    await upstream.open()
    app[UPSTREAM] = upstream
    try:
        yield
    finally:
        await upstream.close()
        if backend is not None:
            await backend.stop()
