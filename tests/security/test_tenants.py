"""Tenant isolation under concurrency: many API keys ask the identical question at once;
each gets only the answer produced for its own key, as a miss and then as a hit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import make_settings

from semcache.index.keys import Keys
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE, build_app
from semcache.proxy.pipeline.sse import SSEParser, StreamAssembler

CHAT = "/v1/chat/completions"


@pytest.fixture
async def keyed_proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream,
                      tmp_path: Path) -> Any:
    """The proxy with the shipped tenancy settings (anonymous requests bypass)."""
    return await aiohttp_client(build_app(make_settings(redis_url, upstream.base_url, tmp_path,
                                                        cache__anonymous="bypass")))
KEYS = [f"sk-tenant-{i:02d}" for i in range(40)]


def answer_text(raw: bytes, stream: bool) -> str:
    if not stream:
        return str(json.loads(raw)["choices"][0]["message"]["content"])
    parser, assembler = SSEParser(), StreamAssembler("chat")
    for payload in parser.feed(raw):
        assembler.feed(payload)
    result = assembler.result()
    assert result is not None, raw[-200:]
    return str(result["choices"][0]["message"]["content"])


async def ask_all(proxy: Any, question: str, stream: bool) -> list[tuple[str, str, str]]:
    async def one(key: str) -> tuple[str, str, str]:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": question}],
                "stream": stream}
        resp = await proxy.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})
        raw = await resp.read()
        assert resp.status == 200, raw
        return key, resp.headers["X-Semcache"], answer_text(raw, stream)

    # Each key twice in the same burst: identical prompts, same and different tenants at once.
    return await asyncio.gather(*(one(k) for k in KEYS + KEYS[::-1]))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_identical_prompts_many_keys_at_once(proxy: Any, upstream: FakeUpstream,
                                                   stream: bool) -> None:
    upstream.tag_answers_with_key = True
    question = "What is the capital of France?"
    for round_ in ("cold", "warm"):
        results = await ask_all(proxy, question, stream)
        await proxy.app[SERVICE].drain(5)
        for key, outcome, text in results:
            assert text.endswith(f"[for Bearer {key}]"), (round_, key, outcome, text)
        if round_ == "warm":
            assert {outcome for _, outcome, _ in results} == {"hit-exact"}
    # The upstream answered each tenant at most twice (both of its cold requests may miss
    # together), never zero times: no tenant was served another's entry.
    tenants_seen = [h["Authorization"] for h in upstream.headers_seen]
    assert set(tenants_seen) == {f"Bearer {k}" for k in KEYS}
    assert len(tenants_seen) <= 2 * len(KEYS)


# Where a key can travel: (headers, query) for key `k`.
PLACES: dict[str, Any] = {
    "authorization": lambda k: ({"Authorization": f"Bearer {k}"}, ""),
    "api-key": lambda k: ({"api-key": k}, ""),
    "x-api-key": lambda k: ({"x-api-key": k}, ""),
    "x-goog-api-key": lambda k: ({"x-goog-api-key": k}, ""),
    "query-api-key": lambda k: ({}, f"?api-key={k}"),
    "query-key": lambda k: ({}, f"?key={k}"),
}
NO_CREDENTIAL: list[tuple[dict[str, str], str]] = [
    ({}, ""), ({"Authorization": ""}, ""), ({"Authorization": "Bearer"}, ""),
    ({"Authorization": "Bearer "}, ""), ({"api-key": ""}, ""), ({"x-api-key": "  "}, ""),
    ({}, "?api-key="), ({}, "?key=&other=1"),
]


def tag(headers: dict[str, str], query: str) -> str:
    """What the fake upstream appends to an answer for this credential."""
    if headers.get("Authorization", "").strip():
        return headers["Authorization"].strip()
    for name in ("api-key", "x-api-key", "x-goog-api-key"):
        if headers.get(name, "").strip():
            return f"{name}={headers[name].strip()}"
    first = query.split("&")[0]  # "?api-key=k" for a key in the query
    return first if first and not first.endswith("=") else "nobody"


async def ask(proxy: Any, question: str, headers: dict[str, str], query: str = "") -> tuple[str, str, str]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": question}]}
    resp = await proxy.post(CHAT + query, json=body, headers=headers)
    raw = await resp.read()
    assert resp.status == 200, raw
    await proxy.app[SERVICE].drain(5)
    return (resp.headers["X-Semcache"], resp.headers.get("X-Semcache-Reason", ""),
            json.loads(raw)["choices"][0]["message"]["content"])


async def test_a_key_in_any_place_never_crosses_to_another(keyed_proxy: Any,
                                                           upstream: FakeUpstream) -> None:
    """Two keys in each of six places, twelve credentials, one question: each is answered
    for itself (a miss, then its own hit), never with another's answer."""
    upstream.tag_answers_with_key = True
    identities = [(place, key) for place in PLACES for key in ("sk-one", "sk-two")]
    for round_ in ("cold", "warm"):
        for place, key in identities:
            headers, query = PLACES[place](key)
            outcome, _, text = await ask(keyed_proxy, "the same question", headers, query)
            assert text.endswith(f"[for {tag(headers, query)}]"), (round_, place, key, text)
            assert outcome == ("miss" if round_ == "cold" else "hit-exact"), (round_, place, key)
    assert len(upstream.calls) == len(identities)


