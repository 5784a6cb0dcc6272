"""The Responses API, the Anthropic Messages API and embeddings through the proxy with the
official `openai` and `anthropic` clients, against the fake upstream: misses, exact hits,
streamed hits replayed as events the SDKs parse, tenants, server-side state, body cache
controls, and nothing stored for an error or a cut-off stream."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

from semcache.loadtest.fake_upstream import FakeUpstream, fake_vector
from semcache.proxy.app import SERVICE


def openai_client(proxy: Any, key: str = "sk-test-1") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(proxy.make_url("/v1")), api_key=key, max_retries=0)


def anthropic_client(proxy: Any, key: str = "sk-ant-1") -> anthropic.AsyncAnthropic:
    """The key in `x-api-key`, as Anthropic's API takes it (this SDK version would send it
    as a bearer token)."""
    return anthropic.AsyncAnthropic(base_url=str(proxy.make_url("")), api_key=None,
                                    default_headers={"x-api-key": key}, max_retries=0)


async def drain(proxy: Any) -> None:
    await proxy.app[SERVICE].drain(5)


# Responses ------------------------------------------------------------------------------

async def test_responses_miss_then_exact_hit(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    first = await client.responses.with_raw_response.create(
        model="fake-model", input="What is semantic caching?", instructions="Be brief.")
    await drain(proxy)
    second = await client.responses.with_raw_response.create(
        model="fake-model", input="What  is semantic caching?", instructions="Be brief.")
    assert first.headers["x-semcache"] == "miss"
    assert second.headers["x-semcache"] == "hit-exact"
    a, b = first.parse(), second.parse()
    assert b.output_text == a.output_text == "answer to: What is semantic caching?"
    assert b.id != a.id and b.id.startswith("resp_")
    assert b.usage is not None and b.usage.input_tokens == 10
    assert len(upstream.calls) == 1
    # other instructions are another scope
    other = await client.responses.with_raw_response.create(
        model="fake-model", input="What is semantic caching?", instructions="Be verbose.")
    assert other.headers["x-semcache"] == "miss" and len(upstream.calls) == 2


async def test_responses_stream_is_stored_and_replayed(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    question = "Tell me a short story about a cache"

    async def collect() -> tuple[str, list[str], str]:
        async with client.responses.stream(model="fake-model", input=question) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        return final.output_text, kinds, final.id

    text, kinds, _ = await collect()
    await drain(proxy)
    replayed, replayed_kinds, replayed_id = await collect()
    assert text == replayed == "answer to: " + question
    assert len(upstream.calls) == 1
    assert replayed_kinds[:4] == ["response.created", "response.in_progress",
                                  "response.output_item.added", "response.content_part.added"]
    assert "response.output_text.delta" in replayed_kinds
    assert replayed_kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                                   "response.output_item.done", "response.completed"]
    assert replayed_id.startswith("resp_") and replayed_id != "resp_upstream"
    # the plain form is served from the entry the stream wrote
    plain = await client.responses.create(model="fake-model", input=question)
    assert plain.output_text == text and len(upstream.calls) == 1


async def test_chat_and_responses_share_a_text_answer(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    chat = await client.chat.completions.create(
        model="fake-model", temperature=0, max_completion_tokens=50,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a prime number"}])
    await drain(proxy)
    raw = await client.responses.with_raw_response.create(
        model="fake-model", temperature=0, max_output_tokens=50, instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text",
                                             "text": "Name a prime number"}]}])
    assert raw.headers["x-semcache"] == "hit-exact" and len(upstream.calls) == 1
    assert raw.parse().output_text == chat.choices[0].message.content
    # and the other way round, streamed
    await client.responses.create(model="fake-model", input="Name an even number")
    await drain(proxy)
    stream = await client.chat.completions.create(
        model="fake-model", stream=True,
        messages=[{"role": "user", "content": "Name an even number"}])
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == "answer to: Name an even number" and len(upstream.calls) == 2
    # a Responses request that says more than chat can (a tool) is scoped apart
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    tooled = await client.responses.with_raw_response.create(
        model="fake-model", input="Name an even number", tools=tools)  # type: ignore[arg-type]
    assert tooled.headers["x-semcache"] == "miss" and len(upstream.calls) == 3


async def test_server_state_is_never_served_from_the_cache(proxy: Any,
                                                           upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    await client.responses.create(model="fake-model", input="And then?")
    await drain(proxy)
    for _ in range(2):
        raw = await client.responses.with_raw_response.create(
            model="fake-model", input="And then?", previous_response_id="resp_earlier")
        assert raw.headers["x-semcache"] == "bypass"
        assert raw.headers["x-semcache-reason"] == "server-state"
        await drain(proxy)
    assert len(upstream.calls) == 3
    assert upstream.calls[-1]["previous_response_id"] == "resp_earlier"


async def test_responses_tenants_never_share(proxy: Any, upstream: FakeUpstream) -> None:
    upstream.tag_answers_with_key = True
    one = await openai_client(proxy, "sk-one").responses.create(model="fake-model",
                                                                input="my secret")
    await drain(proxy)
    raw = await openai_client(proxy, "sk-two").responses.with_raw_response.create(
        model="fake-model", input="my secret")
    assert raw.headers["x-semcache"] == "miss"
    assert "sk-one" in one.output_text and "sk-two" in raw.parse().output_text


async def test_responses_error_and_cut_stream_are_not_stored(proxy: Any,
                                                             upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    upstream.fail_calls = 1
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model="fake-model", input="flaky")
    await drain(proxy)
    upstream.cut_stream_after = 5
    with pytest.raises(openai.APIError):
        async with client.responses.stream(model="fake-model", input="cut") as stream:
            async for _ in stream:
                pass
    await drain(proxy)
    upstream.cut_stream_after = None
    for question in ("flaky", "cut"):
        raw = await client.responses.with_raw_response.create(model="fake-model", input=question)
        assert raw.headers["x-semcache"] == "miss", question
    assert len(upstream.calls) == 4


# Anthropic Messages -----------------------------------------------------------------------

async def test_messages_miss_then_exact_hit(proxy: Any, upstream: FakeUpstream) -> None:
    client = anthropic_client(proxy)
    messages: Any = [{"role": "user", "content": "What is semantic caching?"}]
    first = await client.messages.with_raw_response.create(
        model="claude-fake", max_tokens=100, system="Be brief.", messages=messages)
    await drain(proxy)
    blocks: Any = [{"role": "user", "content": [{"type": "text",
                                                 "text": "What is semantic caching?"}]}]
    second = await client.messages.with_raw_response.create(
        model="claude-fake", max_tokens=100, system="Be brief.", messages=blocks)
    assert first.headers["x-semcache"] == "miss"
    assert second.headers["x-semcache"] == "hit-exact"
    a, b = await first.parse(), await second.parse()
    assert b.content[0].type == "text" and a.content[0].type == "text"
    assert b.content[0].text == a.content[0].text == "answer to: What is semantic caching?"
    assert b.id != a.id and b.usage.input_tokens == 10
    seen = {k.lower(): v for k, v in upstream.headers_seen[0].items()}
    assert seen["x-api-key"] == "sk-ant-1" and seen["anthropic-version"]
    other = await client.messages.with_raw_response.create(
        model="claude-fake", max_tokens=100, system="Be verbose.", messages=messages)
    assert other.headers["x-semcache"] == "miss" and len(upstream.calls) == 2


async def test_messages_stream_is_stored_and_replayed(proxy: Any, upstream: FakeUpstream) -> None:
    client = anthropic_client(proxy)
    messages: Any = [{"role": "user", "content": "Stream me a story"}]

    async def collect() -> tuple[str, list[str]]:
        async with client.messages.stream(model="claude-fake", max_tokens=100,
                                          messages=messages) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        assert final.stop_reason == "end_turn"
        return "".join(b.text for b in final.content if b.type == "text"), kinds

    text, _ = await collect()
    await drain(proxy)
    replayed, kinds = await collect()
    assert text == replayed == "answer to: Stream me a story" and len(upstream.calls) == 1
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop",
            "message_delta"} <= set(kinds)
    plain = await client.messages.create(model="claude-fake", max_tokens=100, messages=messages)
    assert plain.content[0].type == "text" and plain.content[0].text == text
    assert len(upstream.calls) == 1


async def test_messages_tenants_by_x_api_key(proxy: Any, upstream: FakeUpstream) -> None:
    upstream.tag_answers_with_key = True
    messages: Any = [{"role": "user", "content": "my secret"}]
    one = await anthropic_client(proxy, "sk-ant-one").messages.create(
        model="claude-fake", max_tokens=10, messages=messages)
    await drain(proxy)
    raw = await anthropic_client(proxy, "sk-ant-two").messages.with_raw_response.create(
        model="claude-fake", max_tokens=10, messages=messages)
    assert raw.headers["x-semcache"] == "miss"
    texts = [m.content[0].text for m in (one, await raw.parse()) if m.content[0].type == "text"]
    assert "x-api-key=sk-ant-one" in texts[0] and "x-api-key=sk-ant-two" in texts[1]


async def test_messages_images_are_not_cached(proxy: Any, upstream: FakeUpstream) -> None:
    client = anthropic_client(proxy)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    messages: Any = [{"role": "user", "content": [image, {"type": "text", "text": "What?"}]}]
    for _ in range(2):
        raw = await client.messages.with_raw_response.create(
            model="claude-fake", max_tokens=10, messages=messages)
        assert raw.headers["x-semcache"] == "bypass"
        assert raw.headers["x-semcache-reason"] == "non-text-content"
        await drain(proxy)
    assert len(upstream.calls) == 2


async def test_messages_error_and_cut_stream_are_not_stored(proxy: Any,
                                                            upstream: FakeUpstream) -> None:
    client = anthropic_client(proxy)
    upstream.fail_calls = 1
    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(model="claude-fake", max_tokens=10,
                                     messages=[{"role": "user", "content": "flaky"}])
    await drain(proxy)
    upstream.cut_stream_after = 4
    with pytest.raises((anthropic.APIError, httpx2.TransportError)):  # the SDK's own transport
        async with client.messages.stream(model="claude-fake", max_tokens=10,
                                          messages=[{"role": "user", "content": "cut"}]) as s:
            async for _ in s:
                pass
    await drain(proxy)
    upstream.cut_stream_after = None
    for question in ("flaky", "cut"):
        raw = await client.messages.with_raw_response.create(
            model="claude-fake", max_tokens=10, messages=[{"role": "user", "content": question}])
        assert raw.headers["x-semcache"] == "miss", question
    assert len(upstream.calls) == 4


# Body cache controls, passed-through routes ---------------------------------------------------

async def test_body_cache_controls(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    messages: Any = [{"role": "user", "content": "controlled"}]
    await client.chat.completions.create(model="fake-model", messages=messages,
                                         extra_body={"cache": {"no-store": True}})
    await drain(proxy)
    assert "cache" not in upstream.calls[-1]  # stripped from what goes upstream
    raw = await client.chat.completions.with_raw_response.create(
        model="fake-model", messages=messages, extra_body={"cache": {"ttl": 60}})
    assert raw.headers["x-semcache"] == "miss"  # no-store stored nothing
    await drain(proxy)
    # the controls are not part of the key: a request without them hits
    raw = await client.chat.completions.with_raw_response.create(model="fake-model",
                                                                 messages=messages)
    assert raw.headers["x-semcache"] == "hit-exact"
    raw = await client.chat.completions.with_raw_response.create(
        model="fake-model", messages=messages, extra_body={"cache": {"no-cache": True}})
    assert raw.headers["x-semcache"] == "miss" and raw.headers["x-semcache-reason"] == "no-cache"
    # a namespace narrows the scope like the header
    raw = await client.responses.with_raw_response.create(
        model="fake-model", input="controlled", extra_body={"cache": {"namespace": "team-a"}})
    assert raw.headers["x-semcache"] == "miss"
    assert len(upstream.calls) == 4
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="fake-model", messages=messages,
                                             extra_body={"cache": {"ttl": "soon"}})
    assert "cache.ttl" in str(bad.value)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="fake-model", messages=messages,
                                             extra_body={"cache": {"no_cache": True}})
    assert len(upstream.calls) == 4


async def test_passed_through_routes_say_so(proxy: Any, upstream: FakeUpstream) -> None:
    raw = await openai_client(proxy).models.with_raw_response.list()
    assert raw.headers["x-semcache"] == "bypass"
    assert raw.headers["x-semcache-reason"] == "not-cached-route"


# Embeddings ---------------------------------------------------------------------------------

def vector(text: str, dimensions: int = 8) -> list[float]:
    return fake_vector(text, dimensions)


async def test_embeddings_miss_then_hit(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    first = await client.embeddings.with_raw_response.create(model="embed-fake", input="hello")
    await drain(proxy)
    second = await client.embeddings.with_raw_response.create(model="embed-fake", input="hello")
    assert first.headers["x-semcache"] == "miss"
    assert second.headers["x-semcache"] == "hit-exact"
    a, b = first.parse(), second.parse()
    assert a.data[0].embedding == b.data[0].embedding == vector("hello")
    assert b.usage.prompt_tokens == a.usage.prompt_tokens == 1
    assert len(upstream.calls) == 1 and upstream.calls[0]["encoding_format"] == "base64"
    # the text exactly: another spacing is another input
    spaced = await client.embeddings.with_raw_response.create(model="embed-fake", input="hello ")
    assert spaced.headers["x-semcache"] == "miss"


async def test_embeddings_batch_sends_only_the_missing_items(proxy: Any,
                                                             upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    await client.embeddings.create(model="embed-fake", input=["one", "three"])
    await drain(proxy)
    raw = await client.embeddings.with_raw_response.create(
        model="embed-fake", input=["one", "two words", "three", "four", "two words"])
    assert raw.headers["x-semcache"] == "miss" and raw.headers["x-semcache-reason"] == "partial"
    assert raw.headers["x-semcache-items-cached"] == "2/5"
    assert upstream.calls[-1]["input"] == ["two words", "four"]  # each missing text once
    out = raw.parse()
    assert [d.index for d in out.data] == [0, 1, 2, 3, 4]
    assert [d.embedding for d in out.data] == [
        vector(t) for t in ("one", "two words", "three", "four", "two words")]
    assert out.usage.prompt_tokens == 1 + 2 + 1 + 1 + 2
    await drain(proxy)
    full = await client.embeddings.with_raw_response.create(
        model="embed-fake", input=["four", "two words", "one"])
    assert full.headers["x-semcache"] == "hit-exact" and len(upstream.calls) == 2
    assert [d.embedding for d in full.parse().data] == [vector(t) for t in
                                                        ("four", "two words", "one")]


async def test_embeddings_scope(proxy: Any, upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    await client.embeddings.create(model="embed-fake", input="scoped")
    await drain(proxy)
    floats = await client.embeddings.with_raw_response.create(
        model="embed-fake", input="scoped", encoding_format="float")
    dims = await client.embeddings.with_raw_response.create(
        model="embed-fake", input="scoped", dimensions=4)
    other_model = await client.embeddings.with_raw_response.create(
        model="embed-other", input="scoped")
    other_key = await openai_client(proxy, "sk-other").embeddings.with_raw_response.create(
        model="embed-fake", input="scoped")
    for raw in (floats, dims, other_model, other_key):
        assert raw.headers["x-semcache"] == "miss"
    assert floats.parse().data[0].embedding == vector("scoped")
    assert dims.parse().data[0].embedding == vector("scoped", 4)
    await drain(proxy)
    again = await client.embeddings.with_raw_response.create(
        model="embed-fake", input="scoped", encoding_format="float")
    assert again.headers["x-semcache"] == "hit-exact"  # floats stored as floats
    assert again.parse().data[0].embedding == vector("scoped")
    assert len(upstream.calls) == 5


async def test_embeddings_token_input_and_errors_are_not_cached(proxy: Any,
                                                                upstream: FakeUpstream) -> None:
    client = openai_client(proxy)
    for _ in range(2):
        raw = await client.embeddings.with_raw_response.create(model="embed-fake",
                                                               input=[1, 2, 3])
        assert raw.headers["x-semcache"] == "bypass"
        assert raw.headers["x-semcache-reason"] == "token-input"
        await drain(proxy)
    upstream.fail_calls = 1
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model="embed-fake", input="flaky")
    await drain(proxy)
    raw = await client.embeddings.with_raw_response.create(model="embed-fake", input="flaky")
    assert raw.headers["x-semcache"] == "miss" and len(upstream.calls) == 4
    # body controls here too
    await drain(proxy)
    raw = await client.embeddings.with_raw_response.create(
        model="embed-fake", input="flaky", extra_body={"cache": {"no-cache": True}})
    assert raw.headers["x-semcache-reason"] == "no-cache" and "cache" not in upstream.calls[-1]


async def test_a_turn_after_a_cached_response_names_it(proxy: Any, upstream: FakeUpstream) -> None:
    """previous_response_id naming a response the cache served: the request is said in full
    (the upstream never saw that id), so it is answered, and cacheable itself."""
    client = openai_client(proxy)
    await client.responses.create(model="fake-model", input="Name a colour")
    await drain(proxy)
    first = await client.responses.create(model="fake-model", input="Name a colour")  # a hit
    assert first.id.startswith("resp_semcache_") and len(upstream.calls) == 1
    raw = await client.responses.with_raw_response.create(
        model="fake-model", input="And another?", previous_response_id=first.id)
    assert raw.headers["x-semcache"] == "miss"
    sent = upstream.calls[-1]
    assert "previous_response_id" not in sent
    assert sent["input"] == [{"role": "user", "content": "Name a colour"},
                             {"role": "assistant", "content": "answer to: Name a colour"},
                             {"role": "user", "content": "And another?"}]
    await drain(proxy)
    # another conversation that reached the same point is served its second turn
    second = await client.responses.create(model="fake-model", input="Name a colour")
    raw = await client.responses.with_raw_response.create(
        model="fake-model", input="And another?", previous_response_id=second.id)
    assert raw.headers["x-semcache"] == "hit-exact" and len(upstream.calls) == 2
    # another tenant cannot name it: passed through as the upstream's state
    other = await openai_client(proxy, "sk-other").responses.with_raw_response.create(
        model="fake-model", input="And another?", previous_response_id=first.id)
    assert other.headers["x-semcache-reason"] == "server-state"
    assert upstream.calls[-1]["previous_response_id"] == first.id
    # store: false is not kept (the upstream would not keep it either)
    unstored = await client.responses.create(model="fake-model", input="Name a colour",
                                             store=False)
    raw = await client.responses.with_raw_response.create(
        model="fake-model", input="And another?", previous_response_id=unstored.id)
    assert raw.headers["x-semcache-reason"] == "server-state"


async def test_concurrent_chat_and_responses_streams_each_get_their_format(
        proxy: Any, upstream: FakeUpstream) -> None:
    """Identical questions in flight at once share one upstream call (single-flight), but a
    stream is only followed chunk by chunk by a request of the same format."""
    import asyncio

    client = openai_client(proxy)
    upstream.chunk_delay_s = 0.02

    async def responses() -> str:
        async with client.responses.stream(model="fake-model", input="Count to three") as s:
            async for _ in s:
                pass
            return (await s.get_final_response()).output_text

    async def chat() -> str:
        await asyncio.sleep(0.05)  # the Responses call is on its way
        stream = await client.chat.completions.create(
            model="fake-model", stream=True,
            messages=[{"role": "user", "content": "Count to three"}])
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(responses(), chat())
    assert texts == ["answer to: Count to three"] * 2
    assert len(upstream.calls) == 1


async def test_messages_errors_of_the_proxy_are_in_anthropic_shape(proxy: Any,
                                                                   upstream: FakeUpstream) -> None:
    client = anthropic_client(proxy)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model="claude-fake", max_tokens=10, messages=[])
    body: Any = bad.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "messages" in body["error"]["message"] and upstream.calls == []
