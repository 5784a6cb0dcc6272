"""Every admin operation against a real Redis, with traffic through the proxy."""

from __future__ import annotations

import asyncio
from typing import Any

from admin.admin_helpers import api, ask
from conftest import make_settings

from semcache.embeddings.fake import HashEncoder
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings
from semcache.index.keys import shard_of
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.admin import ADMIN
from semcache.proxy.app import RUNTIME, STORE, build_app
from semcache.proxy.runtime import RuntimeState


async def test_stats_and_timeseries_follow_traffic(proxy: Any, upstream: FakeUpstream) -> None:
    await ask(proxy, "What is the capital of France?")
    for _ in range(3):
        await ask(proxy, "What is the capital of France?")
    await ask(proxy, "uncached", **{"Cache-Control": "no-cache"})
    stats = await api(proxy, "GET", "stats?minutes=5")
    w = stats["window"]
    assert w["requests"] == {"hit-exact": 3, "hit-semantic": 0, "miss": 2, "bypass": 0}
    assert w["hit_rate"] == 3 / 5
    assert w["latency"]["hit"]["p50"] > 0 and w["latency"]["miss"]["p50"] > 0
    assert w["tokens_saved"]["prompt"] == 30  # the fake upstream reports 10 prompt tokens
    assert w["similarity"]["counts"]["hit-exact"][-1] == 3
    assert stats["totals"]["n:hit-exact"] == 3
    assert stats["inventory"]["entries"] == 2 and stats["inventory"]["entry_bytes"] > 0
    assert stats["inventory"]["redis_used_memory"] > 0
    top = stats["top_entries"]
    assert top[0]["query"] == "What is the capital of France?" and top[0]["hits"] == 3
    assert stats["redis_up"] is True
    series = await api(proxy, "GET", "timeseries?minutes=3")
    assert len(series["points"]) == 3
    assert series["points"][-1]["requests"]["hit-exact"] == 3
    assert series["points"][0]["total"] == 0
    await api(proxy, "GET", "timeseries?minutes=0", expect=400)
    await api(proxy, "GET", "timeseries?minutes=abc", expect=400)
    recent = (await api(proxy, "GET", "recent?limit=2"))["events"]
    assert [e["outcome"] for e in recent] == ["miss", "hit-exact"]  # newest first


async def test_time_series_is_shared_through_redis(proxy: Any, aiohttp_client: Any, settings: Any) -> None:
    """A second replica on the same Redis sees the first one's traffic."""
    other = await aiohttp_client(build_app(settings))
    await ask(proxy, "shared question")
    await ask(other, "shared question")
    for client in (proxy, other):
        w = (await api(client, "GET", "stats"))["window"]
        assert w["requests"]["miss"] == 1 and w["requests"]["hit-exact"] == 1


async def test_entries_list_filter_and_one_in_full(proxy: Any) -> None:
    await ask(proxy, "alpha question", Authorization="Bearer key-a")
    await ask(proxy, "beta question", Authorization="Bearer key-b", **{"X-Semcache-Namespace": "docs"})
    await ask(proxy, "gamma", Authorization="Bearer key-b")
    listed = (await api(proxy, "GET", "entries"))["entries"]
    assert {e["query"] for e in listed} == {"alpha question", "beta question", "gamma"}
    assert (await api(proxy, "GET", "entries"))["cursor"] is None
    found = (await api(proxy, "GET", "entries?q=QUESTION"))["entries"]
    assert {e["query"] for e in found} == {"alpha question", "beta question"}
    beta = next(e for e in found if e["query"] == "beta question")
    by_tenant = (await api(proxy, "GET", f"entries?tenant={beta['tenant']}"))["entries"]
    assert {e["query"] for e in by_tenant} == {"beta question", "gamma"}
    by_ns = (await api(proxy, "GET", "entries?namespace=docs"))["entries"]
    assert [e["query"] for e in by_ns] == ["beta question"]
    assert (await api(proxy, "GET", "entries?model=other"))["entries"] == []
    assert len((await api(proxy, "GET", "entries?limit=1"))["entries"]) == 1
    ignored = await api(proxy, "GET", "entries?similar_to=alpha")
    assert "similar_to_ignored" in ignored  # no embedding service in this proxy
    full = await api(proxy, "GET", f"entries/{beta['id']}")
    assert full["response"]["choices"][0]["message"]["content"] == "answer to: beta question"
    assert full["hits"] == 0 and full["namespace"] == "docs"
    assert 0 < full["ttl_left_s"] <= full["ttl_s"] and full["age_s"] >= 0
    await api(proxy, "GET", "entries/0123456789abcdef", expect=404)
    await api(proxy, "GET", "entries/bad*id", expect=400)


