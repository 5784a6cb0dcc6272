"""Helpers of the reliability suite: a real `semcache serve` subprocess, leak counters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from semcache.index.redis_server import free_port
from semcache.loadtest.bench_proxy import process, proxy_command
from semcache.proxy.app import SERVICE, UPSTREAM


@dataclass
class ServedProxy:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.asynccontextmanager
async def served_proxy(upstream_url: str, redis_url: str, data_dir: Path,
                       **settings: str) -> AsyncIterator[ServedProxy]:
    """`semcache serve` as a child process; `settings` are SEMCACHE__ variables
    (`server__shutdown_grace_s="10"`). The semantic tier is off unless asked for: these tests
    are about the proxy's plumbing, and the encoder's load would dominate their time."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEMCACHE__CACHE__SEMANTIC": "false",
           "SEMCACHE__CACHE__ANONYMOUS": "shared"}  # their load carries no key
    env.update({f"SEMCACHE__{k.upper()}": v for k, v in settings.items()})
    log = data_dir / "proxy.log"
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a local directory, once)
    cmd = proxy_command(port, upstream_url, redis_url, data_dir)
    url = f"http://127.0.0.1:{port}"
    async with process(cmd, log, f"{url}/readyz", env) as proc:
        yield ServedProxy(proc, url, log)


def busy_upstream_connections(app: web.Application) -> int:
    """Connections of the proxy's upstream pool that are checked out (not idle in the pool).
    Test-only introspection of aiohttp's connector: there is no public counter."""
    session = app[UPSTREAM]._session
    assert session is not None
    connector: Any = session.connector
    return len(connector._acquired)


def working_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of this loop other than idle keep-alive connection handlers (aiohttp's
    `RequestHandler.start`, one per open connection of the test's own servers, bounded by
    their keep-alive timeout): what a leak would add to."""
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") != "RequestHandler.start"]


async def settle(app: web.Application, before: set[asyncio.Task[Any]],
                 timeout_s: float = 5.0) -> list[str]:
    """Wait for write-backs and stray tasks to finish; the working tasks started since `before`
    (a `set(working_tasks())`) that are still alive, each as its coroutine's name and the line
    it waits on (empty when nothing leaked)."""
    await app[SERVICE].drain(timeout_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        extra = [t for t in working_tasks() if t not in before]
        if not extra or loop.time() > deadline:
            return [_where(t) for t in extra]
        await asyncio.sleep(0.05)


def _where(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    frames = task.get_stack()
    if not frames:
        return name
    frame = frames[-1]
    return f"{name} at {frame.f_code.co_filename}:{frame.f_lineno}"
