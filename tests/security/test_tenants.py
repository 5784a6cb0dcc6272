"""Tenant isolation under concurrency: many API keys ask the identical question at once;
each gets only the answer produced for its own key, as a miss and then as a hit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE
from semcache.proxy.pipeline.sse import SSEParser, StreamAssembler

CHAT = "/v1/chat/completions"
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


async def test_no_key_and_a_key_never_share(proxy: Any, upstream: FakeUpstream) -> None:
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