async def test_similar_to_ranks_by_meaning(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream,
                                           tmp_path: Any) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path, cache__semantic=True)
    service = EmbeddingService.from_encoder(HashEncoder(), EmbeddingSettings())
    proxy = await aiohttp_client(build_app(settings, embeddings=service))
    from semcache.proxy.admin.api import component

    for _ in range(200):
        if component(proxy.app, "embeddings") is not None:
            break
        await asyncio.sleep(0.02)
    assert component(proxy.app, "embeddings") is not None
    for q in ("how to bake bread at home", "the capital city of france", "learn python programming"):
        await ask(proxy, q)
    found = (await api(proxy, "GET", "entries?similar_to=bake+bread+at+home"))["entries"]
    assert found[0]["query"] == "how to bake bread at home"
    assert found[0]["similarity"] > found[1]["similarity"]


async def test_delete_entry_makes_the_next_request_a_miss(proxy: Any, upstream: FakeUpstream) -> None:
    first = await ask(proxy, "delete me")
    entry_id = (await api(proxy, "GET", "entries?q=delete"))["entries"][0]["id"]
    assert (await ask(proxy, "delete me")).headers["X-Semcache-Entry"] == entry_id
    assert (await api(proxy, "DELETE", f"entries/{entry_id}"))["deleted"] == entry_id
    await api(proxy, "DELETE", f"entries/{entry_id}", expect=404)
    assert first.headers["X-Semcache"] == "miss"
    assert (await ask(proxy, "delete me")).headers["X-Semcache"] == "miss"
    # the deletion is announced on the stream every replica's index tails
    store = proxy.app[STORE]
    events = await store.client.xrange(store.keys.stream(shard_of(entry_id)))
    assert any(f[b"op"] == b"del" and f[b"id"].decode() == entry_id for _, f in events)


async def test_flush_by_tenant_and_namespace(proxy: Any) -> None:
    await ask(proxy, "a1", Authorization="Bearer key-a")
    await ask(proxy, "a2", Authorization="Bearer key-a", **{"X-Semcache-Namespace": "ns"})
    await ask(proxy, "b1", Authorization="Bearer key-b", **{"X-Semcache-Namespace": "ns"})
    tenant_a = next(e["tenant"] for e in (await api(proxy, "GET", "entries?q=a1"))["entries"])
    await api(proxy, "POST", "flush", {}, expect=400)
    await api(proxy, "POST", "flush", {"tenant": ""}, expect=400)
    gone = await api(proxy, "POST", "flush", {"tenant": tenant_a, "namespace": "ns"})
    assert gone["deleted"] == 1
    assert {e["query"] for e in (await api(proxy, "GET", "entries"))["entries"]} == {"a1", "b1"}
    assert (await api(proxy, "POST", "flush", {"namespace": "ns"}))["deleted"] == 1
    assert (await api(proxy, "POST", "flush", {"tenant": tenant_a}))["deleted"] == 1
    assert (await api(proxy, "GET", "entries"))["entries"] == []
    assert (await ask(proxy, "a1", Authorization="Bearer key-a")).headers["X-Semcache"] == "miss"


