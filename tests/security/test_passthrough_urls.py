"""The passthrough forwards the path and query exactly as the client encoded them: the
upstream must see the same bytes (a `%2F` is not a slash, `%3F` not a query, `%23` not a
fragment, and a query is not encoded a second time), after the traversal checks."""

from __future__ import annotations

import pytest

from .conftest import LiveProxy
from .test_hostile_input import raw_request


def get(live: LiveProxy, target: str) -> tuple[int, str | None]:
    """Status of GET `target` sent as raw bytes, and the raw path the upstream received."""
    before = len(live.recorder.seen)
    status, _, _ = raw_request(
        live, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    seen = live.recorder.seen[before:]
    return status, seen[-1]["raw_path"] if seen else None


@pytest.mark.parametrize(
    "target",
    [
        "/v1/echo/x?name=a%20b",
        "/v1/echo/files/a%2Fb",
        "/v1/echo/files/a%3Fb",
        "/v1/echo/files/a%23b",
        "/v1/echo/x?q=%26%3D&plus=1+2&empty=&flag",
        "/v1/echo/%E2%82%AC?v=%E2%82%AC",
        "/v1/echo/x?a=%2520",  # already double-encoded by the client: stays so
        "/v1/echo/a;b,c@d:e~f!g$h'i(j)k*l",
        "/v1/models?limit=10&order=desc",
    ],
)
def test_path_and_query_reach_the_upstream_unchanged(live: LiveProxy, target: str) -> None:
    status, upstream_saw = get(live, target)
    assert status == 200 if target.startswith("/v1/echo") else status in (200, 404)
    assert upstream_saw == target


def test_cached_routes_forward_the_raw_query(live: LiveProxy) -> None:
    before = len(live.recorder.seen)
    body = b'{"model": "fake-model", "messages": [{"role": "user", "content": "query?"}]}'
    target = "/v1/chat/completions?api-version=2024-10-21&x=a%20b%2F"
    status, _, _ = raw_request(live, (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    assert status == 200
    assert live.recorder.seen[before:][-1]["raw_path"] == target


@pytest.mark.parametrize(
    "target",
    [
        "/v1/echo/a#b",  # a raw '#' is not valid in a request target
        "/%76%31/echo/x",  # /v1 spelled with escapes
        "/v1/echo/%25252e%25252e/%25252e%25252e/admin",  # '..' after three rounds
        "/v1/echo/%2525252525252e%2525252525252e/x",  # still encoded after four
    ],
)
def test_odd_targets_are_refused_not_forwarded(live: LiveProxy, target: str) -> None:
    status, upstream_saw = get(live, target)
    assert status == 400 and upstream_saw is None
