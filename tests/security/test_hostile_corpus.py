"""The hostile-body corpus (loadtest/hostile.py): JSON nested to every depth, 4 MB bodies
built to be slow to parse, odd encodings, malformed HTTP framing. Every answer is a 2xx
relayed from the upstream or a 4xx in the OpenAI shape with X-Semcache and X-Request-Id:
never a 5xx, never a dropped connection."""

from __future__ import annotations

import json

import pytest

from semcache.loadtest.hostile import (
    CHAT,
    DEPTH_CASES,
    ENCODING_CASES,
    FRAMING,
    MAX_BODY,
    SIZE_CASES,
)

from .conftest import LiveProxy
from .test_hostile_input import alive, post, raw_request


def assert_proxy_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    """A 2xx from the upstream, or a 4xx of the proxy's own in the OpenAI shape."""
    assert status != 0, "the proxy dropped the connection without an answer"
    assert status < 500, (status, body[:300])
    assert "x-semcache" in headers, headers
    if status >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["type"] == "invalid_request_error" and "Traceback" not in error["message"]
        assert headers.get("x-request-id"), headers


@pytest.mark.parametrize("case", list(DEPTH_CASES), ids=list(DEPTH_CASES))
def test_any_depth_is_a_400_or_processed(live: LiveProxy, case: str) -> None:
    path, body = DEPTH_CASES[case]
    status, headers, answer = raw_request(live, post(path, body))
    assert_proxy_answer(status, headers, answer)


@pytest.mark.parametrize("case", list(SIZE_CASES), ids=list(SIZE_CASES))
def test_bodies_built_to_be_slow_to_parse(live: LiveProxy, case: str) -> None:
    body = SIZE_CASES[case]
    assert len(body) <= MAX_BODY
    status, headers, answer = raw_request(live, post(CHAT if b'"prompt"' not in body
                                                     else "/v1/completions", body), timeout=30)
    assert_proxy_answer(status, headers, answer)
    if case in ("long-text", "token-ids-under-the-limit"):
        assert status == 200  # few values however long: not refused
    if case in ("nested-small-lists", "empty-lists", "small-objects", "many-messages",
                "token-ids"):
        assert json.loads(answer)["error"]["code"] == "too_many_values"


@pytest.mark.parametrize("case", list(ENCODING_CASES), ids=list(ENCODING_CASES))
def test_odd_encodings(live: LiveProxy, case: str) -> None:
    body, content_type = ENCODING_CASES[case]
    status, headers, answer = raw_request(live, post(CHAT, body, content_type=content_type
                                                     or "application/json"))
    assert_proxy_answer(status, headers, answer)


@pytest.mark.parametrize("case", list(FRAMING), ids=list(FRAMING))
def test_malformed_framing_gets_an_openai_error(live: LiveProxy, case: str) -> None:
    status, headers, answer = raw_request(live, FRAMING[case], timeout=5)
    assert_proxy_answer(status, headers, answer)
    assert alive(live)
