"""The aiohttp application: typed state under AppKeys, opened and closed in cleanup contexts.

Start-up order: metrics -> Redis (embedded or external) -> upstream (bundled or a URL) ->
the cache service -> the semantic tier, which loads in the background (encoder, index
rebuild) while the exact tier already serves. Nothing here touches the network at import
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from semcache.embeddings.service import EmbeddingService
from semcache.index.redis_server import EmbeddedRedis
from semcache.index.store import Store
from semcache.index.sync import IndexSync
from semcache.index.vectors import VectorIndex

from . import admin, gc_tuning, routes
from .adaptive import SCOPE_REFRESH_S
from .bundled import BundledBackend
from .config import Settings
from .errors import error_middleware
from .events import Observer
from .metrics import Metrics
from .runtime import Periodic, RuntimeState
from .semantic import SemanticTier
from .serving import HIT_FLUSH_S, CacheService
from .upstream import Upstream
from .verifier import VerifierService

log = logging.getLogger(__name__)

@dataclass
class SemanticState:
    """The semantic tier's parts, filled in once they have loaded (after the app started)."""

    given_embeddings: EmbeddingService | None = None
    """An encoder passed to build_app (tests); not closed by the app."""
    embeddings: EmbeddingService | None = None
    index: VectorIndex | None = None
    tier: SemanticTier | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


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
REDIS_URL = web.AppKey("redis_url", str)
SEMANTIC = web.AppKey("semantic", SemanticState)



REDIS_PROBE_S = 1.0
"""How often Redis is pinged to update the gauge and re-open the cache after an outage."""


def build_app(settings: Settings, *, embeddings: EmbeddingService | None = None) -> web.Application:
    """The proxy. `embeddings` replaces the configured encoder (tests pass a fake one)."""
    app = web.Application(
        middlewares=[error_middleware],
        # One byte over the limit lets read_json tell "too large" from "exactly the limit".
        client_max_size=settings.server.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[OBSERVER] = Observer(app[METRICS])
    app[READY] = asyncio.Event()
    app[SEMANTIC] = SemanticState(given_embeddings=embeddings)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(admin.admin_ctx)  # RUNTIME exists before the service is built
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_service_ctx)
    app.cleanup_ctx.append(_semantic_ctx)
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
    app[REDIS_URL] = url
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=settings.redis.timeout_s,
        socket_connect_timeout=settings.redis.timeout_s,
        max_connections=512,
    )
    store = Store(client, prefix=settings.redis.key_prefix, retry_after_s=settings.redis.retry_after_s,
                  max_entries=settings.cache.max_entries)
    app[STORE] = store
    metrics = app[METRICS]

    async def probe() -> None:
        metrics.redis_up.set(1 if await store.ping() else 0)

    prober = Periodic(REDIS_PROBE_S, probe)
    prober.start()
    try:
        yield
    finally:
        await prober.stop()
        await client.aclose()
        if embedded is not None:
            await embedded.stop()


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
    service = CacheService(settings, app[STORE], app[UPSTREAM], app[OBSERVER], app.get(RUNTIME))
    app[SERVICE] = service
    hit_flusher = Periodic(HIT_FLUSH_S, service.flush_hits)
    hit_flusher.start()
    pools = Periodic(SCOPE_REFRESH_S, service.adaptive.refresh)  # adaptive thresholds' scopes
    pools.start()
    app[READY].set()
    try:
        yield
    finally:
        app[READY].clear()
        await pools.stop()
        await hit_flusher.stop()
        await service.drain(settings.server.shutdown_grace_s)  # flushes the last hit counts


async def _semantic_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not (settings.cache.enabled and settings.cache.semantic):
        yield
        return
    loaders = [asyncio.create_task(_start_semantic(app))]
    if settings.cache.verifier:
        loaders.append(asyncio.create_task(_start_verifier(app)))
    try:
        yield
    finally:
        for loader in loaders:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loader
        app[SERVICE].semantic = None
        verifier, app[SERVICE].verifier = app[SERVICE].verifier, None
        if verifier is not None:
            verifier.close()
        state = app[SEMANTIC]
        if state.tier is not None:
            await state.tier.stop()
            await state.tier.sync.tail_client.aclose()
        if state.embeddings is not None and state.given_embeddings is None:
            await state.embeddings.close()


async def _start_verifier(app: web.Application) -> None:
    """Load the cross-encoder verifier; until it is there, the configured threshold and the
    checks decide alone. A verifier that cannot load leaves the proxy running without it."""
    settings = app[SETTINGS]
    folder = Path(settings.cache.verifier_path) if settings.cache.verifier_path else None
    try:
        verifier = await VerifierService.open(folder, device=settings.embeddings.device)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.error("verifier not loaded (%s: %s); semantic hits use the threshold and checks only",
                  type(e).__name__, e)
        return
    app[SERVICE].verifier = verifier
    log.info("verifier ready")


async def _start_semantic(app: web.Application) -> None:
    """Load the encoder and rebuild the index; retried until it works (fail open meanwhile)."""
    settings, state = app[SETTINGS], app[SEMANTIC]
    delay = 1.0
    while True:
        try:
            if state.embeddings is None:
                state.embeddings = state.given_embeddings or await EmbeddingService.open(
                    settings.embeddings, settings.data_dir
                )
            embeddings = state.embeddings
            index = VectorIndex(embeddings.dim, settings.index)
            tail_client = aioredis.Redis.from_url(app[REDIS_URL], socket_timeout=5.0,
                                                  socket_connect_timeout=2.0)
            tier = SemanticTier(embeddings, index, IndexSync(app[STORE], index, tail_client),
                                offload_min_entries=settings.index.offload_min_entries)
            await tier.start()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("semantic tier not available yet (%s: %s); retrying in %.0f s",
                        type(e).__name__, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        state.index, state.tier = index, tier
        app[SERVICE].semantic = tier
        state.ready.set()
        log.info("semantic tier ready: %s, %d vectors", embeddings.describe(), len(index))
        gc_tuning.tune_gc()  # start-up has loaded what lives as long as the process
        return
