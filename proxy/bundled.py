"""`upstream.base_url = "bundled"`: run `semcache backend` as a child process.

The proxy waits for the backend's /healthz (the model loaded) before it starts listening,
so a proxy that answers /readyz can also answer misses. The child is stopped with the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

from .config import Settings
from .readiness import ChildExitedError, wait_for_200

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
        url = f"http://{self.settings.host}:{self.settings.port}/healthz"
        proc = self._proc
        try:
            await wait_for_200(
                url, lambda: proc.poll() if proc is not None else None,
                timeout_s=self.settings.startup_timeout_s, interval_s=0.25,
                progress=lambda: log.info("waiting for the bundled backend to load its model ..."))
        except ChildExitedError as e:
            raise BundledBackendError(
                f"the bundled backend exited with status {e.returncode}") from None
        except TimeoutError:
            await self.stop()
            raise BundledBackendError(
                f"the bundled backend was not ready after "
                f"{self.settings.startup_timeout_s:.0f} s (backend.startup_timeout_s)"
            ) from None
        log.info("bundled backend ready at %s", self.base_url)

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
