"""Shared fixtures: a real Redis server, a fake OpenAI upstream as a real HTTP server, and
the proxy built against both."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from semcache.index.redis_server import EmbeddedRedis
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.config import Settings, load_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the whole run (the same manager `redis.url=embedded` uses)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the packaged encoder exported once per test session."""
    from semcache.embeddings.export import ensure_exported
    from semcache.embeddings.settings import EmbeddingSettings

    data_dir = tmp_path_factory.mktemp("models")
    ensure_exported(data_dir, "packaged", EmbeddingSettings().export_variants)
    return data_dir


@pytest.fixture
def redis_url(redis_process: EmbeddedRedis) -> Iterator[str]:
    """The shared server, emptied before each test."""
    if not redis_process.running:  # a test may have killed it
        asyncio.run(redis_process.start())
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    yield redis_process.url


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., object]) -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app())  # type: ignore[operator]
    fake.base_url = f"http://127.0.0.1:{server.port}/v1"  # type: ignore[attr-defined]
    yield fake


def make_settings(redis_url: str, upstream_url: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test proxy; semantic tier off unless overridden (`cache__semantic=True`).

    Redis commands get 2 s rather than the shipped 0.25 s: on a loaded 2-core CI box a burst
    of requests can keep one past 0.25 s, and the proxy then (rightly) bypasses the cache,
    which is not what most tests are about. The test of a hung Redis sets it back.

    Requests without a credential share one tenant (`cache.anonymous = "shared"`): most tests
    send none and are about other things; tests/security/test_tenants.py covers the default."""
    overrides = {"cache__semantic": False, "judge__model": False, "redis__timeout_s": 2.0,
                 "cache__anonymous": "shared", **overrides}
    base = load_settings(
        environ={},
        overrides={"redis.url": redis_url, "upstream.base_url": upstream_url, "data_dir": data_dir},
    )
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        base = replace(base, **{section: replace(getattr(base, section), **{key: value})})
    return base


@pytest.fixture
def settings(redis_url: str, upstream: FakeUpstream, tmp_path: Path) -> Settings:
    return make_settings(redis_url, upstream.base_url, tmp_path)


async def start_judged_proxy(aiohttp_client: Callable[..., object], settings: Settings):  # type: ignore[no-untyped-def]
    """A test client for a proxy whose semantic tier is ready and whose pair model (loaded in
    the background after start) is in place."""
    from semcache.proxy.app import SEMANTIC, SERVICE, build_app

    client = await aiohttp_client(build_app(settings))  # type: ignore[operator]
    await asyncio.wait_for(client.app[SEMANTIC].ready.wait(), 60)
    for _ in range(600):
        if client.app[SERVICE].pair_model is not None:
            break
        await asyncio.sleep(0.05)
    assert client.app[SERVICE].pair_model is not None, "the pair model did not load"
    return client


@pytest.fixture
async def proxy(aiohttp_client: Callable[..., object], settings: Settings):  # type: ignore[no-untyped-def]
    """A test client for the proxy, in front of the fake upstream and the real Redis."""
    from semcache.proxy.app import build_app

    return await aiohttp_client(build_app(settings))  # type: ignore[operator]
