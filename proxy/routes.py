"""Thin routes: each one only dispatches to the module that does the work."""

from __future__ import annotations

import orjson
from aiohttp import web

from . import resources as state
from .admin.auth import authorize_metrics
from .passthrough import relay
from .pipeline.service import SERVICE


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICE].handle(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICE].handle(request, "completions")


async def responses(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICE].handle(request, "responses")


async def messages(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICE].handle(request, "messages")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await request.app[SERVICE].embeddings.handle(request)


async def passthrough(request: web.Request) -> web.StreamResponse:
    return await relay(request, request.app[state.UPSTREAM])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    settings = app[state.SETTINGS]
    semantic_wanted = settings.cache.enabled and settings.cache.semantic
    semantic = app[state.SEMANTIC]
    semantic_ready = semantic.ready.is_set()
    # Not ready until the semantic tier has loaded: a replica that could only forward
    # would take its share of traffic and answer none of it from the cache.
    ready = app[state.READY].is_set() and (semantic_ready or not semantic_wanted)
    body = {
        "ready": ready,
        "redis": app[state.STORE].available if state.STORE in app else False,
        "semantic": semantic_ready,
        "encoder_healthy": semantic.embeddings.healthy if semantic.embeddings else None,
    }
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )


async def metrics(request: web.Request) -> web.Response:
    server = request.app[state.SETTINGS].server
    authorize_metrics(server.admin_token, server.metrics_token, request.headers.get("Authorization"))
    return web.Response(
        body=request.app[state.METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_route("*", "/v1/{tail:.*}", passthrough)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
