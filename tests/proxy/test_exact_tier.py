"""The exact tier end to end: real Redis, the fake upstream as a real HTTP server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sse_helpers import stream_text

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE

CHAT = "/v1/chat/completions"


def chat(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": question}], **extra}


async def settle(proxy: Any) -> None:
    """Wait for the write-backs in flight (they run off the response path)."""
    await proxy.app[SERVICE].drain(5)


async def post(proxy: Any, body: dict[str, Any], path: str = CHAT, **headers: str) -> Any:
    resp = await proxy.post(path, json=body, headers=headers)
    data = await resp.read()
    await settle(proxy)
    return resp, data


async def test_miss_then_exact_hit(proxy: Any, upstream: FakeUpstream) -> None:
    first, body1 = await post(proxy, chat("What is the capital of France?"))
    second, body2 = await post(proxy, chat("What is the capital of France?"))
    assert first.status == second.status == 200
    assert first.headers["X-Semcache"] == "miss"
    assert second.headers["X-Semcache"] == "hit-exact"
    assert len(upstream.calls) == 1
    a, b = json.loads(body1), json.loads(body2)
    assert a["choices"] == b["choices"]
    assert b["choices"][0]["message"]["content"] == "answer to: What is the capital of France?"
    assert a["id"] != b["id"] and b["id"].startswith("chatcmpl-")
    assert second.headers["X-Semcache-Entry"]
    assert int(second.headers["Age"]) >= 0
    assert second.headers["X-Semcache-Similarity"] == "1.0000"


async def test_whitespace_and_text_parts_are_the_same_question(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("What is   the capital of France?"))
    parts = [{"type": "text", "text": " What is the capital of France? "}]
    resp, _ = await post(proxy, {"model": "fake-model", "messages": [{"role": "user", "content": parts}]})
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert len(upstream.calls) == 1


async def test_streaming_miss_then_streaming_hit(proxy: Any, upstream: FakeUpstream) -> None:
    body = chat("Tell me about Paris", stream=True)
    miss, raw_miss = await post(proxy, body)
    hit, raw_hit = await post(proxy, body)
    assert miss.headers["X-Semcache"] == "miss" and hit.headers["X-Semcache"] == "hit-exact"
    assert hit.headers["Content-Type"].startswith("text/event-stream")
    text_miss, _ = stream_text(raw_miss)
    text_hit, chunks = stream_text(raw_hit)
    assert text_hit == text_miss == "answer to: Tell me about Paris"
    assert len(upstream.calls) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


async def test_stream_hit_includes_usage_when_asked(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("usage please"))
    hit, raw = await post(proxy, chat("usage please", stream=True,
                                      stream_options={"include_usage": True}))
    assert hit.headers["X-Semcache"] == "hit-exact"
    _, chunks = stream_text(raw)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 10


async def test_entry_from_json_serves_stream_and_back(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("json first"))
    resp, raw = await post(proxy, chat("json first", stream=True))
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert stream_text(raw)[0] == "answer to: json first"
    await post(proxy, chat("stream first", stream=True))
    resp, raw = await post(proxy, chat("stream first"))
    assert resp.headers["X-Semcache"] == "hit-exact"
    message = json.loads(raw)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "answer to: stream first"}
    assert len(upstream.calls) == 2


async def test_completions_endpoint_both_forms(proxy: Any, upstream: FakeUpstream) -> None:
    body = {"model": "fake-model", "prompt": "Once upon a time", "max_tokens": 5}
    await post(proxy, body, "/v1/completions")
    resp, raw = await post(proxy, body, "/v1/completions")
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert json.loads(raw)["choices"][0]["text"] == "answer to: Once upon a time"
    resp, raw = await post(proxy, {**body, "stream": True}, "/v1/completions")
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert stream_text(raw)[0] == "answer to: Once upon a time"
    assert len(upstream.calls) == 1


async def test_tenants_never_share_entries(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("secret plans"), Authorization="Bearer key-A")
    other, raw = await post(proxy, chat("secret plans"), Authorization="Bearer key-B")
    none, _ = await post(proxy, chat("secret plans"))
    same, _ = await post(proxy, chat("secret plans"), Authorization="Bearer key-A")
    assert other.headers["X-Semcache"] == "miss"
    assert none.headers["X-Semcache"] == "miss"
    assert same.headers["X-Semcache"] == "hit-exact"
    assert len(upstream.calls) == 3
    # the credential reaches the upstream untouched
    assert upstream.headers_seen[1]["Authorization"] == "Bearer key-B"


async def test_parameters_model_and_context_change_the_scope(proxy: Any, upstream: FakeUpstream) -> None:
    q = "What are its types?"
    variants = [
        chat(q),
        chat(q, temperature=0.5),
        chat(q, max_tokens=10),
        chat(q, stop=["\n"]),
        chat(q, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        chat(q, response_format={"type": "json_object"}),
        {**chat(q), "model": "other-model"},
        {"model": "fake-model", "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": q}]},
        {"model": "fake-model", "messages": [
            {"role": "user", "content": "Tell me about inflation"},
            {"role": "assistant", "content": "Inflation is ..."},
            {"role": "user", "content": q}]},
        {"model": "fake-model", "messages": [
            {"role": "user", "content": "Tell me about diabetes"},
            {"role": "assistant", "content": "Diabetes is ..."},
            {"role": "user", "content": q}]},
    ]
    for body in variants:
        resp, _ = await post(proxy, body)
        assert resp.headers["X-Semcache"] == "miss", body
    assert len(upstream.calls) == len(variants)
    # each of them is now cached in its own scope
    for body in variants:
        resp, _ = await post(proxy, body)
        assert resp.headers["X-Semcache"] == "hit-exact", body
    # stream, stream_options and user do not change the answer
    resp, _ = await post(proxy, chat(q, temperature=0.5, stream=True, user="u1"))
    assert resp.headers["X-Semcache"] == "hit-exact"


async def test_upstream_errors_are_relayed_not_cached(proxy: Any, upstream: FakeUpstream) -> None:
    upstream.status = 500
    first, raw = await post(proxy, chat("failing"))
    assert first.status == 500 and json.loads(raw)["error"]["message"] == "upstream failure"
    second, _ = await post(proxy, chat("failing", stream=True))
    assert second.status == 500
    upstream.status = 429
    third, _ = await post(proxy, chat("failing"))
    assert third.status == 429
    upstream.status = 200
    fourth, _ = await post(proxy, chat("failing"))
    assert fourth.status == 200 and fourth.headers["X-Semcache"] == "miss"
    assert len(upstream.calls) == 4


async def test_stream_cut_midway_is_not_cached(proxy: Any, upstream: FakeUpstream) -> None:
    upstream.cut_stream_after = 3
    resp = await proxy.post(CHAT, json=chat("a long story", stream=True))
    try:
        raw = await resp.read()
    except Exception:  # the proxy cuts the client's connection too
        raw = b""
    assert b"[DONE]" not in raw
    await settle(proxy)
    upstream.cut_stream_after = None
    again, _ = await post(proxy, chat("a long story", stream=True))
    assert again.headers["X-Semcache"] == "miss"
    assert len(upstream.calls) == 2


async def test_cache_control_headers(proxy: Any, upstream: FakeUpstream) -> None:
    # no-store: answered, never stored
    await post(proxy, chat("q1"), **{"Cache-Control": "no-store"})
    resp, _ = await post(proxy, chat("q1"))
    assert resp.headers["X-Semcache"] == "miss"
    # no-cache: no lookup, but stored
    resp, _ = await post(proxy, chat("q1"), **{"Cache-Control": "no-cache"})
    assert resp.headers["X-Semcache"] == "miss"
    resp, _ = await post(proxy, chat("q1"))
    assert resp.headers["X-Semcache"] == "hit-exact"
    assert len(upstream.calls) == 3
    # max-age: only younger entries
    await asyncio.sleep(1.1)
    resp, _ = await post(proxy, chat("q1"), **{"Cache-Control": "max-age=0"})
    assert resp.headers["X-Semcache"] == "miss"
    resp, _ = await post(proxy, chat("q1"), **{"Cache-Control": "max-age=600"})
    assert resp.headers["X-Semcache"] == "hit-exact"


async def test_ttl_header_expires_entries(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("short lived"), **{"X-Semcache-TTL": "1"})
    resp, _ = await post(proxy, chat("short lived"))
    assert resp.headers["X-Semcache"] == "hit-exact"
    await asyncio.sleep(2.1)
    resp, _ = await post(proxy, chat("short lived"))
    assert resp.headers["X-Semcache"] == "miss"


async def test_namespace_narrows_the_scope(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("shared question"), **{"X-Semcache-Namespace": "app-1"})
    resp, _ = await post(proxy, chat("shared question"), **{"X-Semcache-Namespace": "app-2"})
    assert resp.headers["X-Semcache"] == "miss"
    resp, _ = await post(proxy, chat("shared question"), **{"X-Semcache-Namespace": "app-1"})
    assert resp.headers["X-Semcache"] == "hit-exact"


async def test_client_headers_reach_the_upstream(proxy: Any, upstream: FakeUpstream) -> None:
    await post(proxy, chat("hdr"), **{"OpenAI-Organization": "org-1", "X-Semcache-TTL": "60",
                                     "Cache-Control": "no-store"})
    seen = upstream.headers_seen[0]
    assert seen["OpenAI-Organization"] == "org-1"
    assert "X-Semcache-TTL" not in seen and "Cache-Control" not in seen
