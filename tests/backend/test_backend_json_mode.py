"""JSON mode by constrained decoding: the automaton, and answers that parse."""

from __future__ import annotations

import json

import pytest

from semcache.backend.json_mode import MAX_BLANK, START, feed

VALID = ['{}', '{ }', '{"a": 1}', '{"a": [1, 2.5, -3e4, 0, true, false, null], "b": {"c": "d"}}',
         '{"s": "quote \\" slash \\\\ uni \\u00e9 tab \\t"}', '{"n": -0.5E+3, "m": [[], {}]}',
         '{ "x" : [ { } ] }', '{"a": "é ü 中文"}']
INVALID = ['[]', '"a"', '1', '{a: 1}', '{"a" 1}', '{"a": 01}', '{"a": 1,}', '{"a": [1,]}',
           '{"a": tru}', '{"a": "x\ny"}', '{"a": "\\x"}', '{"a": -}', '{"a": 1.}', '{}}',
           '{"a": 1]', '{"a": "\\u12g4"}', '{} x', ' {}']


@pytest.mark.parametrize("doc", VALID)
def test_every_prefix_of_an_object_fits_and_only_the_whole_is_done(doc: str) -> None:
    json.loads(doc)  # the cases themselves are JSON
    for end in range(len(doc)):
        state = feed(START, doc[:end])
        assert state is not None and state[0] != "D", doc[:end]
    assert feed(START, doc) is not None and feed(START, doc)[0] == "D"


@pytest.mark.parametrize("doc", INVALID)
def test_what_is_not_an_object_does_not_fit(doc: str) -> None:
    assert feed(START, doc) is None


def test_runs_of_whitespace_are_bounded() -> None:
    assert feed(START, "{" + " " * MAX_BLANK) is not None
    assert feed(START, "{" + " " * (MAX_BLANK + 1)) is None
    assert feed(START, '{"a": "' + " " * 100 + '"}') is not None  # inside strings: text


async def test_json_mode_answers_parse_even_from_a_random_model(make_client) -> None:
    """The tiny model has random weights: unconstrained, its answers are noise. Every
    answer in JSON mode that stops is one JSON object, streamed or not, greedy or sampled."""
    client, engine = await make_client()
    stopped = 0
    for i, temperature in enumerate([0, 0, 0.8, 1.0]):
        body = {"messages": [{"role": "user", "content": f"Answer in JSON, please ({i})."}],
                "response_format": {"type": "json_object"}, "max_tokens": 200,
                "temperature": temperature, "seed": i}
        whole = await (await client.post("/v1/chat/completions", json=body)).json()
        choice = whole["choices"][0]
        text = choice["message"]["content"]
        if choice["finish_reason"] == "stop":
            stopped += 1
            assert isinstance(json.loads(text), dict), text
        else:  # cut at max_tokens: still a prefix of an object
            assert feed(START, text) is not None, text
        stream = await client.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = [json.loads(line[6:]) for line in (await stream.text()).split("\n\n")
                  if line.startswith("data: {")]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == text
    assert stopped >= 1  # a random model mostly writes endless strings: see the slow test
    plain = await (await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Answer in JSON."}], "max_tokens": 40,
        "temperature": 0})).json()
    with pytest.raises(json.JSONDecodeError):  # the constraint is what made them parse
        json.loads(plain["choices"][0]["message"]["content"])


async def test_json_mode_needs_the_word_json_and_no_schema(make_client) -> None:
    client, _ = await make_client()
    body = {"messages": [{"role": "user", "content": "Hello"}],
            "response_format": {"type": "json_object"}}
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "messages"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    resp = await client.post("/v1/chat/completions",
                             json={**body, "response_format": schema})
    assert (await resp.json())["error"]["param"] == "response_format"