async def test_anonymous_bypasses_by_default_and_is_never_served_a_keyed_answer(
        keyed_proxy: Any, upstream: FakeUpstream) -> None:
    upstream.tag_answers_with_key = True
    for place in PLACES:
        headers, query = PLACES[place]("sk-keyed")
        assert (await ask(keyed_proxy, "keyed first", headers, query))[0] == "miss"
    for headers, query in NO_CREDENTIAL:
        outcome, reason, text = await ask(keyed_proxy, "keyed first", headers, query)
        assert (outcome, reason) == ("bypass", "anonymous"), (headers, query)
        assert "sk-keyed" not in text, (headers, query, text)
    # nor is an anonymous answer ever stored for anyone
    assert (await ask(keyed_proxy, "anonymous first", {}))[0] == "bypass"
    assert (await ask(keyed_proxy, "anonymous first", {}))[0] == "bypass"


async def test_shared_anonymous_tenant_is_its_own(aiohttp_client: Any, redis_url: str,
                                                  upstream: FakeUpstream, tmp_path: Path) -> None:
    """`cache.anonymous = "shared"`: anonymous requests share one tenant with each other,
    and with no key, in either direction."""
    upstream.tag_answers_with_key = True
    proxy = await aiohttp_client(build_app(make_settings(redis_url, upstream.base_url, tmp_path,
                                                         cache__anonymous="shared")))
    assert (await ask(proxy, "q", {"Authorization": "Bearer sk-a"}))[0] == "miss"
    outcome, _, text = await ask(proxy, "q", {})
    assert outcome == "miss" and text.endswith("[for nobody]")
    for headers, query in NO_CREDENTIAL:
        outcome, _, text = await ask(proxy, "q", headers, query)
        assert outcome == "hit-exact" and text.endswith("[for nobody]"), (headers, query)
    outcome, _, text = await ask(proxy, "q", {"Authorization": "Bearer sk-a"})
    assert outcome == "hit-exact" and text.endswith("[for Bearer sk-a]")
    assert (await ask(proxy, "q", {"Authorization": "Bearer sk-b"}))[0] == "miss"


async def test_tenant_header_of_a_trusted_app(aiohttp_client: Any, redis_url: str,
                                              upstream: FakeUpstream, tmp_path: Path) -> None:
    """One API key, one tenant per end user named by the app; a request the app sent
    without the header is anonymous rather than one tenant for all of its users."""
    proxy = await aiohttp_client(build_app(make_settings(
        redis_url, upstream.base_url, tmp_path, cache__anonymous="bypass",
        cache__tenant_header="X-Semcache-Tenant")))
    key = {"Authorization": "Bearer sk-app"}
    assert (await ask(proxy, "q", {**key, "X-Semcache-Tenant": "user-1"}))[0] == "miss"
    assert (await ask(proxy, "q", {**key, "X-Semcache-Tenant": "user-1"}))[0] == "hit-exact"
    assert (await ask(proxy, "q", {**key, "X-Semcache-Tenant": "user-2"}))[0] == "miss"
    assert (await ask(proxy, "q", key))[:2] == ("bypass", "anonymous")
    assert (await ask(proxy, "q", {**key, "X-Semcache-Tenant": " "}))[:2] == ("bypass", "anonymous")
    # the header alone names a tenant (an app on the bundled backend sends no key)
    assert (await ask(proxy, "q", {"X-Semcache-Tenant": "user-1"}))[0] == "miss"
    assert (await ask(proxy, "q", {"X-Semcache-Tenant": "user-1"}))[0] == "hit-exact"
    assert all("X-Semcache-Tenant" not in h for h in upstream.headers_seen)


async def test_replicas_agree_on_the_generated_secret_and_keys_never_reach_redis(
        aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path)
    first = await aiohttp_client(build_app(settings))
    second = await aiohttp_client(build_app(settings))
    key = {"api-key": "sk-never-stored-anywhere"}
    assert (await ask(first, "q", key))[0] == "miss"
    assert (await ask(second, "q", key))[0] == "hit-exact"  # the same tenant on both
    client = aioredis.Redis.from_url(redis_url)
    try:
        secret = await client.get(Keys().tenant_secret)
        assert secret is not None and len(secret) == 64
        for name in await client.keys("*"):
            kind = (await client.type(name)).decode()
            dump = await client.dump(name) if kind != "stream" else str(
                await client.xrange(name)).encode()
            assert b"sk-never-stored" not in name + (dump or b""), name
    finally:
        await client.aclose()
    # another deployment secret is another tenant for the same key
    other = await aiohttp_client(build_app(make_settings(
        redis_url, upstream.base_url, tmp_path, cache__tenant_secret="another-secret-0123")))
    assert (await ask(other, "q", key))[0] == "miss"


async def test_no_key_and_a_key_never_share(proxy: Any, upstream: FakeUpstream) -> None:
    """Under `cache.anonymous = "shared"` (the test default): keys differing in case or
    spacing are other tenants; no key is its own."""
    upstream.tag_answers_with_key = True
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "shared?"}]}
    for headers in ({}, {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"},
                    {"Authorization": "bearer a"}, {"Authorization": "Bearer a "}):
        resp = await proxy.post(CHAT, json=body, headers=headers)
        raw = await resp.read()
        await proxy.app[SERVICE].drain(5)
        text = json.loads(raw)["choices"][0]["message"]["content"]
        expected = headers.get("Authorization", "nobody")
        # aiohttp strips the trailing space of a header value, so "Bearer a " is "Bearer a".
        if resp.headers["X-Semcache"] == "hit-exact":
            assert text.endswith(f"[for {expected.strip()}]"), (headers, text)
        else:
            assert resp.headers["X-Semcache"] == "miss"
