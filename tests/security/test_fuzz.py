"""Fuzzed request bodies (hypothesis): whatever arrives, the answer is a clean 4xx in the
OpenAI error shape or the upstream's own 200 relayed; never a 500, never a crash."""

from __future__ import annotations

import http.client
import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .conftest import LiveProxy

PATHS = ("/v1/chat/completions", "/v1/completions")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
content = st.text(max_size=40) | json_values | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]) | json_values},
                          optional={"text": st.text(max_size=20) | json_values,
                                    "image_url": json_values}), max_size=3)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"]) | json_values},
    optional={"content": content, "name": json_values, "tool_calls": json_values},
)
request_like = st.fixed_dictionaries(
    {"model": st.sampled_from(["fake-model", ""]) | json_values},
    optional={
        "messages": st.lists(message, max_size=3) | json_values,
        "prompt": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=3) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}) | json_values,
        "temperature": st.floats(min_value=0, max_value=2) | json_values,
        "n": st.integers(min_value=-1, max_value=3) | json_values,
        "max_tokens": st.integers(min_value=-1, max_value=100) | json_values,
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | json_values,
        "seed": json_values, "tools": json_values, "response_format": json_values,
    },
)
valid_chat = st.fixed_dictionaries(
    {"model": st.just("fake-model"),
     "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                                                 "content": st.text(min_size=1, max_size=40)}),
                          min_size=1, max_size=3)},
    optional={"stream": st.booleans(), "temperature": st.floats(min_value=0, max_value=2),
              "max_tokens": st.integers(min_value=1, max_value=50), "n": st.integers(1, 2),
              "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})},
)


def mutate(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**body, key: value}


# Valid requests, and valid requests with one field replaced by anything: the edges where
# the proxy's validation and the upstream's own meet.
near_valid = st.builds(mutate, valid_chat, st.sampled_from(
    ["model", "messages", "stream", "n", "temperature", "stop", "seed", "tools", "user"]), json_values)

bodies = (
    valid_chat.map(lambda d: json.dumps(d).encode())
    | near_valid.map(lambda d: json.dumps(d).encode())
    | request_like.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)
header_sets = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x+json",
                                         "application/json; charset=latin-1", ""]),
        "X-Semcache-TTL": st.sampled_from(["0", "-1", "1e9", "abc", "60", "99999999999999999999"]),
        "X-Semcache-Threshold": st.sampled_from(["0", "1.5", "nan", "-0.1", "0.9", "x"]),
        "X-Semcache-Namespace": st.sampled_from(["", "ns", "a" * 300, "../x", "ns with space"]),
        "Cache-Control": st.sampled_from(["no-cache", "no-store", "max-age=abc", "max-age=-1",
                                          "max-age=99999999999999999999", ",,,"]),
        "Authorization": st.sampled_from(["", "Bearer", "Bearer k", "Basic xx", "Bearer " + "k" * 5000]),
    },
)


def send(live: LiveProxy, path: str, body: bytes,
         headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check(status: int, headers: dict[str, str], raw: bytes) -> None:
    assert status < 500, (status, raw[:300])
    if status == 200:
        assert headers.get("x-semcache") in ("miss", "bypass", "hit-exact", "hit-semantic")
        return
    assert 400 <= status < 500, status
    error: dict[str, Any] = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), body=bodies, headers=header_sets)
def test_fuzzed_requests_never_500(live: LiveProxy, path: str, body: bytes, headers: dict[str, str]) -> None:
    status, answer_headers, raw = send(live, path, body, headers)
    event(f"status {status}")  # --hypothesis-show-statistics: how often each answer came
    check(status, answer_headers, raw)


def test_still_alive_after_fuzzing(live: LiveProxy) -> None:
    status, _, raw = send(live, "/v1/chat/completions",
                          json.dumps({"model": "fake-model",
                                      "messages": [{"role": "user", "content": "still there?"}]}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, raw


def test_null_n_is_relayed(live: LiveProxy) -> None:
    """Found by the fuzzer: `"n": null` is valid (the default) and must not break anything."""
    status, headers, raw = send(live, "/v1/chat/completions",
                                b'{"model":" ","messages":[{"role":"","":""}],"n":null}', {})
    check(status, headers, raw)
