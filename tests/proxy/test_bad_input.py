"""Bad input gets a 4xx with an OpenAI-shaped error body, never a 500 or a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from semcache.loadtest.fake_upstream import FakeUpstream

CHAT = "/v1/chat/completions"


def assert_openai_error(status: int, raw: bytes, expected: int,
                        headers: Any = None) -> dict[str, Any]:
    assert status == expected, raw
    if headers is not None:  # the proxy's headers are on its own errors too
        assert headers["X-Semcache"] == "bypass" and headers["X-Request-Id"]
        assert headers["X-Semcache-Reason"] == "invalid-request"
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
        b"[" * 5000 + b"]" * 5000,  # deeply nested
    ],
    ids=["malformed", "empty", "array", "string", "invalid-utf8", "deeply-nested"],
)
async def test_unparseable_bodies(proxy: Any, upstream: FakeUpstream, raw: bytes) -> None:
    resp = await proxy.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert_openai_error(resp.status, await resp.read(), 400, resp.headers)
    assert upstream.calls == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": 42, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": [1]}]}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
         "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5},
         "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": [1]}, "stop"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream_options": 3},
         "stream_options"),
    ],
)
async def test_wrong_or_missing_fields(
    proxy: Any, upstream: FakeUpstream, body: dict[str, Any], param: str
) -> None:
    resp = await proxy.post(CHAT, json=body)
    error = assert_openai_error(resp.status, await resp.read(), 400, resp.headers)
    assert error["param"] == param
    assert upstream.calls == []


async def test_completions_needs_a_prompt(proxy: Any, upstream: FakeUpstream) -> None:
    for body in ({"model": "m"}, {"model": "m", "prompt": 5}, {"model": "m", "prompt": [{"a": 1}]}):
        resp = await proxy.post("/v1/completions", json=body)
        assert_openai_error(resp.status, await resp.read(), 400)


async def test_body_over_the_limit_is_413(proxy: Any, upstream: FakeUpstream) -> None:
    limit = 4 * 1024 * 1024  # the default server.max_body_bytes
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (limit + 10)}]}
    resp = await proxy.post(CHAT, json=big)
    assert_openai_error(resp.status, await resp.read(), 413, resp.headers)
    # the same body sent chunked (no Content-Length) is refused too
    payload = json.dumps(big).encode()

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    resp = await proxy.post(CHAT, data=chunks(), headers={"Content-Type": "application/json"})
    assert_openai_error(resp.status, await resp.read(), 413)
    assert upstream.calls == []


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_unsupported_content_type_is_415(proxy: Any, upstream: FakeUpstream, ctype: str) -> None:
    resp = await proxy.post(CHAT, data=b'{"model": "m"}', headers={"Content-Type": ctype})
    assert_openai_error(resp.status, await resp.read(), 415, resp.headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Semcache-TTL": "soon"},
        {"X-Semcache-TTL": "0"},
        {"X-Semcache-TTL": "999999999"},
        {"X-Semcache-Threshold": "high"},
        {"X-Semcache-Threshold": "1.5"},
        {"X-Semcache-Namespace": "bad namespace with spaces"},
        {"Cache-Control": "max-age=abc"},
    ],
)
async def test_invalid_cache_headers_are_400(
    proxy: Any, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    resp = await proxy.post(CHAT, json=body, headers=headers)
    assert_openai_error(resp.status, await resp.read(), 400)


async def test_unknown_route_and_method_are_openai_errors(proxy: Any) -> None:
    resp = await proxy.get("/nope", headers={"X-Request-Id": "mine"})
    assert resp.status == 404 and "error" in json.loads(await resp.read())
    assert resp.headers["X-Semcache"] == "bypass" and resp.headers["X-Request-Id"] == "mine"
    resp = await proxy.post("/healthz")
    assert resp.status == 405 and "error" in json.loads(await resp.read())
    assert resp.headers["X-Semcache"] == "bypass" and "GET" in resp.headers["Allow"]


async def test_huge_numbers_are_forwarded_not_a_500(proxy: Any, upstream: FakeUpstream) -> None:
    """An integral float too large for a 64-bit int (found by tests/security/test_fuzz.py)."""
    resp = await proxy.post(CHAT, data=b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
                                       b'"x_custom":1233e77}', headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.read()
