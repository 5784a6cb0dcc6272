"""The one wait-until-serving loop shared by the bundled backend, benchmarks and tests."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from semcache.index.redis_server import free_port
from semcache.proxy.readiness import ChildExitedError, wait_for_200


async def test_returns_once_the_url_answers_200(aiohttp_server: Any) -> None:
    calls = 0

    async def health(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=200 if calls >= 3 else 503)

    app = web.Application()
    app.router.add_get("/healthz", health)
    server = await aiohttp_server(app)
    await wait_for_200(str(server.make_url("/healthz")), lambda: None, timeout_s=10, interval_s=0.01)
    assert calls == 3


async def test_a_child_that_exits_is_reported_with_its_status() -> None:
    with pytest.raises(ChildExitedError) as info:
        await wait_for_200(f"http://127.0.0.1:{free_port()}/", lambda: 3, timeout_s=10)
    assert info.value.returncode == 3


async def test_nothing_listening_times_out_and_notes_progress() -> None:
    notes: list[int] = []
    with pytest.raises(TimeoutError):
        await wait_for_200(f"http://127.0.0.1:{free_port()}/", lambda: None, timeout_s=0.3,
                           interval_s=0.02, progress=lambda: notes.append(1), progress_every_s=0.1)
    assert notes
