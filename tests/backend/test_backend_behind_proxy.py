"""The default set-up end to end: the official openai client, the proxy (real Redis) and the
bundled backend app on a real port as its upstream. A refused parameter reaches the client
as the backend's 400 and is never cached; embeddings are served."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from semcache.backend.server import build_app, build_engine

from .conftest import TINY_SETTINGS

DATA_DIR = Path(__file__).resolve().parents[2] / ".data"
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


@pytest.fixture
async def proxy_to_backend(aiohttp_server, redis_url, tiny, tmp_path):
    from semcache.proxy.app import SERVICE
    from semcache.proxy.app import build_app as build_proxy
    from semcache.proxy.config import load_settings

    settings = dataclasses.replace(TINY_SETTINGS, embedding_model="packaged",
                                   data_dir=str(DATA_DIR))
    engine = build_engine(tiny[0], tiny[1], settings, "tiny")
    backend = await aiohttp_server(build_app(settings, engine))
    proxy_settings = load_settings(environ={}, overrides={
        "redis.url": redis_url, "upstream.base_url": str(backend.make_url("/v1")),
        "data_dir": tmp_path})
    proxy_settings = dataclasses.replace(
        proxy_settings,
        cache=dataclasses.replace(proxy_settings.cache, semantic=False, anonymous="shared"),
        judge=dataclasses.replace(proxy_settings.judge, model=False))
    proxy = await aiohttp_server(build_proxy(proxy_settings))
    return proxy, proxy.app[SERVICE], engine


async def test_a_refusal_passes_through_and_is_never_cached(proxy_to_backend) -> None:
    import openai

    proxy, service, engine = proxy_to_backend
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="sk-test",
                                max_retries=0)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="tiny", messages=messages, tools=[TOOL],
                                                 max_tokens=4, temperature=0)
        assert refused.value.body["param"] == "tools"
        assert refused.value.response.headers.get("x-semcache") != "hit-exact"
        await service.drain(5)
    # The same request without the refused parameter is cached: the refusal was not.
    outcomes = []
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="tiny", messages=messages, max_tokens=4, temperature=0)
        outcomes.append(raw.headers["x-semcache"])
        await service.drain(5)
    assert outcomes == ["miss", "hit-exact"]
    await client.close()


async def test_embeddings_through_the_proxy(proxy_to_backend) -> None:
    import openai

    proxy, _, _ = proxy_to_backend
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="sk-test",
                                max_retries=0)
    answer = await client.embeddings.create(model="all-MiniLM-L6-v2",
                                            input=["semantic caching", "a cache of meanings"])
    vectors = np.array([d.embedding for d in answer.data])
    assert vectors.shape == (2, 384) and answer.usage.prompt_tokens > 0
    await client.close()


async def test_responses_and_messages_miss_then_hit(proxy_to_backend) -> None:
    """The default set-up serves both APIs: the backend answers the miss in each API's own
    format, and the proxy stores and serves it, whole and streamed."""
    import anthropic
    import openai

    proxy, service, _ = proxy_to_backend
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="sk-test",
                                max_retries=0)
    outcomes, texts = [], []
    for _ in range(2):
        raw = await client.responses.with_raw_response.create(
            model="tiny", instructions="Be brief.", input="What is semantic caching?",
            max_output_tokens=6, temperature=0)
        outcomes.append(raw.headers["x-semcache"])
        texts.append(raw.parse().output_text)
        await service.drain(5)
    assert outcomes == ["miss", "hit-exact"] and texts[0] == texts[1] and texts[0]
    stream = await client.responses.create(
        model="tiny", instructions="Be brief.", input="What is semantic caching?",
        max_output_tokens=6, temperature=0, stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.incomplete"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == texts[0]
    await client.close()

    claude = anthropic.AsyncAnthropic(base_url=str(proxy.make_url("")), api_key="sk-ant-test",
                                      max_retries=0)
    turns = [{"role": "user", "content": "What is semantic caching?"}]
    outcomes, texts = [], []
    for _ in range(2):
        raw = await claude.messages.with_raw_response.create(
            model="tiny", max_tokens=6, messages=turns, extra_body={"temperature": 0})
        outcomes.append(raw.headers["x-semcache"])
        message = await raw.parse()
        texts.append(message.content[0].text)
        assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 6
        await service.drain(5)
    assert outcomes == ["miss", "hit-exact"] and texts[0] == texts[1] and texts[0]
    async with claude.messages.stream(model="tiny", max_tokens=6, messages=turns,
                                      extra_body={"temperature": 0}) as streamed:
        assert streamed.response.headers["x-semcache"] == "hit-exact"
        assert "".join([t async for t in streamed.text_stream]) == texts[0]
    # The backend's own stream, a miss, is what the proxy stores: the next ask is a hit.
    other = [{"role": "user", "content": "And what does it save?"}]
    async with claude.messages.stream(model="tiny", max_tokens=5, messages=other,
                                      extra_body={"temperature": 0}) as streamed:
        assert streamed.response.headers["x-semcache"] == "miss"
        said = "".join([t async for t in streamed.text_stream])
    await service.drain(5)
    raw = await claude.messages.with_raw_response.create(
        model="tiny", max_tokens=5, messages=other, extra_body={"temperature": 0})
    assert raw.headers["x-semcache"] == "hit-exact"
    assert (await raw.parse()).content[0].text == said
    await claude.close()
