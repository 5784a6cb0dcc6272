"""The wire formats (proxy/apis/): what each puts in the scope, what it matches by meaning,
and that each replayed event stream assembles back into the answer it replays."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from semcache.proxy.apis import APIS
from semcache.proxy.apis.answers import answer_text, text_answer, usage_of
from semcache.proxy.errors import BadRequestError
from semcache.proxy.pipeline.sse import SSEParser
from semcache.proxy.policy import entry_id, scope_of
from semcache.proxy.protocol import ParsedRequest


def key(endpoint: str, body: dict[str, Any]) -> tuple[str, str]:
    req = APIS[endpoint].parse(body)  # type: ignore[index]
    scope = scope_of(req, "tenant", "")
    return scope.id, entry_id(scope, req)


def parse(endpoint: str, body: dict[str, Any]) -> ParsedRequest:
    return APIS[endpoint].parse(body)  # type: ignore[index]


def assemble(endpoint: str, events: list[bytes]) -> dict[str, Any] | None:
    parser, assembler = SSEParser(), APIS[endpoint].assembler()  # type: ignore[index]
    for payload in parser.feed(b"".join(events)):
        assembler.feed(payload)
    return assembler.result()


RESPONSE = {"model": "m", "input": "What is a cache?"}


def test_responses_scope_holds_instructions_earlier_items_tools_and_parameters() -> None:
    base = key("responses", RESPONSE)
    earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    variants = [
        {**RESPONSE, "instructions": "Be brief."},
        {**RESPONSE, "input": [*earlier, {"role": "user", "content": "What is a cache?"}]},
        {**RESPONSE, "tools": [{"type": "function", "name": "f", "parameters": {}}]},
        {**RESPONSE, "temperature": 0.5},
        {**RESPONSE, "max_output_tokens": 5},
        {**RESPONSE, "text": {"format": {"type": "json_object"}}},
        {**RESPONSE, "reasoning": {"effort": "high"}},
        {**RESPONSE, "model": "other"},
    ]
    scopes = {key("responses", v)[0] for v in variants}
    assert base[0] not in scopes and len(scopes) == len(variants)
    # what does not change the answer stays out
    same = {**RESPONSE, "store": False, "metadata": {"a": "b"}, "user": "u", "stream": True}
    assert key("responses", same) == base
    spaced = {**RESPONSE, "input": [{"role": "user", "type": "message",
                                     "content": [{"type": "input_text",
                                                  "text": "What  is a cache?"}]}]}
    assert key("responses", spaced) == base


def test_a_responses_request_that_says_what_chat_says_is_scoped_as_chat() -> None:
    chat = {"model": "m", "temperature": 0, "max_completion_tokens": 9,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello"},
                         {"role": "user", "content": "What is a cache?"}]}
    responses = {"model": "m", "temperature": 0, "max_output_tokens": 9,
                 "instructions": "Be brief.", "text": {"format": {"type": "text"}},
                 "input": [{"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": [{"type": "output_text",
                                                              "text": "Hello"}]},
                           {"role": "user", "content": "What is a cache?"}]}
    assert key("chat", chat) == key("responses", responses)
    req = parse("responses", responses)
    assert req.history[-1] == {"role": "assistant", "content": "Hello"}  # for the chains
    tooled = {**responses, "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    assert key("responses", tooled)[0] != key("chat", chat)[0]


def test_responses_semantic_text_and_server_state() -> None:
    assert parse("responses", RESPONSE).query_text == "What is a cache?"
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    pictured = {**RESPONSE, "input": [{"role": "user", "content": [
        image, {"type": "input_text", "text": "What is this?"}]}]}
    assert parse("responses", pictured).query_text is None  # exact tier only
    output = {**RESPONSE, "input": [{"type": "function_call_output", "call_id": "c",
                                     "output": "42"}]}
    assert parse("responses", output).query_text is None
    for name, value in (("previous_response_id", "resp_1"), ("conversation", "conv_1"),
                        ("prompt", {"id": "pmpt_1"}), ("background", True)):
        assert parse("responses", {**RESPONSE, name: value}).bypass_reason == "server-state"
    assert parse("responses", RESPONSE).bypass_reason is None
    for bad in ({"model": "m"}, {"model": "m", "input": []}, {"model": "m", "input": [1]},
                {**RESPONSE, "instructions": 3}, {**RESPONSE, "temperature": "hot"}):
        with pytest.raises(BadRequestError):
            parse("responses", bad)


MESSAGE = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}


def test_messages_scope_and_text_only() -> None:
    base = key("messages", MESSAGE)
    variants = [{**MESSAGE, "system": "Be brief."}, {**MESSAGE, "max_tokens": 11},
                {**MESSAGE, "tools": [{"name": "f", "input_schema": {}}]},
                {**MESSAGE, "messages": [{"role": "user", "content": "Earlier"},
                                         {"role": "assistant", "content": "Yes"},
                                         {"role": "user", "content": "Hi"}]}]
    scopes = {key("messages", v)[0] for v in variants}
    assert base[0] not in scopes and len(scopes) == len(variants)
    blocks = {**MESSAGE, "metadata": {"user_id": "u"}, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}]}
    assert key("messages", blocks) == base
    tool_result = {**MESSAGE, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "w",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "sunny"}]}]}
    assert parse("messages", tool_result).bypass_reason == "non-text-content"
    assert parse("messages", MESSAGE).bypass_reason is None
    with pytest.raises(BadRequestError):
        parse("messages", {**MESSAGE, "messages": [{"role": "system", "content": "x"}]})


ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "c",
    "content": [{"type": "text", "text": "Let me look that up for you, one moment."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Paris", "days": [1, 2]}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 30}}


def test_messages_stream_replay_assembles_back() -> None:
    api = APIS["messages"]
    body = api.answer_of(ANTHROPIC_ANSWER)
    assert body is not None and body["id"] != "msg_1"
    events = api.events(body, parse("messages", MESSAGE))
    assert events[0].startswith(b"event: message_start\n")
    assert events[-1].startswith(b"event: message_stop\n")
    assert assemble("messages", events) == body
    assert assemble("messages", events[:-1]) is None  # no message_stop: cut off
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}\n\n'
    assert assemble("messages", [*events[:-1], error, events[-1]]) is None
    assert usage_of(body) == (12, 30)


RESPONSES_ANSWER = {
    "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
    "model": "m", "output": [
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "A cache keeps answers close at hand.",
                      "annotations": [], "logprobs": []}]}],
    "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
    "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def test_responses_stream_replay_assembles_back_and_crosses_to_chat() -> None:
    api = APIS["responses"]
    body = api.answer_of(RESPONSES_ANSWER)
    assert body is not None
    events = api.events(body, parse("responses", RESPONSE))
    assert assemble("responses", events) == body
    assert assemble("responses", events[:-1]) is None  # no response.completed
    numbers = [orjson.loads(e.split(b"data: ", 1)[1])["sequence_number"] for e in events]
    assert numbers == list(range(len(events)))
    chat = APIS["chat"].answer_of(RESPONSES_ANSWER)
    assert chat is not None and answer_text(chat) == answer_text(RESPONSES_ANSWER)
    assert chat["usage"]["prompt_tokens"] == 5
    back = api.answer_of(chat)
    assert back is not None and answer_text(back) == answer_text(RESPONSES_ANSWER)
    assert assemble("responses", api.events(back, parse("responses", RESPONSE))) == back


def test_only_a_plain_text_answer_crosses_formats() -> None:
    calls = {"id": "c", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "t", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}}]}
    assert text_answer(calls) is None and APIS["responses"].answer_of(calls) is None
    two = {"id": "c", "object": "chat.completion", "model": "m", "choices": [
        {"index": i, "finish_reason": "stop",
         "message": {"role": "assistant", "content": "x"}} for i in range(2)]}
    assert APIS["responses"].answer_of(two) is None
    reasoning = {**RESPONSES_ANSWER, "output": [{"type": "reasoning", "id": "r", "summary": []},
                                                *RESPONSES_ANSWER["output"]]}  # type: ignore[misc]
    assert APIS["chat"].answer_of(reasoning) is None
    assert APIS["messages"].answer_of(RESPONSES_ANSWER) is None
    assert APIS["completions"].answer_of(RESPONSES_ANSWER) is None


def test_what_a_responses_answer_must_be_to_be_stored() -> None:
    api = APIS["responses"]
    assert api.is_answer(RESPONSES_ANSWER)
    cut = {**RESPONSES_ANSWER, "status": "incomplete"}
    assert api.is_answer({**cut, "incomplete_details": {"reason": "max_output_tokens"}})
    assert not api.is_answer({**cut, "incomplete_details": {"reason": "content_filter"}})
    assert not api.is_answer({**RESPONSES_ANSWER, "status": "failed"})
    assert not api.is_answer({**RESPONSES_ANSWER, "status": "in_progress"})
    truncated = api.answer_of({**cut, "incomplete_details": {"reason": "max_output_tokens"}})
    assert truncated is not None
    events = api.events(truncated, parse("responses", RESPONSE))
    assert events[-1].startswith(b"event: response.incomplete\n")
    assert assemble("responses", events) == truncated
    chat = APIS["chat"].answer_of(truncated)
    assert chat is not None and chat["choices"][0]["finish_reason"] == "length"
