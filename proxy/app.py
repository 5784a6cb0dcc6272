"""The aiohttp application: typed state under AppKeys, opened and closed in cleanup contexts.

Start-up order: metrics -> the loop-lag monitor (Redis deadlines discount the loop's
lateness) -> Redis (embedded or external) -> admin state (run-time settings, time series) ->
upstream (bundled or a URL) -> the cache pipeline (its tenant secret read from Redis, or
retried every second until Redis answers) -> the semantic tier and
the judge's pair model, which load in the background (encoder, index rebuild, model) while
the exact tier already serves. Nothing here touches the network at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from semcache.embeddings.service import EmbeddingService
from semcache.index.connect import close_client, open_client
from semcache.index.sync import IndexSync
from semcache.index.vectors import VectorIndex

from . import admin, gc_tuning, routes
from .config import Settings
from .errors import error_middleware
from .events import Observer
from .judge.model import open_default
from .judge.observations import SCOPE_REFRESH_S
from .metrics import Metrics
from .pipeline.replay import HIT_FLUSH_S
from .pipeline.service import SERVICE, CacheService
from .resources import (
    EMBEDDED_REDIS,
    METRICS,
    OBSERVER,
    READY,
    REDIS_PROBE_S,
    REDIS_URL,
    RUNTIME,
    SEMANTIC,
    SETTINGS,
    SHUTDOWN,
    STORE,
    UPSTREAM,
    SemanticState,
    Shutdown,
    loop_lag_ctx,
    redis_ctx,
    upstream_ctx,
)
from .runtime import Periodic
from .semantic import SemanticTier

__all__ = ["EMBEDDED_REDIS", "METRICS", "OBSERVER", "READY", "REDIS_URL", "RUNTIME", "SEMANTIC",
           "SERVICE", "SETTINGS", "STORE", "UPSTREAM", "build_app"]

log = logging.getLogger(__name__)


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
    app[SHUTDOWN] = Shutdown()
    app.cleanup_ctx.append(loop_lag_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(admin.admin_ctx)  # RUNTIME exists before the service is built
    app.cleanup_ctx.append(upstream_ctx)
    app.cleanup_ctx.append(_service_ctx)
    app.cleanup_ctx.append(_semantic_ctx)
    routes.add_routes(app)
    admin.add_routes(app)
    return app


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    service = CacheService(settings, app[STORE], app[UPSTREAM], app[OBSERVER], app.get(RUNTIME))
    app[SERVICE] = service
    await service.tenancy.load_secret(app[STORE])
    secret = Periodic(REDIS_PROBE_S, lambda: service.tenancy.load_secret(app[STORE]))
    secret.start()  # read as soon as Redis answers, if it did not at start
    hit_flusher = Periodic(HIT_FLUSH_S, service.hits.flush)
    hit_flusher.start()
    pools = Periodic(SCOPE_REFRESH_S, service.observations.refresh)  # adaptive thresholds
    pools.start()
    app[READY].set()
    try:
        yield
    finally:
        app[READY].clear()
        await pools.stop()
        await hit_flusher.stop()
        await secret.stop()
        # what is left of the grace after the handlers (flushes the last hit counts too)
        await service.drain(app[SHUTDOWN].remaining(settings.server.shutdown_grace_s))


async def _semantic_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not (settings.cache.enabled and settings.cache.semantic):
        yield
        return
    loaders = [asyncio.create_task(_start_semantic(app))]
    if settings.judge.model:
        loaders.append(asyncio.create_task(_start_pair_model(app)))
    try:
        yield
    finally:
        for loader in loaders:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loader
        service = app[SERVICE]
        service.semantic = None
        model, service.pair_model = service.pair_model, None
        if model is not None:
            await model.close()
        state = app[SEMANTIC]
        if state.tier is not None:
            await state.tier.stop()
            await close_client(state.tier.sync.tail_client)
        if state.embeddings is not None and state.given_embeddings is None:
            await state.embeddings.close()


async def _start_pair_model(app: web.Application) -> None:
    """Load the judge's pair model; until it is there, nothing under `judge.threshold` is
    served. A model that cannot load leaves the proxy running without it (the same bar)."""
    settings = app[SETTINGS]
    try:
        model = await open_default(settings.judge, settings.data_dir, settings.embeddings.device)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.error("pair model not loaded (%s: %s); semantic hits need similarity >= %.2f and "
                  "the checks", type(e).__name__, e, settings.judge.threshold)
        return
    app[SERVICE].pair_model = model
    log.info("pair model ready: %s", model.model.describe())


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
            tail_client = open_client(app[REDIS_URL], cluster=settings.redis.cluster,
                                      socket_timeout=5.0, socket_connect_timeout=2.0)
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
