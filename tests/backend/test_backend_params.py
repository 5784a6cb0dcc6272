"""An honest backend: every parameter it does not honour is refused with a 400 naming it
(never silently ignored, so the proxy never caches an answer as if it had been honoured),
and the values that ask for nothing pass."""

from __future__ import annotations

import pytest

from semcache.backend.server import build_app, build_engine

from .conftest import TINY_SETTINGS

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
TEXT = {"prompt": "hi", "max_tokens": 3, "temperature": 0}
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [TOOL]}, "tools"),
    ({"tools": [TOOL], "tool_choice": "auto"}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "weather"}}}, "tool_choice"),
    ({"functions": [TOOL["function"]]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logit_bias": {"5": 100}}, "logit_bias"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"presence_penalty": -1}, "presence_penalty"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "hi"}}, "prediction"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"store": True}, "store"),
    ({"top_k": 5}, "top_k"),
    ({"repetition_penalty": 1.2}, "repetition_penalty"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "c1", "type": "function",
                        "function": {"name": "weather", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]},
     "messages[1]"),
])
async def test_unhonoured_chat_parameters_are_refused(make_client, extra, param) -> None:
    client, engine = await make_client()
    resp = await client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error.pop("message")
    assert error == {"type": "invalid_request_error", "param": param,
                     "code": "unsupported_parameter"}
    assert engine.stats()["steps"] == 0  # refused before anything ran


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": 2}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"best_of": 3}, "best_of"),
    ({"suffix": "end"}, "suffix"),
    ({"logit_bias": {"1": -100}}, "logit_bias"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"tools": [TOOL]}, "tools"),  # not even a parameter of /v1/completions
])
async def test_unhonoured_completion_parameters_are_refused(make_client, extra, param) -> None:
    client, _ = await make_client()
    resp = await client.post("/v1/completions", json={**TEXT, **extra})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")


async def test_values_that_ask_for_nothing_are_served(make_client) -> None:
    client, _ = await make_client()
    neutral = {"tools": [], "tool_choice": "none", "response_format": {"type": "text"},
               "logprobs": False, "top_logprobs": 0, "logit_bias": {},
               "frequency_penalty": 0, "presence_penalty": 0.0, "modalities": ["text"],
               "store": False, "parallel_tool_calls": False, "user": "u1",
               "metadata": {"a": "b"}, "service_tier": "auto", "n": 2, "seed": 1,
               "stream_options": None}
    resp = await client.post("/v1/chat/completions", json={**CHAT, **neutral})
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["choices"]) == 2
    text = {"logprobs": None, "echo": False, "best_of": 1, "suffix": None, "user": "u1"}
    assert (await client.post("/v1/completions", json={**TEXT, **text})).status == 200


async def test_openai_client_sees_the_refused_parameter(aiohttp_server, tiny) -> None:
    import openai

    engine = build_engine(tiny[0], tiny[1], TINY_SETTINGS, "tiny")
    server = await aiohttp_server(build_app(TINY_SETTINGS, engine))
    client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused",
                                max_retries=0)
    messages = [{"role": "user", "content": "What is the weather?"}]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="tiny", messages=messages, tools=[TOOL],
                                             max_tokens=3)
    assert refused.value.body["param"] == "tools"
    assert refused.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="tiny", messages=messages, max_tokens=3,
                                             response_format={
                                                 "type": "json_schema", "json_schema": {
                                                     "name": "weather", "schema": {}}},
                                             stream=True)
    assert refused.value.body["param"] == "response_format"
    served = await client.chat.completions.create(model="tiny", messages=messages, max_tokens=3,
                                                  tool_choice="none",
                                                  response_format={"type": "text"})
    assert served.choices[0].message.tool_calls is None
    await client.close()
