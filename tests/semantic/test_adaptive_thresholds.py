"""Adaptive thresholds in the proxy: wrong-hit reports, confirmations and sampled
verification become observations on the entry and its scope, and the thresholds follow.
Real Redis, the real encoder (int8 on the CPU), the fake upstream as a real HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from semantic.test_semantic_tier import ask, chat, start_proxy

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.admin import ADMIN
from semcache.proxy.app import SERVICE
from semcache.proxy.judge.thresholds import MIN_EVIDENCE

STORED = "How do I learn Python quickly?"
NEAR = "How can I learn Python fast?"  # cosine 0.9607 with STORED
CLOSER = "How do I quickly learn Python?"  # 0.9924
OWN = "how do i learn python quickly?"  # 1.0 (the encoder is uncased), new to the exact tier
NO_STORE = {"Cache-Control": "no-store"}


async def admin(client: Any, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    resp = await client.request(method, "/admin/api/" + path, json=body)
    data = await resp.json()
    assert resp.status == expect, data
    return data


async def outcome(client: Any, question: str, **headers: str) -> Any:
    resp, _ = await ask(client, chat(question), **{**NO_STORE, **headers})
    return resp


@pytest.fixture
async def proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path) -> Any:
    return await start_proxy(aiohttp_client, redis_url, upstream, model_dir)


async def test_a_wrong_semantic_hit_raises_that_entrys_threshold_past_it(
    proxy: Any, aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path
) -> None:
    other = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
    await ask(proxy, chat(STORED))
    hit = await outcome(proxy, NEAR, **{"X-Request-Id": "req-near"})
    assert hit.headers["X-Semcache"] == "hit-semantic"
    assert hit.headers["X-Semcache-Threshold"] == "0.9200"
    entry_id = hit.headers["X-Semcache-Entry"]
    similarity = float(hit.headers["X-Semcache-Similarity"])

    # reported through the other replica, which resolves the request id through Redis
    await proxy.app[ADMIN].series.flush()
    report = await admin(other, "POST", "feedback", {"request_id": "req-near", "reason": "not it"})
    assert report["result"] == "raised" and report["removed"] is False
    assert report["similarity"] == pytest.approx(similarity, abs=1e-4)
    assert similarity < report["threshold"] <= similarity + 0.0002

    view = await admin(proxy, "GET", f"entries/{entry_id}")
    assert view["adaptive"]["observations"] == [[pytest.approx(similarity, abs=1e-4), False]]
    assert view["adaptive"]["threshold"] == report["threshold"]
    assert view["adaptive"]["scope_threshold"] == 0.92  # one report moves one entry only

    # the near miss is no longer served, by either replica; closer questions still are
    for replica in (proxy, other):
        resp = await outcome(replica, NEAR)
        assert resp.headers["X-Semcache"] == "miss"
        assert float(resp.headers["X-Semcache-Similarity"]) == pytest.approx(similarity, abs=1e-4)
    resp = await outcome(proxy, CLOSER)
    assert resp.headers["X-Semcache"] == "hit-semantic"
    assert float(resp.headers["X-Semcache-Threshold"]) == report["threshold"]  # the one applied
    resp = await outcome(proxy, OWN)
    assert resp.headers["X-Semcache"] == "hit-semantic" and resp.headers["X-Semcache-Entry"] == entry_id
    assert (await outcome(proxy, STORED)).headers["X-Semcache"] == "hit-exact"
    # a request's own threshold still overrides the entry's
    resp = await outcome(proxy, NEAR, **{"X-Semcache-Threshold": "0.9"})
    assert resp.headers["X-Semcache"] == "hit-semantic"
    assert resp.headers["X-Semcache-Threshold"] == "0.9000"


async def test_remove_true_deletes_the_entry_and_a_confirmation_is_recorded(proxy: Any) -> None:
    await ask(proxy, chat(STORED))
    await outcome(proxy, NEAR, **{"X-Request-Id": "req-ok"})
    confirmed = await admin(proxy, "POST", "feedback", {"request_id": "req-ok", "correct": True})
    assert confirmed["result"] == "confirmed" and confirmed["threshold"] == 0.92
    entry_id = confirmed["entry_id"]
    view = await admin(proxy, "GET", f"entries/{entry_id}")
    assert [ok for _, ok in view["adaptive"]["observations"]] == [True]
    assert (await outcome(proxy, NEAR)).headers["X-Semcache"] == "hit-semantic"  # unchanged

    await outcome(proxy, NEAR, **{"X-Request-Id": "req-bad"})
    removed = await admin(proxy, "POST", "feedback", {"request_id": "req-bad", "remove": True})
    assert removed["result"] == "removed" and removed["removed"] is True
    await admin(proxy, "GET", f"entries/{entry_id}", expect=404)
    for question in (NEAR, STORED):
        assert (await outcome(proxy, question)).headers["X-Semcache"] == "miss"
    again = await admin(proxy, "POST", "feedback", {"entry_id": entry_id, "similarity": 0.95})
    assert again["result"] == "already-gone"


async def test_enough_wrong_hits_in_a_scope_raise_its_threshold_for_every_entry(
    proxy: Any, aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path
) -> None:
    other = await start_proxy(aiohttp_client, redis_url, upstream, model_dir)
    await ask(proxy, chat(STORED))
    await ask(proxy, chat("What is the capital of France?"))
    france_id = (await outcome(proxy, "what is the capital of france?")).headers["X-Semcache-Entry"]
    for i in range(19):  # wrong hits at 0.99 on another entry of the same scope
        report = await admin(proxy, "POST", "feedback", {"entry_id": france_id, "similarity": 0.99})
        assert report["result"] == "raised", (i, report)
    assert (await outcome(proxy, NEAR)).headers["X-Semcache"] == "hit-semantic"  # 19 < 20
    await admin(proxy, "POST", "feedback", {"entry_id": france_id, "similarity": 0.99})
    resp = await outcome(proxy, NEAR)
    assert resp.headers["X-Semcache"] == "miss"  # the scope now asks 0.9901 of every entry
    resp = await outcome(proxy, "How do I learn Python quickly")  # 0.9965
    assert resp.headers["X-Semcache"] == "hit-semantic"
    assert resp.headers["X-Semcache-Threshold"] == "0.9901"
    # the other replica reads the changed pool in the background (every SCOPE_REFRESH_S)
    await other.app[SERVICE].observations.refresh()
    assert (await outcome(other, NEAR)).headers["X-Semcache"] == "miss"
    entry = (await admin(other, "GET", f"entries/{resp.headers['X-Semcache-Entry']}"))["adaptive"]
    assert entry["scope_threshold"] == 0.9901 and entry["scope_observations"] == 20
    assert entry["observations"] == [] and entry["threshold"] == 0.9901


async def test_sampled_verification_records_what_the_upstream_says(
    aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path
) -> None:
    proxy = await start_proxy(aiohttp_client, redis_url, upstream, model_dir,
                              judge__verify_sample=1.0)
    await ask(proxy, chat(STORED))
    hit = await outcome(proxy, NEAR)  # the drain in ask() waits for the background check
    assert hit.headers["X-Semcache"] == "hit-semantic"
    assert [c["messages"][-1]["content"] for c in upstream.calls] == [STORED, NEAR]
    assert upstream.calls[-1].get("stream") is None
    entry_id = hit.headers["X-Semcache-Entry"]
    # "answer to: How can I learn Python fast?" against the cached "answer to: How do I learn
    # Python quickly?": cosine 0.96 >= cache.answer_similarity (0.9), so the hit was right
    view = await admin(proxy, "GET", f"entries/{entry_id}")
    assert view["adaptive"]["observations"] == [[pytest.approx(0.9607, abs=2e-4), True]]

    upstream.answer_for = lambda question: "Something else entirely."  # type: ignore[method-assign]
    resp = await outcome(proxy, CLOSER)
    assert resp.headers["X-Semcache"] == "hit-semantic"  # served from the cache all the same
    closer = float(resp.headers["X-Semcache-Similarity"])
    view = await admin(proxy, "GET", f"entries/{entry_id}")
    assert [ok for _, ok in view["adaptive"]["observations"]] == [True, False]
    assert view["adaptive"]["threshold"] > closer

    # Now a miss: its candidate, turned down by the raised threshold alone, is checked against
    # the answer the upstream gives the miss anyway (no second upstream call)
    calls = len(upstream.calls)
    assert (await outcome(proxy, CLOSER)).headers["X-Semcache"] == "miss"
    assert len(upstream.calls) == calls + 1
    view = await admin(proxy, "GET", f"entries/{entry_id}")
    assert [ok for _, ok in view["adaptive"]["observations"]] == [True, False, False]
    assert view["adaptive"]["scope_observations"] == 3
    # a candidate under the default threshold is no evidence about the adaptive one
    await outcome(proxy, "What is the capital of France?")
    assert len((await admin(proxy, "GET", f"entries/{entry_id}"))["adaptive"]["observations"]) == 3

    upstream.status = 500  # a failing check changes nothing but a metric
    calls = len(upstream.calls)
    resp = await outcome(proxy, OWN)
    assert resp.headers["X-Semcache"] == "hit-semantic" and len(upstream.calls) == calls + 1
    assert len((await admin(proxy, "GET", f"entries/{entry_id}"))["adaptive"]["observations"]) == 3
    metrics = (await (await proxy.get("/metrics")).read()).decode()
    for labels, n in (('lookup="hit",result="correct"', 1), ('lookup="hit",result="wrong"', 1),
                      ('lookup="miss",result="wrong"', 1), ('lookup="hit",result="failed"', 1)):
        assert f"semcache_verifications_total{{{labels}}} {n}.0" in metrics, labels
    # a request that chose its own threshold is not sampled
    await outcome(proxy, OWN, **{"X-Semcache-Threshold": "0.5"})
    assert len(upstream.calls) == calls + 1


async def test_checks_sample_a_fraction_once_the_scope_has_evidence(
    aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path
) -> None:
    """While a scope has fewer than MIN_EVIDENCE observations every candidate is checked;
    after that, judge.verify_sample of them."""
    proxy = await start_proxy(aiohttp_client, redis_url, upstream, model_dir,
                              judge__verify_sample=1e-9)
    await ask(proxy, chat(STORED))
    for _ in range(MIN_EVIDENCE + 5):
        assert (await outcome(proxy, NEAR)).headers["X-Semcache"] == "hit-semantic"
    assert len(upstream.calls) == 1 + MIN_EVIDENCE  # the miss, then one check per hit until 20
    entry_id = (await outcome(proxy, NEAR)).headers["X-Semcache-Entry"]
    view = await admin(proxy, "GET", f"entries/{entry_id}")
    assert view["adaptive"]["scope_observations"] == MIN_EVIDENCE
    assert view["adaptive"]["threshold"] == 0.92  # 20 correct hits: no reason to move
    assert proxy.app[SERVICE].sampler.rate(view["scope"]) == 1e-9
