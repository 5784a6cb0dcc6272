"""Single-flight: a burst of identical new questions costs one upstream call, on one replica
and on two (two proxy apps on one Redis); streams are fanned out as they arrive; a failed
call is not shared; Cache-Control and clients that leave are minded."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import make_settings
from sse_helpers import stream_text

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE, build_app

CHAT = "/v1/chat/completions"
KEY = {"Authorization": "Bearer sk-burst"}


def chat(question: str, *, stream: bool = False, usage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake-model",
                            "messages": [{"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return body


async def one(client: Any, body: dict[str, Any], **headers: str) -> tuple[int, Any, bytes, float]:
    """Status, headers, body and seconds to the first byte of the body."""
    started = time.perf_counter()
    resp = await client.post(CHAT, json=body, headers={**KEY, **headers})
    first = await resp.content.readany()
    ttfb = time.perf_counter() - started
    rest = await resp.read()
    return resp.status, resp.headers, first + rest, ttfb


def text_of(raw: bytes, stream: bool) -> str:
    if stream:
        return stream_text(raw)[0]
    return str(json.loads(raw)["choices"][0]["message"]["content"])


async def settle(*clients: Any) -> None:
    for client in clients:
        await client.app[SERVICE].drain(5)


@pytest.fixture
async def two(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream,
              tmp_path: Path) -> tuple[Any, Any]:
    """Two proxy apps (replicas) on one Redis and one upstream."""
    settings = make_settings(redis_url, upstream.base_url, tmp_path)
    return (await aiohttp_client(build_app(settings)), await aiohttp_client(build_app(settings)))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_twenty_identical_misses_cost_one_call(proxy: Any, upstream: FakeUpstream,
                                                     stream: bool) -> None:
    upstream.delay_s = 0.3
    results = await asyncio.gather(*(one(proxy, chat("new and popular", stream=stream))
                                     for _ in range(20)))
    await settle(proxy)
    assert len(upstream.calls) == 1
    outcomes = sorted(h["X-Semcache"] for _, h, _, _ in results)
    assert outcomes == ["hit-exact"] * 19 + ["miss"]
    assert {h.get("X-Semcache-Coalesced") for _, h, _, _ in results} == {None, "local"}
    for status, _, raw, _ in results:
        assert status == 200 and text_of(raw, stream) == "answer to: new and popular"
    if not stream:  # a replayed answer has an id of its own, like any hit
        assert len({json.loads(raw)["id"] for _, _, raw, _ in results}) == 20
    status, headers, _, _ = await one(proxy, chat("new and popular", stream=stream))
    assert headers["X-Semcache"] == "hit-exact" and "X-Semcache-Coalesced" not in headers
    assert len(upstream.calls) == 1


async def test_a_stream_is_fanned_out_as_it_arrives(proxy: Any, upstream: FakeUpstream) -> None:
    upstream.words_per_answer = 40
    upstream.chunk_delay_s = 0.02  # about a second of stream
    started = time.perf_counter()
    results = await asyncio.gather(*(one(proxy, chat("a long new story", stream=True))
                                     for _ in range(10)))
    total = time.perf_counter() - started
    assert len(upstream.calls) == 1 and total > 0.8
    texts = {text_of(raw, True) for _, _, raw, _ in results}
    assert len(texts) == 1 and texts.pop().startswith("answer to: a long new story w0 w1")
    # every follower had its first chunk long before the stream ended
    assert max(ttfb for _, _, _, ttfb in results) < total / 2, [r[3] for r in results]


async def test_streaming_and_plain_waiters_of_one_prompt(proxy: Any, upstream: FakeUpstream) -> None:
    """A streamed call asking for usage; followers plain, streaming with usage (they follow
    the stream) and without (replayed): one call, each answered in its own form."""
    upstream.delay_s = 0.2
    bodies = [chat("mixed", stream=True, usage=True), chat("mixed"), chat("mixed", stream=True),
              chat("mixed"), chat("mixed", stream=True, usage=True)]
    results = []
    for body in bodies:  # the first leads; the rest arrive while it runs
        results.append(asyncio.create_task(one(proxy, body)))
        await asyncio.sleep(0.02)
    done = [await r for r in results]
    assert len(upstream.calls) == 1
    coalesced = [h.get("X-Semcache-Coalesced") for _, h, _, _ in done]
    assert coalesced == [None, "local", "local", "local", "local"]
    for body, (status, _, raw, _) in zip(bodies, done, strict=True):
        assert status == 200
        assert text_of(raw, bool(body.get("stream"))) == "answer to: mixed"
        if body.get("stream"):
            _, chunks = stream_text(raw)
            with_usage = [c for c in chunks if c.get("usage")]
            assert bool(with_usage) == bool(body.get("stream_options")), (body, chunks[-1])


async def test_two_replicas_on_one_redis_cost_one_call(two: tuple[Any, Any],
                                                       upstream: FakeUpstream) -> None:
    first, second = two
    upstream.delay_s = 0.4
    results = await asyncio.gather(*(one(client, chat("two replicas, one question"))
                                     for _ in range(10) for client in (first, second)))
    await settle(first, second)
    assert len(upstream.calls) == 1
    coalesced = sorted(h.get("X-Semcache-Coalesced", "-") for _, h, _, _ in results)
    assert coalesced.count("-") == 1 and "remote" in coalesced and "local" in coalesced
    for status, _, raw, _ in results:
        assert status == 200 and text_of(raw, False) == "answer to: two replicas, one question"


async def test_a_failed_call_is_not_shared(proxy: Any, upstream: FakeUpstream) -> None:
    """The first call answers 500: only the request that made it gets that; each of the
    others calls for itself (and gets what the upstream gives it)."""
    upstream.delay_s = 0.3
    upstream.fail_calls = 1
    results = await asyncio.gather(*(one(proxy, chat("fails once")) for _ in range(8)))
    await settle(proxy)
    statuses = sorted(s for s, _, _, _ in results)
    assert statuses == [200] * 7 + [500]
    assert all(h["X-Semcache"] == "miss" for _, h, _, _ in results)
    assert len(upstream.calls) == 8
    assert (await one(proxy, chat("fails once")))[1]["X-Semcache"] == "hit-exact"


async def test_another_replicas_failure_is_not_shared(two: tuple[Any, Any],
                                                      upstream: FakeUpstream) -> None:
    first, second = two
    upstream.delay_s = 0.3
    upstream.fail_calls = 1
    leader = asyncio.create_task(one(first, chat("fails on the first replica")))
    await asyncio.sleep(0.1)  # the first replica holds the lock; the second waits on it
    followers = await asyncio.gather(*(one(second, chat("fails on the first replica"))
                                       for _ in range(5)))
    assert (await leader)[0] == 500
    assert [s for s, _, _, _ in followers] == [200] * 5
    assert len(upstream.calls) == 2  # the failure, then one call for the second replica


async def test_no_cache_never_follows_and_no_store_never_leads(proxy: Any,
                                                               upstream: FakeUpstream) -> None:
    upstream.delay_s = 0.3
    burst = [one(proxy, chat("directives"), **{"Cache-Control": "no-cache"}) for _ in range(3)]
    await asyncio.gather(*burst)
    assert len(upstream.calls) == 3  # each asked for the upstream's own answer
    await settle(proxy)
    upstream.calls.clear()
    first = asyncio.create_task(one(proxy, chat("directives 2"), **{"Cache-Control": "no-store"}))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(one(proxy, chat("directives 2"))) for _ in range(3)]
    await asyncio.sleep(0.05)
    late = asyncio.create_task(one(proxy, chat("directives 2"), **{"Cache-Control": "no-store"}))
    results = [await t for t in (first, *rest, late)]
    assert len(upstream.calls) == 2  # the no-store one alone; the others and `late` one call
    assert results[-1][1]["X-Semcache"] == "hit-exact"  # no-store may follow


async def test_the_callers_client_leaving_does_not_stop_the_others(
        proxy: Any, upstream: FakeUpstream) -> None:
    upstream.words_per_answer = 60
    upstream.chunk_delay_s = 0.01
    url = proxy.make_url(CHAT)

    async def leave_early() -> None:
        async with aiohttp.ClientSession() as session, \
                session.post(url, json=chat("story", stream=True), headers=KEY) as resp:
            await resp.content.readany()
            await asyncio.sleep(0.2)  # the others have joined; then it leaves mid-stream

    leaver = asyncio.create_task(leave_early())
    await asyncio.sleep(0.1)
    followers = await asyncio.gather(*(one(proxy, chat("story", stream=True)) for _ in range(3)))
    await leaver
    await settle(proxy)
    assert len(upstream.calls) == 1
    assert upstream.streams_finished == 1 and upstream.streams_cancelled == 0
    for status, headers, raw, _ in followers:
        assert status == 200 and headers["X-Semcache-Coalesced"] == "local"
        assert text_of(raw, True).startswith("answer to: story w0")
    assert (await one(proxy, chat("story")))[1]["X-Semcache"] == "hit-exact"  # stored
