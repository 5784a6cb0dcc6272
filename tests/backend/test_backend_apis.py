"""The Responses and Anthropic Messages APIs of the backend, with the official openai and
anthropic clients on a real port: the same answer as the chat route for the same turns,
streamed token by token in each API's event format, and refusals in each API's error shape."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from semcache.backend.server import build_app, build_engine
from semcache.proxy.apis.messages import MessagesAssembler
from semcache.proxy.apis.responses import ResponsesAssembler

from .conftest import TINY_SETTINGS, make_model, torch, until

INSTRUCTIONS = "Answer briefly."
QUESTION = "Hello there"
CHAT = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": QUESTION}]
GREEDY = {"temperature": 0}
"""Anthropic's current SDK leaves temperature out of its signature; the API takes it."""
RESPONSE_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added"]
RESPONSE_END = ["response.output_text.done", "response.content_part.done",
                "response.output_item.done"]


async def _serve(aiohttp_server: Any, model: Any, tokenizer: Any) -> Any:
    settings = dataclasses.replace(TINY_SETTINGS, default_max_tokens=24)
    engine = build_engine(model, tokenizer, settings, "tiny")
    return await aiohttp_server(build_app(settings, engine))


@pytest.fixture
async def backend(aiohttp_server, tiny) -> Any:
    return await _serve(aiohttp_server, *tiny)


@pytest.fixture
async def eos_backend(aiohttp_server, tiny) -> Any:
    """A model whose every first token ends the answer: flat logits pick id 0, made its end
    of sequence token (the random tiny model runs to the token limit)."""
    model = make_model(len(tiny[1]), seed=1)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.config.eos_token_id = 0
    model.generation_config.eos_token_id = 0
    return await _serve(aiohttp_server, model, tiny[1])


def _openai(server: Any) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused",
                              max_retries=0)


def _anthropic(server: Any) -> Any:
    import anthropic

    return anthropic.AsyncAnthropic(base_url=str(server.make_url("")), api_key="unused",
                                    max_retries=0)


