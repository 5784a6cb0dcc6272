"""Hostile requests, sent as raw bytes where a client library would refuse to: oversized,
deeply nested, invalid UTF-8 and wrong-typed bodies, header injection, request smuggling,
path traversal on the passthrough routes. Always a clean 4xx, never a 500, never a crash."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from .conftest import LiveProxy

CHAT = "/v1/chat/completions"


def raw_request(live: LiveProxy, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; the status, headers and body of the answer (0 if the proxy
    closed the connection without one)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def post(path: str, body: bytes, extra: str = "", content_type: str = "application/json") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode("latin-1") + body


def assert_clean_4xx(status: int, body: bytes, allowed: tuple[int, ...] = (400, 413, 415)) -> None:
    assert status in allowed, (status, body[:300])
    if body:
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and "Traceback" not in error["message"]


def alive(live: LiveProxy) -> bool:
    status, _, _ = raw_request(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return status == 200


def chat(content: Any, **extra: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
        b'{"model": "m", "messages": [{"role": "user", "content": "ok"}], "temperature": NaN}',
        b'{"model": "m", "messages": [{"role": "user", "content": "ok"}], "max_tokens": 1e999}',
        b'{"model": "m", "messages": [{"role": "user", "content": "ok"}], "n": 99999999999999999999}',
        b'\xef\xbb\xbf{"model": "m", "messages": []}',  # a byte-order mark
        '{"model": "m", "messages": []}'.encode("utf-16"),
        b'{"a":' * 20000 + b"1" + b"}" * 20000,  # deeply nested objects
        b'{"model": "m", "messages": [' + b'{"role": "user", "content": [' * 3000 + b"]}" * 3000 + b"]}",
        b'{"model": ["m"], "messages": [{"role": "user", "content": "ok"}]}',
        b'{"model": "m", "messages": [{"role": {"x": 1}, "content": "ok"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "ok"}], '
        b'"stream_options": {"include_usage": "yes"}}',
        b'{"model": "m", "messages": [{"role": "user", "content": "ok"}], "stop": "x", "n": true}',
        b"\x00\x01\x02",
    ],
)
def test_hostile_bodies_are_clean_4xx(live: LiveProxy, body: bytes) -> None:
    status, _, answer = raw_request(live, post(CHAT, body))
    assert_clean_4xx(status, answer)
    assert alive(live)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": null}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "ok"}], "logit_bias": []}',
    ],
)
def test_odd_but_parseable_bodies_are_refused_or_relayed(live: LiveProxy, body: bytes) -> None:
    """Fields the proxy does not interpret are the upstream's to judge: relayed (it answers
    for itself), or refused with a 4xx; never a 500."""
    status, headers, answer = raw_request(live, post(CHAT, body))
    if status == 200:
        assert headers["x-semcache"] in ("miss", "bypass")
    else:
        assert_clean_4xx(status, answer)


def test_oversized_body_without_content_length(live: LiveProxy) -> None:
    """Chunked, so the size is only known while reading: still a 413, not a 500."""
    chunk = b"x" * 65536
    parts = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(80))  # 5 MiB
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    status, _, answer = raw_request(live, head + parts + b"0\r\n\r\n")
    assert status in (0, 413), (status, answer[:200])  # or the connection is cut
    assert alive(live)


def test_oversized_content_length_is_refused_before_reading(live: LiveProxy) -> None:
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n").encode()
    status, _, answer = raw_request(live, head + b"{}", timeout=2)
    assert status == 413, answer[:200]


@pytest.mark.parametrize(
    "extra",
    [
        "X-Request-Id: abc\rInjected: yes\r\n",  # a bare CR inside a value
        "X-Request-Id: abc\nInjected: yes\r\n",  # a bare LF
        "X-Semcache-Namespace: a\r\n b\r\n",  # obsolete line folding
        "X-Request-Id: abc\x00def\r\n",
        "Transfer-Encoding: chunked\r\n",  # with Content-Length too: smuggling
        "Content-Length: 5\r\n",  # a second, different Content-Length
    ],
)
def test_header_injection_and_smuggling_are_refused(live: LiveProxy, extra: str) -> None:
    before = len(live.recorder.seen)
    status, headers, _ = raw_request(live, post(CHAT, chat("injected?"), extra))
    # Either refused outright, or (if the parser accepted the bytes) nothing injected went
    # through: not forwarded upstream as a header, not reflected back.
    assert status != 500
    assert "injected" not in headers
    for seen in live.recorder.seen[before:]:
        assert "Injected" not in seen["headers"] and "injected" not in {h.lower() for h in seen["headers"]}
    if status == 200:
        assert "\r" not in headers.get("x-request-id", "") and "\n" not in headers.get("x-request-id", "")


@pytest.mark.parametrize(
    "value",
    ["abc def", "a" * 500, "req\u00e9", "<script>", "x;y=1"],
)
def test_request_id_is_reflected_only_when_sane(live: LiveProxy, value: str) -> None:
    status, headers, _ = raw_request(live, post(CHAT, chat(f"rid {value!r}"),
                                                f"X-Request-Id: {value}\r\n"))
    assert status == 200
    rid = headers["x-request-id"]
    assert rid == value or rid.startswith("req-")
    assert rid.isascii() and " " not in rid and len(rid) <= 128


@pytest.mark.parametrize(
    "path",
    [
        "/v1/echo/../../admin",
        "/v1/echo/%2e%2e/%2e%2e/admin",
        "/v1/echo/%2E%2E%2F%2E%2E%2Fadmin",
        "/v1/echo/%252e%252e/%252e%252e/admin",  # double-encoded
        "/v1/echo/..%5c..%5cadmin",  # backslashes
        "/v1/echo/.%2e/.%2e/admin",
        "/v1/echo/..;/..;/admin",
        "/v1/echo/%00/../admin",
        "/v1/..",
        "/v1/%2e%2e/%2e%2e/etc/passwd",
        "/v1//echo/x",
        "/v1/echo/x%0d%0aInjected:%20yes",
    ],
)
def test_passthrough_never_leaves_v1(live: LiveProxy, path: str) -> None:
    before = len(live.recorder.seen)
    status, headers, answer = raw_request(
        live, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status != 500 and status != 0, (status, answer[:200])
    for seen in live.recorder.seen[before:]:
        segments = seen["path"].split("/")
        assert seen["path"].startswith("/v1/") and ".." not in segments, seen
        assert "Injected" not in seen["headers"]
    assert "injected" not in headers


def test_absolute_form_request_target_does_not_proxy_elsewhere(live: LiveProxy) -> None:
    before = len(live.recorder.seen)
    status, _, _ = raw_request(
        live, b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status in (400, 404)
    assert live.recorder.seen[before:] == []
