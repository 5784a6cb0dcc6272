"""`upstream.base_url = "bundled"`: run `semcache backend` as a child process.

The proxy waits for the backend's /healthz (the model loaded) before it starts listening,
so a proxy that answers /readyz can also answer misses. The child is stopped with the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import aiohttp

from .config import Settings

log = logging.getLogger(__name__)


class BundledBackendError(Exception):
    """The bundled backend failed to start."""


class BundledBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings.backend
        self.data_dir = settings.data_dir
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v1"

    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "semcache.backend",
            "--host", s.host, "--port", str(s.port), "--data-dir", str(self.data_dir),
            "--model", s.model, "--device", s.device, "--max-batch", str(s.max_batch),
        ]

    async def start(self) -> None:
        log.info("starting the bundled backend: %s", " ".join(self.command()))
        # The child inherits stdout/stderr so its progress (model conversion) is visible.
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)  # noqa: ASYNC220
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.startup_timeout_s
        url = f"http://{self.settings.host}:{self.settings.port}/healthz"
        next_note = loop.time() + 10
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise BundledBackendError(
                        f"the bundled backend exited with status {self._proc.returncode}"
                    )
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            log.info("bundled backend ready at %s", self.base_url)
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
                now = loop.time()
                if now > deadline:
                    await self.stop()
                    raise BundledBackendError(
                        f"the bundled backend was not ready after "
                        f"{self.settings.startup_timeout_s:.0f} s (backend.startup_timeout_s)"
                    )
                if now > next_note:
                    log.info("waiting for the bundled backend to load its model ...")
                    next_note = now + 10
                await asyncio.sleep(0.25)

    async def stop(self, timeout_s: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
