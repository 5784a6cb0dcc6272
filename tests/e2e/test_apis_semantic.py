"""Semantic hits on the Responses and Anthropic Messages APIs, with the real encoder and the
shipped pair model: a paraphrase of the last user input, in the same scope, is served; the
same paraphrase under other instructions (another scope) is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from conftest import make_settings, start_judged_proxy

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE

pytestmark = pytest.mark.slow

QUESTION = "How do I make a sourdough starter from scratch?"
PARAPHRASE = "What's the way to make a sourdough starter from scratch?"


@pytest.fixture
async def proxy(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, model_dir: Path) -> Any:
    settings = make_settings(redis_url, upstream.base_url, model_dir, cache__semantic=True,
                             judge__model=True)
    return await start_judged_proxy(aiohttp_client, settings)


async def test_responses_paraphrase_is_a_semantic_hit(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key="sk-one",
                                max_retries=0)
    await client.responses.create(model="fake-model", input=QUESTION, instructions="Be brief.")
    await proxy.app[SERVICE].drain(10)
    other = await client.responses.with_raw_response.create(
        model="fake-model", input=PARAPHRASE, instructions="Answer in French.")
    assert other.headers["x-semcache"] == "miss"
    async with client.responses.stream(model="fake-model", input=PARAPHRASE,
                                       instructions="Be brief.") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "answer to: " + QUESTION
    assert len(upstream.calls) == 2


async def test_messages_paraphrase_is_a_semantic_hit(proxy: Any, upstream: FakeUpstream) -> None:
    client = anthropic.AsyncAnthropic(base_url=str(proxy.make_url("")), api_key=None,
                                      default_headers={"x-api-key": "sk-ant"}, max_retries=0)
    await client.messages.create(model="claude-fake", max_tokens=100, system="Be brief.",
                                 messages=[{"role": "user", "content": QUESTION}])
    await proxy.app[SERVICE].drain(10)
    raw = await client.messages.with_raw_response.create(
        model="claude-fake", max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": PARAPHRASE}]}])
    assert raw.headers["x-semcache"] == "hit-semantic"
    message = await raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == "answer to: " + QUESTION
    other = await client.messages.with_raw_response.create(
        model="claude-fake", max_tokens=50, system="Be brief.",  # another parameter
        messages=[{"role": "user", "content": PARAPHRASE}])
    assert other.headers["x-semcache"] == "miss" and len(upstream.calls) == 2
