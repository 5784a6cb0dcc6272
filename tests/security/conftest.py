"""Helpers of the security suite: the proxy on a real port in a background thread (so that
synchronous hypothesis tests and raw sockets can reach it), and an upstream that records
every path it is asked for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import make_settings

from semcache.index.redis_server import EmbeddedRedis
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import build_app
from semcache.proxy.server import ProxyRunner


@dataclass
class RecordingUpstream:
    """Every request the upstream received: method, raw path and query, headers."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self, fake: FakeUpstream) -> web.Application:
        app = fake.app()
        app.middlewares.append(self._record)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.seen.append({"method": request.method, "raw_path": request.raw_path,
                          "path": request.path, "headers": dict(request.headers)})
        return await handler(request)


@dataclass
class LiveProxy:
    """The proxy and the fake upstream on real ports, their loop in another thread."""

    url: str
    port: int
    upstream: FakeUpstream
    recorder: RecordingUpstream
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the servers' loop (to change the fake's behaviour safely)."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@contextlib.contextmanager
def live_proxy(redis_url: str, data_dir: Path, **overrides: Any) -> Iterator[LiveProxy]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake, recorder = FakeUpstream(), RecordingUpstream()
    runners: list[web.AppRunner] = []

    async def start() -> int:
        up = web.AppRunner(recorder.app(fake), access_log=None)
        await up.setup()
        up_site = web.TCPSite(up, "127.0.0.1", 0)
        await up_site.start()
        runners.append(up)
        up_port = up.addresses[0][1]
        fake.base_url = f"http://127.0.0.1:{up_port}/v1"
        settings = make_settings(redis_url, fake.base_url, data_dir, **overrides)
        proxy = ProxyRunner(build_app(settings), access_log=None)
        await proxy.setup()
        await web.TCPSite(proxy, "127.0.0.1", 0).start()
        runners.append(proxy)
        return int(proxy.addresses[0][1])

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield LiveProxy(f"http://127.0.0.1:{port}", port, fake, recorder, loop)
    finally:
        async def stop() -> None:
            for runner in reversed(runners):
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    asyncio.run(server.start())
    yield server.url
    asyncio.run(server.stop())


@pytest.fixture(scope="module")
def live(module_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProxy]:
    with live_proxy(module_redis, tmp_path_factory.mktemp("proxy")) as proxy:
        yield proxy