async def _sse(server: Any, path: str, body: dict) -> tuple[list[str], list[str]]:
    """The `event:` names and the data's types of a raw event stream."""
    import aiohttp

    names, types = [], []
    async with aiohttp.ClientSession() as session, \
            session.post(server.make_url(path), json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for line in resp.content:
            if line.startswith(b"event: "):
                names.append(line[7:].decode().strip())
            elif line.startswith(b"data: "):
                types.append(json.loads(line[6:])["type"])
    return names, types


async def _chat(client: Any, max_tokens: int, messages: list[dict] = CHAT) -> Any:
    answer = await client.chat.completions.create(model="tiny", messages=messages,
                                                  temperature=0, max_tokens=max_tokens)
    return answer.choices[0], answer.usage


async def test_responses_answer_as_chat_does_whole_and_streamed(backend) -> None:
    client = _openai(backend)
    choice, usage = await _chat(client, 12)
    assert choice.finish_reason == "length"  # the random model runs to the limit
    whole = await client.responses.create(model="tiny", instructions=INSTRUCTIONS,
                                          input=QUESTION, temperature=0, max_output_tokens=12)
    assert whole.id.startswith("resp_") and whole.object == "response"
    assert whole.output_text == choice.message.content
    assert whole.status == "incomplete"
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (usage.prompt_tokens, 12)
    assert whole.usage.total_tokens == usage.total_tokens
    # The same turns as input items, streamed.
    items = [{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    stream = await client.responses.create(model="tiny", instructions=INSTRUCTIONS,
                                           input=items, temperature=0, max_output_tokens=12,
                                           stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert kinds == [*RESPONSE_EVENTS, *["response.output_text.delta"] * len(deltas),
                     *RESPONSE_END, "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len(deltas) == 12  # one character per token: token by token, not one chunk
    assert "".join(deltas) == choice.message.content
    final = events[-1].response
    assert final.output_text == choice.message.content and final.usage.output_tokens == 12
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"
    await client.close()


async def test_responses_stream_the_proxy_would_store(backend) -> None:
    """The raw stream, read by the proxy's own assembler, is the answer it would cache."""
    import aiohttp

    body = {"model": "tiny", "input": QUESTION, "temperature": 0, "max_output_tokens": 6,
            "stream": True}
    assembler = ResponsesAssembler()
    async with aiohttp.ClientSession() as session, \
            session.post(backend.make_url("/v1/responses"), json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for line in resp.content:
            if line.startswith(b"data: "):
                assembler.feed(line[6:].decode())
    stored = assembler.result()
    assert stored is not None and stored["status"] == "incomplete"
    assert len(stored["output"][0]["content"][0]["text"]) == 6


async def test_responses_completed_at_end_of_sequence(eos_backend) -> None:
    client = _openai(eos_backend)
    whole = await client.responses.create(model="tiny", input=QUESTION, max_output_tokens=8,
                                          temperature=0)
    assert whole.status == "completed" and whole.incomplete_details is None
    assert whole.usage.output_tokens == 1  # the end of sequence token
    async with client.responses.stream(model="tiny", input=QUESTION, max_output_tokens=8,
                                       temperature=0) as stream:
        final = await stream.get_final_response()
    assert final.status == "completed" and final.output_text == whole.output_text
    await client.close()


async def test_messages_answer_as_chat_does_whole_and_streamed(backend) -> None:
    openai_client, client = _openai(backend), _anthropic(backend)
    choice, usage = await _chat(openai_client, 12)
    turns = [{"role": "user", "content": QUESTION}]
    whole = await client.messages.create(model="tiny", system=INSTRUCTIONS, messages=turns,
                                         max_tokens=12, extra_body=GREEDY)
    assert whole.id.startswith("msg_") and whole.type == "message" and whole.model == "tiny"
    assert [b.type for b in whole.content] == ["text"]
    assert whole.content[0].text == choice.message.content
    assert whole.stop_reason == "max_tokens" and whole.stop_sequence is None
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (usage.prompt_tokens, 12)
    # Streamed, with system as text blocks and the question as a text block.
    blocks = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    async with client.messages.stream(model="tiny", system=[{"type": "text",
                                                             "text": INSTRUCTIONS}],
                                      messages=blocks, max_tokens=12, extra_body=GREEDY) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 12 and "".join(pieces) == choice.message.content
    assert final.content[0].text == choice.message.content
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 12
    # On the wire (the SDK hides pings): each event's `event:` line names its type.
    body = {"model": "tiny", "messages": turns, "max_tokens": 3, "stream": True, **GREEDY}
    names, types = await _sse(backend, "/v1/messages", body)
    assert names == types == ["message_start", "content_block_start", "ping",
                              *["content_block_delta"] * 3, "content_block_stop",
                              "message_delta", "message_stop"]
    await openai_client.close()
    await client.close()


async def test_messages_stop_sequences_and_end_turn(backend, eos_backend) -> None:
    import aiohttp

    openai_client, client = _openai(backend), _anthropic(backend)
    turns = [{"role": "user", "content": QUESTION}]
    choice, _ = await _chat(openai_client, 24, turns)
    text = choice.message.content
    stop = text[8:10]
    cut = text[: text.find(stop)]
    whole = await client.messages.create(model="tiny", messages=turns, max_tokens=24,
                                         extra_body=GREEDY, stop_sequences=[stop, "\x00never"])
    assert whole.stop_reason == "stop_sequence" and whole.stop_sequence == stop
    assert whole.content[0].text == cut
    # The event stream, as the proxy's assembler reads it: what it would store.
    body = {"model": "tiny", "messages": turns, "max_tokens": 24, "temperature": 0,
            "stop_sequences": [stop], "stream": True}
    assembler = MessagesAssembler()
    async with aiohttp.ClientSession() as session, \
            session.post(backend.make_url("/v1/messages"), json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                assembler.feed(line[6:].decode())
    stored = assembler.result()
    assert stored is not None and stored["content"][0]["text"] == cut
    assert (stored["stop_reason"], stored["stop_sequence"]) == ("stop_sequence", stop)
    ended = await _anthropic(eos_backend).messages.create(model="tiny", messages=turns,
                                                          max_tokens=8, extra_body=GREEDY)
    assert ended.stop_reason == "end_turn" and ended.stop_sequence is None
    await openai_client.close()
    await client.close()


TOOL = {"type": "function", "name": "weather", "parameters": {"type": "object"}}


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [TOOL]}, "tools"),
    ({"previous_response_id": "resp_abc"}, "previous_response_id"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text"),
    ({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
     "input[0].content[1]"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
     "input[0]"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"background": True}, "background"),
])
async def test_responses_refusals_name_the_parameter(backend, extra, param) -> None:
    import openai

    client = _openai(backend)
    body = {"model": "tiny", "input": QUESTION, "max_output_tokens": 4, **extra}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(**body, stream=stream)
        assert refused.value.body["param"] == param
        assert refused.value.body["code"] == "unsupported_parameter"
    await client.close()


@pytest.mark.parametrize(("extra", "named"), [
    ({"tools": [{"name": "weather", "input_schema": {"type": "object"}}]}, "tools"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"top_k": 5}, "top_k"),
    ({"output_config": {"effort": "high"}}, "output_config"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": QUESTION},
                   {"role": "assistant", "content": "Well"}]}, "messages.1"),
])
async def test_messages_refusals_in_anthropic_shape(backend, extra, named) -> None:
    import anthropic

    client = _anthropic(backend)
    turns = [{"role": "user", "content": QUESTION}]
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as refused:  # raw: the SDK's types vary
            await client.messages.create(model="tiny", max_tokens=4, messages=turns,
                                         stream=stream, extra_body=extra)
        assert refused.value.body["type"] == "error"
        error = refused.value.body["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith(f"{named}: ")
    await client.close()


async def test_messages_require_max_tokens(backend) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
            backend.make_url("/v1/messages"),
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("max_tokens: ")


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", {"input": QUESTION, "max_output_tokens": 480}),
    ("/v1/messages", {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 480}),
])
async def test_a_client_leaving_a_stream_frees_its_sequence(make_client, path, body) -> None:
    """A client gone mid-stream: its sequence is cancelled, not run to its limit."""
    client, engine = await make_client(max_seq_len=512)
    resp = await client.post(path, json={"model": "tiny", "stream": True, **body})
    await resp.content.readline()
    resp.close()
    before = engine.stats()["tokens_generated"]
    await until(lambda: engine.stats()["running"] == 0)
    assert engine.stats()["tokens_generated"] - before < 480


async def test_a_conversation_carried_in_input_and_messages(backend) -> None:
    """The backend keeps no state: a second turn sends the first one back, Responses as the
    output items the SDK returned, Messages as an assistant message; both answer as chat
    does for the same three turns."""
    openai_client, claude = _openai(backend), _anthropic(backend)
    first = await openai_client.responses.create(model="tiny", input=QUESTION, temperature=0,
                                                 max_output_tokens=6)
    said = first.output_text
    turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": said},
             {"role": "user", "content": "Go on."}]
    choice, usage = await _chat(openai_client, 6, turns)
    items = [{"role": "user", "content": QUESTION},
             *[item.model_dump(exclude_none=True) for item in first.output],
             {"role": "user", "content": "Go on."}]
    second = await openai_client.responses.create(model="tiny", input=items, temperature=0,
                                                  max_output_tokens=6)
    assert second.output_text == choice.message.content
    assert second.usage.input_tokens == usage.prompt_tokens
    message = await claude.messages.create(model="tiny", messages=turns, max_tokens=6,
                                           extra_body=GREEDY)
    assert message.content[0].text == choice.message.content
    assert message.usage.input_tokens == usage.prompt_tokens
    await openai_client.close()
    await claude.close()
