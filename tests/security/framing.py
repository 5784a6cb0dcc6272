"""Malformed HTTP framing: each case is raw bytes that no client library would send."""

from __future__ import annotations

_H = b"Host: x\r\nConnection: close\r\n"
_CHAT = b"POST /v1/chat/completions HTTP/1.1\r\n" + _H + b"Content-Type: application/json\r\n"
_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
_GET = b"GET /v1/models HTTP/1.1\r\n"

FRAMING: dict[str, bytes] = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "bad-version": b"GET /v1/models HTTP/9.9\r\n" + _H + b"\r\n",
    "no-version": b"GET /v1/models\r\n" + _H + b"\r\n",
    "bad-method-chars": b"G@T /v1/models HTTP/1.1\r\n" + _H + b"\r\n",
    "header-without-colon": _GET + _H + b"Broken header\r\n\r\n",
    "space-in-header-name": _GET + _H + b"Bad Header: x\r\n\r\n",
    "separator-in-header-name": _GET + _H + b"X(y): 1\r\n\r\n",
    "nul-in-header-value": _GET + _H + b"X-A: a\x00b\r\n\r\n",
    "bare-lf-in-header": _GET + b"Host: x\nX-A: b\r\nConnection: close\r\n\r\n",
    "bare-cr-in-header": _GET + _H + b"X-A: a\rb\r\n\r\n",
    "obs-fold": _GET + _H + b"X-A: a\r\n b\r\n\r\n",
    "header-too-long": _GET + _H + b"X-A: " + b"a" * 9000 + b"\r\n\r\n",
    "request-line-too-long": b"GET /v1/" + b"a" * 9000 + b" HTTP/1.1\r\n" + _H + b"\r\n",
    "content-length-not-a-number": _CHAT + b"Content-Length: abc\r\n\r\n" + _BODY,
    "content-length-negative": _CHAT + b"Content-Length: -1\r\n\r\n" + _BODY,
    "content-length-list": _CHAT + b"Content-Length: 56, 56\r\n\r\n" + _BODY,
    "two-content-lengths": _CHAT + b"Content-Length: 56\r\nContent-Length: 5\r\n\r\n" + _BODY,
    "content-length-and-chunked": _CHAT + b"Content-Length: 56\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + b"38\r\n" + _BODY + b"\r\n0\r\n\r\n",
    "bad-chunk-size": _CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + _BODY + b"\r\n0\r\n\r\n",
    "chunk-size-overflow": _CHAT + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nx\r\n0\r\n\r\n",
    "chunk-without-crlf": _CHAT + b"Transfer-Encoding: chunked\r\n\r\n38\r\n" + _BODY + b"XX0\r\n\r\n",
    "unknown-transfer-encoding": _CHAT + b"Transfer-Encoding: gzip\r\n\r\n" + _BODY,
    "chunked-twice": _CHAT + b"Transfer-Encoding: chunked, chunked\r\n\r\n38\r\n" + _BODY + b"\r\n0\r\n\r\n",
    "chunked-not-last": _CHAT + b"Transfer-Encoding: chunked, gzip\r\n\r\n38\r\n" + _BODY + b"\r\n0\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls-client-hello": bytes.fromhex("160301020001000200") + b"\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    "control-char-in-target": b"GET /v1/mo\x01dels HTTP/1.1\r\n" + _H + b"\r\n",
}
