"""The aiohttp application: typed state under AppKeys, opened and closed in cleanup contexts.

Start-up order: metrics -> Redis (embedded or external) -> upstream (bundled or a URL) ->
the cache service. Nothing here touches the network at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from semcache.index.redis_server import EmbeddedRedis
from semcache.index.store import Store

from . import admin, routes
from .bundled import BundledBackend
from .config import Settings
from .errors import error_middleware
from .events import Observer
from .metrics import Metrics
from .runtime import RuntimeState
from .serving import CacheService
from .upstream import Upstream

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
OBSERVER = web.AppKey("observer", Observer)
STORE = web.AppKey("store", Store)
UPSTREAM = web.AppKey("upstream", Upstream)
SERVICE = web.AppKey("service", CacheService)
READY = web.AppKey("ready", asyncio.Event)
EMBEDDED_REDIS = web.AppKey("embedded_redis", EmbeddedRedis)
RUNTIME = web.AppKey("runtime", RuntimeState)
"""Settings changed at run time (the semantic threshold), shared by replicas through Redis."""

REDIS_PROBE_S = 1.0
"""How often Redis is pinged to update the gauge and re-open the cache after an outage."""


def build_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        # One byte over the limit lets read_json tell "too large" from "exactly the limit".
        client_max_size=settings.server.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[OBSERVER] = Observer(app[METRICS])
    app[READY] = asyncio.Event()
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(admin.admin_ctx)  # RUNTIME exists before the service is built
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_service_ctx)
    routes.add_routes(app)
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = settings.redis.url
    embedded: EmbeddedRedis | None = None
    if url == "embedded":
        embedded = EmbeddedRedis(settings.data_dir / "redis")
        await embedded.start()
        app[EMBEDDED_REDIS] = embedded
        url = embedded.url
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=settings.redis.timeout_s,
        socket_connect_timeout=settings.redis.timeout_s,
        max_connections=512,
    )
    store = Store(client, prefix=settings.redis.key_prefix, retry_after_s=settings.redis.retry_after_s)
    app[STORE] = store
    probe = asyncio.create_task(_probe_redis(store, app[METRICS]))
    try:
        yield
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        await client.aclose()
        if embedded is not None:
            await embedded.stop()


async def _probe_redis(store: Store, metrics: Metrics) -> None:
    while True:
        metrics.redis_up.set(1 if await store.ping() else 0)
        await asyncio.sleep(REDIS_PROBE_S)


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    backend: BundledBackend | None = None
    base_url = settings.upstream.base_url
    if base_url == "bundled":
        backend = BundledBackend(settings)
        base_url = backend.base_url
        await backend.start()
    upstream = Upstream(base_url, settings.upstream)
    await upstream.open()
    app[UPSTREAM] = upstream
    try:
        yield
    finally:
        await upstream.close()
        if backend is not None:
            await backend.stop()


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    service = CacheService(settings, app[STORE], app[UPSTREAM], app[OBSERVER])
    app[SERVICE] = service
    app[READY].set()
    try:
        yield
    finally:
        app[READY].clear()
        await service.drain(settings.server.shutdown_grace_s)
