"""A corpus of hostile requests for the proxy, as raw bytes: JSON nested to every depth
around the parser's limits, 4 MB bodies built to be slow to parse, odd encodings, and
malformed HTTP framing. tests/security and `bench_reliability` send it; every answer must be
a 2xx relayed from the upstream or a 4xx of the proxy's own, never a 5xx.
"""

from __future__ import annotations

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


def post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1") + body


def requests() -> dict[str, bytes]:
    """Every case of the corpus as the bytes of one HTTP request, by name."""
    out: dict[str, bytes] = {}
    for name, (path, body) in DEPTH_CASES.items():
        out[f"depth/{name}"] = post(path, body)
    for name, body in SIZE_CASES.items():
        out[f"size/{name}"] = post("/v1/completions" if b'"prompt"' in body else CHAT, body)
    for name, (body, content_type) in ENCODING_CASES.items():
        out[f"encoding/{name}"] = post(CHAT, body, content_type or "application/json")
    for name, data in FRAMING.items():
        out[f"framing/{name}"] = data
    return out
