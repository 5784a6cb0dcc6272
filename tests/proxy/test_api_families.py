"""The API families' upstreams and the body cache controls, against real fake upstreams."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from conftest import make_settings
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from semcache.index.store import Entry
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.apis import APIS
from semcache.proxy.app import SERVICE, build_app
from semcache.proxy.policy import entry_id, scope_of
from semcache.proxy.resources import STORE

ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"Authorization": "Bearer sk-1"}


async def test_messages_go_to_the_anthropic_base_url(aiohttp_client: Any, aiohttp_server: Any,
                                                     redis_url: str, upstream: FakeUpstream,
                                                     tmp_path: Path) -> None:
    anthropic = FakeUpstream()
    server = await aiohttp_server(anthropic.app())
    settings = make_settings(redis_url, upstream.base_url, tmp_path,
                             upstream__anthropic_base_url=f"http://127.0.0.1:{server.port}/v1")
    proxy = await aiohttp_client(build_app(settings))
    body = {**ASK, "max_tokens": 10}
    resp = await proxy.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert resp.status == 200 and resp.headers["X-Semcache"] == "miss"
    resp = await proxy.post("/v1/chat/completions", json=ASK, headers=HEADERS)
    assert resp.status == 200
    # Anthropic's other routes (token counting) go there too, passed through
    resp = await proxy.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": "k"})
    assert resp.headers["X-Semcache-Reason"] == "not-cached-route"
    assert [len(anthropic.calls), len(upstream.calls)] == [1, 1]
    assert resp.status == 404  # the fake has no such route: what matters is where it went
    await proxy.app[SERVICE].drain(5)


async def test_body_controls_and_headers_must_agree(proxy: Any, upstream: FakeUpstream) -> None:
    resp = await proxy.post("/v1/chat/completions", json={**ASK, "cache": {"ttl": 60}},
                            headers={**HEADERS, "X-Semcache-TTL": "120"})
    assert resp.status == 400 and "disagree" in (await resp.json())["error"]["message"]
    resp = await proxy.post("/v1/chat/completions", json={**ASK, "cache": True}, headers=HEADERS)
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "cache"
    resp = await proxy.post("/v1/chat/completions",
                            json={**ASK, "cache": {"namespace": "bad name!"}}, headers=HEADERS)
    assert resp.status == 400
    assert upstream.calls == []
    resp = await proxy.post("/v1/chat/completions", json={**ASK, "cache": {"ttl": 60}},
                            headers={**HEADERS, "X-Semcache-TTL": "60"})
    assert resp.status == 200 and "cache" not in upstream.calls[0]
    await proxy.app[SERVICE].drain(5)


async def test_an_entry_another_format_cannot_say_is_a_miss(proxy: Any,
                                                            upstream: FakeUpstream) -> None:
    """A chat answer of tool calls, in the scope a plain Responses request shares with chat,
    is not served to it (a `response` cannot carry it as the text it asked for)."""
    service = proxy.app[SERVICE]
    body = {"model": "m", "input": "Weather in Paris?"}
    tenant, _ = service.tenancy.resolve(CIMultiDictProxy(CIMultiDict(HEADERS)),
                                        MultiDictProxy(MultiDict()))
    req = APIS["responses"].parse(body)
    scope = scope_of(req, tenant, "")
    calls = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "t", "type": "function",
                            "function": {"name": "weather", "arguments": "{}"}}]}}]}
    await proxy.app[STORE].put(Entry(
        id=entry_id(scope, req), scope=scope.id, tenant=tenant, namespace="", endpoint="chat",
        model="m", query="Weather in Paris?", response=orjson.dumps(calls), created=time.time(),
        ttl_s=60))
    chat = await proxy.post("/v1/chat/completions", headers=HEADERS, json={
        "model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    assert chat.headers["X-Semcache"] == "hit-exact"  # the entry is there, in that scope
    resp = await proxy.post("/v1/responses", json=body, headers=HEADERS)
    assert resp.status == 200 and resp.headers["X-Semcache"] == "miss"
    assert resp.headers["X-Semcache-Reason"] == "other-format"
    assert (await resp.json())["output"][0]["content"][0]["text"] == "answer to: Weather in Paris?"
    assert len(upstream.calls) == 1
    await service.drain(5)


async def test_an_embeddings_answer_that_does_not_fit_is_never_stored(
        proxy: Any, upstream: FakeUpstream) -> None:
    ask = {"model": "e", "input": ["a", "b"]}
    upstream.short_embeddings = True
    resp = await proxy.post("/v1/embeddings", json=ask, headers=HEADERS)
    assert resp.status == 200 and len((await resp.json())["data"]) == 1  # relayed as it is
    upstream.short_embeddings = False
    await proxy.app[SERVICE].drain(5)
    resp = await proxy.post("/v1/embeddings", json={**ask, "input": ["a"]}, headers=HEADERS)
    assert resp.headers["X-Semcache"] == "miss"  # nothing was stored
    await proxy.app[SERVICE].drain(5)
    upstream.short_embeddings = True  # "a" cached: "b" alone goes, and cannot be merged
    resp = await proxy.post("/v1/embeddings", json=ask, headers=HEADERS)
    assert resp.status == 502 and resp.headers["X-Semcache-Reason"] == "partial"
    assert upstream.calls[-1]["input"] == ["b"]
