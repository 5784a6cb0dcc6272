"""Fail open: Redis or the upstream failing never makes the proxy less available than the
upstream; errors map to 502/504; passthrough routes are relayed untouched."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from conftest import make_settings

from semcache.index.redis_server import EmbeddedRedis
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE, build_app

CHAT = "/v1/chat/completions"


def chat(q: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": q}], **extra}


async def ask(client: Any, body: dict[str, Any]) -> Any:
    resp = await client.post(CHAT, json=body)
    await resp.read()
    await client.app[SERVICE].drain(5)
    return resp


async def test_redis_killed_then_back(aiohttp_client: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    await redis.start()
    try:
        settings = make_settings(redis.url, upstream.base_url, tmp_path, redis__retry_after_s=0.2)
        client = await aiohttp_client(build_app(settings))
        assert (await ask(client, chat("before"))).headers["X-Semcache"] == "miss"
        assert (await ask(client, chat("before"))).headers["X-Semcache"] == "hit-exact"
        redis.kill()
        for _ in range(5):  # every request still answered, as a bypass
            resp = await ask(client, chat("during", stream=True))
            assert resp.status == 200 and resp.headers["X-Semcache"] == "bypass"
            assert resp.headers["X-Semcache-Reason"] == "redis-unavailable"
        await redis.start()  # same port, same append-only file
        await asyncio.sleep(1.3)  # the gate re-opens and the probe sees Redis again
        assert (await ask(client, chat("before"))).headers["X-Semcache"] == "hit-exact"
        assert (await ask(client, chat("after"))).headers["X-Semcache"] == "miss"
        assert (await ask(client, chat("after"))).headers["X-Semcache"] == "hit-exact"
        metrics = (await (await client.get("/metrics")).read()).decode()
        assert 'semcache_bypass_total{reason="redis-unavailable"} 5.0' in metrics
    finally:
        await redis.stop()


async def test_embedded_redis_keeps_entries_across_restarts(
    aiohttp_client: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = make_settings("embedded", upstream.base_url, tmp_path)
    first = await aiohttp_client(build_app(settings))
    assert (await ask(first, chat("persist me"))).headers["X-Semcache"] == "miss"
    await first.close()  # stops the embedded redis-server (flushes the append-only file)
    assert (tmp_path / "redis" / "appendonly.aof").exists() or (tmp_path / "redis" / "appendonlydir").exists()
    second = await aiohttp_client(build_app(settings))
    assert (await ask(second, chat("persist me"))).headers["X-Semcache"] == "hit-exact"
    assert len(upstream.calls) == 1


async def test_upstream_unreachable_is_502(aiohttp_client: Any, redis_url: str, tmp_path: Path) -> None:
    from semcache.index.redis_server import free_port

    settings = make_settings(redis_url, f"http://127.0.0.1:{free_port()}/v1", tmp_path)
    client = await aiohttp_client(build_app(settings))
    resp = await client.post(CHAT, json=chat("anyone there?"), headers={"X-Request-Id": "rid-502"})
    assert resp.status == 502
    assert json.loads(await resp.read())["error"]["type"] == "upstream_error"
    # the proxy's own error says what the cache did, like any of its answers
    assert resp.headers["X-Semcache"] == "miss" and resp.headers["X-Request-Id"] == "rid-502"
    assert resp.headers["X-Semcache-Reason"] == "exact-only"
    resp = await client.get("/v1/models")  # the passthrough
    assert resp.status == 502 and resp.headers["X-Semcache"] == "bypass"
    assert resp.headers["X-Semcache-Reason"] == "upstream-unreachable"
    assert resp.headers["X-Request-Id"].startswith("req-")


async def test_upstream_timeout_is_504(aiohttp_client: Any, upstream: FakeUpstream, redis_url: str,
                                       tmp_path: Path) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path, upstream__timeout_s=0.3)
    client = await aiohttp_client(build_app(settings))
    upstream.delay_s = 1.0
    resp = await client.post(CHAT, json=chat("slow"))
    assert resp.status == 504
    assert json.loads(await resp.read())["error"]["type"] == "upstream_error"
    assert resp.headers["X-Semcache"] == "miss" and resp.headers["X-Request-Id"].startswith("req-")
    upstream.delay_s = 0.0
    assert (await ask(client, chat("slow"))).headers["X-Semcache"] == "miss"


async def test_passthrough_is_untouched(proxy: Any, upstream: FakeUpstream) -> None:
    resp = await proxy.get("/v1/models")
    assert resp.status == 200 and resp.headers["X-Upstream"] == "yes"
    assert json.loads(await resp.read())["data"][0]["id"] == "fake-model"
    resp = await proxy.put("/v1/echo/files/abc?purpose=x&y=1", data=b"raw bytes",
                           headers={"Authorization": "Bearer k", "X-Custom": "1"})
    echo = json.loads(await resp.read())
    assert echo["method"] == "PUT" and echo["path"] == "/v1/echo/files/abc"
    assert echo["query"] == "purpose=x&y=1" and echo["body"] == "raw bytes"
    assert echo["headers"]["Authorization"] == "Bearer k" and echo["headers"]["X-Custom"] == "1"
    resp = await proxy.delete("/v1/echo/thing?status=404")
    assert resp.status == 404
    resp = await proxy.get("/v1/sse")
    raw = await resp.read()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert raw.count(b"data: ") == 6 and raw.endswith(b"data: [DONE]\n\n")


async def test_passthrough_refuses_path_traversal(proxy: Any, upstream: FakeUpstream) -> None:
    from yarl import URL

    base = str(proxy.make_url("/")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/echo/../../admin", "/v1/echo/%2e%2e/%2e%2e/secret", "/v1/echo/..%2f..%2fx",
                     "/v1/..%5c..%5cx"):
            # encoded=True: the path goes on the wire as written, not normalised by the client
            async with session.get(URL(base + path, encoded=True)) as resp:
                body = await resp.read()
                if resp.status == 200:  # only ever the upstream's own /v1 tree
                    assert json.loads(body)["path"].startswith("/v1/echo"), path
                else:
                    assert resp.status in (400, 404), path
                    assert "error" in json.loads(body)
    assert all(not c.get("path", "/v1").startswith("/admin") for c in upstream.calls)


async def test_client_disconnect_mid_stream_stores_nothing(
    proxy: Any, upstream: FakeUpstream
) -> None:
    upstream.words_per_answer = 200
    upstream.chunk_delay_s = 0.01
    url = proxy.make_url(CHAT)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=chat("walk away", stream=True)) as resp:
            await resp.content.readany()
        # leaving the block closes the connection mid-stream
    for _ in range(100):
        if upstream.streams_cancelled or upstream.streams_finished:
            break
        await asyncio.sleep(0.05)
    await proxy.app[SERVICE].drain(5)
    assert upstream.streams_cancelled == 1 and upstream.streams_finished == 0
    upstream.chunk_delay_s = 0.0
    resp = await ask(proxy, chat("walk away", stream=True))
    assert resp.headers["X-Semcache"] == "miss"


async def test_health_and_readiness(proxy: Any) -> None:
    assert (await proxy.get("/healthz")).status == 200
    resp = await proxy.get("/readyz")
    assert resp.status == 200 and json.loads(await resp.read())["ready"] is True
