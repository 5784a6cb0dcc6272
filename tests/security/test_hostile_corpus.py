"""The hostile-body corpus: JSON nested to every depth around the parser's limits, 4 MB
bodies built to be slow to parse, odd encodings, and malformed HTTP framing. Every answer
is a 2xx relayed from the upstream or a 4xx in the OpenAI shape with X-Semcache and
X-Request-Id: never a 5xx, never a dropped connection."""

from __future__ import annotations

import json

import pytest

from .conftest import LiveProxy
from .framing import FRAMING
from .test_hostile_input import alive, post, raw_request

CHAT = "/v1/chat/completions"
MAX_BODY = 4 * 1024 * 1024


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def chat_with(field: str, value: bytes) -> bytes:
    return b'{"model":"m","messages":[{"role":"user","content":"deep"}],"' + field.encode() \
        + b'":' + value + b"}"


DEPTHS = [64, 128, 200, 250, 252, 253, 254, 255, 256, 300, 999, 1000, 1001, 1023, 1024,
          1025, 5000]

DEPTH_CASES: dict[str, tuple[str, bytes]] = {}
for d in DEPTHS:
    DEPTH_CASES[f"param-arrays-{d}"] = (CHAT, chat_with("x_custom", arrays(d)))
    DEPTH_CASES[f"param-objects-{d}"] = (CHAT, chat_with("response_format", objects(d)))
    DEPTH_CASES[f"metadata-{d}"] = (CHAT, chat_with("metadata", objects(d)))  # not in the scope
    DEPTH_CASES[f"content-{d}"] = (CHAT, b'{"model":"m","messages":[{"role":"user","content":'
                                   b'[{"type":"x","v":' + arrays(d) + b"}]}]}")
    DEPTH_CASES[f"context-{d}"] = (CHAT, b'{"model":"m","messages":[{"role":"system","content":"s","x":'
                                   + objects(d) + b'},{"role":"user","content":"q"}]}')
    DEPTH_CASES[f"prompt-{d}"] = ("/v1/completions", b'{"model":"m","prompt":' + arrays(d) + b"}")


def fill(unit: bytes, prefix: bytes = b'{"model":"m","messages":[{"role":"user","content":"x"}],"x":[',
         suffix: bytes = b"1]}") -> bytes:
    return prefix + unit * ((MAX_BODY - 64 - len(prefix) - len(suffix)) // len(unit)) + suffix


SIZE_CASES: dict[str, bytes] = {
    "nested-small-lists": fill(b"[[1],[2]],"),
    "empty-lists": fill(b"[],"),
    "small-objects": fill(b'{"a":1},'),
    "ints": fill(b"1,"),
    "floats": fill(b"0.5,"),
    "integral-floats": fill(b"2.0,"),
    "short-strings": fill(b'"a",'),
    "bracket-strings": fill(b'"[{,",'),
    "many-messages": fill(b'{"role":"user","content":"x"},', b'{"model":"m","messages":[',
                          b'{"role":"user","content":"last"}]}'),
    "many-parts": fill(b'{"type":"text","text":"x"},',
                       b'{"model":"m","messages":[{"role":"user","content":[',
                       b'{"type":"text","text":"y"}]}]}'),
    "long-text": fill(b"lorem, ipsum [dolor] {sit} \\\"amet\\\" ",
                      b'{"model":"m","messages":[{"role":"user","content":"', b'"}]}'),
    "token-ids": fill(b"1234,", b'{"model":"m","prompt":[', b"1]}"),  # 840k values: refused
    "token-ids-under-the-limit": b'{"model":"m","prompt":[' + b"1234," * 90_000 + b"1]}",
    "wide-object": b'{"model":"m","messages":[{"role":"user","content":"x"}],"x":{'
                   + b",".join(b'"k%d":1.0' % i for i in range(150_000)) + b"}}",
}

ENCODING_CASES: dict[str, tuple[bytes, str]] = {
    "utf-16-le-bom": ('{"model":"m","messages":[{"role":"user","content":"x"}]}'.encode("utf-16"), ""),
    "utf-16-be": ('{"model":"m","messages":[{"role":"user","content":"x"}]}'.encode("utf-16-be"), ""),
    "utf-32": ('{"model":"m","messages":[{"role":"user","content":"x"}]}'.encode("utf-32"), ""),
    "utf-8-bom": (b'\xef\xbb\xbf{"model":"m","messages":[{"role":"user","content":"x"}]}', ""),
    "latin-1-byte": (b'{"model":"m","messages":[{"role":"user","content":"caf\xe9"}]}', ""),
    "overlong-utf-8": (b'{"model":"m","messages":[{"role":"user","content":"\xc0\xaf"}]}', ""),
    "utf-8-surrogate-bytes": (b'{"model":"m","messages":[{"role":"user","content":"\xed\xa0\x80"}]}', ""),
    "escaped-lone-surrogate": (b'{"model":"m","messages":[{"role":"user","content":"\\udc00x"}]}', ""),
    "escaped-nul": (b'{"model":"m","messages":[{"role":"user","content":"a\\u0000b"}]}', ""),
    "raw-nul-in-string": (b'{"model":"m","messages":[{"role":"user","content":"a\x00b"}]}', ""),
    "raw-control-in-string": (b'{"model":"m","messages":[{"role":"user","content":"a\x1fb"}]}', ""),
    "bad-escape": (b'{"model":"m","messages":[{"role":"user","content":"a\\xb"}]}', ""),
    "charset-utf-16-label": (b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
                             "application/json; charset=utf-16"),
    "huge-integer": (b'{"model":"m","messages":[{"role":"user","content":"x"}],"seed":1'
                     + b"0" * 5000 + b"}", ""),
    "huge-exponent": (b'{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1e999}', ""),
    "tiny-exponent": (b'{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":1e-999}', ""),
    "negative-zero": (b'{"model":"fake-model","messages":[{"role":"user","content":"x"}],'
                      b'"temperature":-0.0}', ""),
    "duplicate-keys": (b'{"model":"m","model":"fake-model","messages":[{"role":"user","content":"x"}]}', ""),
    "trailing-garbage": (b'{"model":"m","messages":[{"role":"user","content":"x"}]} xyz', ""),
    "trailing-comma": (b'{"model":"m","messages":[{"role":"user","content":"x"},]}', ""),
    "comments": (b'{"model":"m", /* hi */ "messages":[{"role":"user","content":"x"}]}', ""),
}


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