async def test_threshold_is_set_at_run_time_for_every_replica(proxy: Any, aiohttp_client: Any,
                                                              settings: Any) -> None:
    other = await aiohttp_client(build_app(settings))
    assert (await api(proxy, "GET", "threshold"))["threshold"] is None
    body = await api(proxy, "PUT", "threshold", {"threshold": 0.8})
    assert body["threshold"] == 0.8 and body["configured"] == settings.judge.threshold
    assert proxy.app[RUNTIME].threshold == 0.8
    runtime: RuntimeState = other.app[RUNTIME]
    await runtime.refresh()  # what its 2-second loop does
    assert runtime.threshold == 0.8
    third = await aiohttp_client(build_app(settings))  # a replica started later reads it at start
    assert third.app[RUNTIME].threshold == 0.8
    for bad in (1.5, -0.1, "0.8", True):
        await api(proxy, "PUT", "threshold", {"threshold": bad}, expect=400)
    await api(proxy, "PUT", "threshold", {}, expect=400)
    assert (await api(proxy, "PUT", "threshold", {"threshold": None}))["threshold"] is None
    await runtime.refresh()
    assert runtime.threshold is None


async def test_feedback_by_entry_id_removes_the_entry(proxy: Any) -> None:
    await ask(proxy, "wrong answer")
    hit = await ask(proxy, "wrong answer")
    entry_id = hit.headers["X-Semcache-Entry"]
    # No similarity known (no request id): the entry goes, as for any exact hit.
    body = await api(proxy, "POST", "feedback", {"entry_id": entry_id, "reason": "off topic"})
    assert body == {"entry_id": entry_id, "request_id": None, "result": "removed", "removed": True,
                    "similarity": None, "threshold": None}
    again = await api(proxy, "POST", "feedback", {"entry_id": entry_id})
    assert again["removed"] is False and again["result"] == "already-gone"  # counted all the same
    assert (await ask(proxy, "wrong answer")).headers["X-Semcache"] == "miss"
    reports = (await api(proxy, "GET", "feedback"))["reports"]  # newest first
    assert reports[-1]["reason"] == "off topic" and reports[-1]["query"] == "wrong answer"
    assert reports[0]["result"] == "already-gone"
    await proxy.app[ADMIN].series.flush()
    stats = await api(proxy, "GET", "stats")
    assert stats["window"]["feedback"] == 2 and stats["totals"]["feedback"] == 2
    await api(proxy, "POST", "feedback", {}, expect=400)
    await api(proxy, "POST", "feedback", {"request_id": "req-unknown"}, expect=404)
    await api(proxy, "POST", "feedback", {"entry_id": entry_id, "reason": 5}, expect=400)
    for bad in ({"similarity": 1.5}, {"similarity": "0.9"}, {"correct": "yes"}, {"remove": 1},
                {"correct": True, "remove": True},
                {"correct": True}):  # a confirmed hit needs its similarity
        await api(proxy, "POST", "feedback", {"entry_id": entry_id, **bad}, expect=400)


async def test_feedback_by_request_id_through_another_replica(proxy: Any, aiohttp_client: Any,
                                                              settings: Any) -> None:
    other = await aiohttp_client(build_app(settings))
    await ask(proxy, "reported later")
    hit = await ask(proxy, "reported later", **{"X-Request-Id": "req-wrong-1"})
    assert hit.headers["X-Semcache"] == "hit-exact"
    # `other` never saw the request: it resolves the id through Redis
    body = await api(other, "POST", "feedback", {"request_id": "req-wrong-1", "reason": "stale"})
    assert body["removed"] is True and body["entry_id"] == hit.headers["X-Semcache-Entry"]
    assert body["similarity"] == 1.0  # an exact hit: the entry itself is wrong, so it goes
    assert (await ask(proxy, "reported later")).headers["X-Semcache"] == "miss"
    # this replica resolves its own recent requests from memory
    hit = await ask(proxy, "reported later", **{"X-Request-Id": "req-wrong-2"})
    assert (await api(proxy, "POST", "feedback", {"request_id": "req-wrong-2"}))["removed"] is True


async def test_admin_api_answers_503_while_redis_is_down(proxy: Any, redis_process: Any) -> None:
    redis_process.kill()
    try:
        body = await api(proxy, "GET", "stats", expect=503)
        assert body["error"]["code"] == "redis_unavailable"
    finally:
        await redis_process.start()
        for _ in range(100):  # let the gate re-open before the next test's proxy starts
            if await proxy.app[STORE].ping():
                break
            await asyncio.sleep(0.05)
