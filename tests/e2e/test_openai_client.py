"""The official `openai` client pointed at the proxy, exactly as a user would do it."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE


def client_for(proxy: Any, key: str = "sk-test-1") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key=key, max_retries=0)


async def test_chat_miss_then_hit_with_openai_client(proxy: Any, upstream: FakeUpstream) -> None:
    client = client_for(proxy)
    messages = [{"role": "user", "content": "What is semantic caching?"}]
    first = await client.chat.completions.with_raw_response.create(model="fake-model", messages=messages)
    await proxy.app[SERVICE].drain(5)
    second = await client.chat.completions.with_raw_response.create(model="fake-model", messages=messages)
    assert first.headers["x-semcache"] == "miss" and second.headers["x-semcache"] == "hit-exact"
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content
    assert b.choices[0].message.content == "answer to: What is semantic caching?"
    assert b.usage is not None and b.usage.prompt_tokens == 10
    assert len(upstream.calls) == 1


async def test_streaming_with_openai_client(proxy: Any, upstream: FakeUpstream) -> None:
    client = client_for(proxy)
    messages = [{"role": "user", "content": "Stream me a story"}]

    async def collect() -> str:
        stream = await client.chat.completions.create(
            model="fake-model", messages=messages, stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)

    miss = await collect()
    await proxy.app[SERVICE].drain(5)
    hit = await collect()
    assert miss == hit == "answer to: Stream me a story"
    assert len(upstream.calls) == 1
    # the non-streaming form is served from the entry the stream wrote
    resp = await client.chat.completions.create(model="fake-model", messages=messages)
    assert resp.choices[0].message.content == miss and len(upstream.calls) == 1


async def test_completions_and_models_with_openai_client(proxy: Any, upstream: FakeUpstream) -> None:
    client = client_for(proxy)
    first = await client.completions.create(model="fake-model", prompt="Say hi", max_tokens=5)
    await proxy.app[SERVICE].drain(5)
    second = await client.completions.create(model="fake-model", prompt="Say hi", max_tokens=5)
    assert first.choices[0].text == second.choices[0].text == "answer to: Say hi"
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]


async def test_errors_surface_as_openai_exceptions(proxy: Any, upstream: FakeUpstream) -> None:
    client = client_for(proxy)
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="fake-model", messages=[])
    assert "messages" in str(bad.value)
    upstream.status = 500
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "boom"}]
        )


async def test_another_key_never_gets_the_answer(proxy: Any, upstream: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "my private question"}]
    one = await client_for(proxy, "sk-one").chat.completions.with_raw_response.create(
        model="fake-model", messages=messages)
    await proxy.app[SERVICE].drain(5)
    two = await client_for(proxy, "sk-two").chat.completions.with_raw_response.create(
        model="fake-model", messages=messages)
    assert one.headers["x-semcache"] == "miss" and two.headers["x-semcache"] == "miss"
    assert len(upstream.calls) == 2
