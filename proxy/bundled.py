"""`upstream.base_url = "bundled"`: run `semcache backend` as a child process.

The proxy waits for the backend's /healthz (the model loaded) before it starts listening,
so a proxy that answers /readyz can also answer misses. The child is stopped with the proxy.

The proxy binds the backend's listening socket itself and hands it to the child
(`--listen-fd`): with `backend.port = 0` (the default) the kernel picks a free port, so two
`semcache serve` on one host never collide, and the port stays taken for the tens of seconds
the child spends loading its model, when a port merely found free could be taken by anyone.
A fixed port that is in use fails at once, with one line naming the setting.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import subprocess
import sys

from .config import Settings
from .errors import ProxyError
from .readiness import ChildExitedError, wait_for_200

log = logging.getLogger(__name__)


FORWARDED = ("max_batch", "max_queue", "max_seq_len", "default_max_tokens", "max_prefill_tokens",
             "threads", "speculative", "speculative_tokens", "speculative_ngram_max",
             "speculative_ngram_min", "speculative_step_tokens", "prefix_cache_tokens",
             "embedding_model")
"""The [backend] settings `semcache serve` hands to the child, as its flags: every one that
tunes the server (host, port, data dir, model and device are set above them)."""


class BundledBackendError(ProxyError):
    """The bundled backend failed to start."""


class BundledBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings.backend
        self.data_dir = settings.data_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = self.settings.port
        """The port the backend listens on: the setting, or the one the kernel chose for 0."""

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/v1"

    def command(self, listen_fd: int | None = None) -> list[str]:
        s = self.settings
        fd = [] if listen_fd is None else ["--listen-fd", str(listen_fd)]
        tuning = [item for name in FORWARDED for item in (f"--{name.replace('_', '-')}",
                                                         str(getattr(s, name)))]
        graphs = [] if s.cuda_graphs else ["--no-cuda-graphs"]
        draft = ["--draft-model", s.draft_model] if s.draft_model else []
        return [
            sys.executable, "-m", "semcache.backend", *fd,
            "--host", s.host, "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--model", s.model, "--device", s.device, *tuning, *graphs, *draft,
        ]

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError as e:
            sock.close()
            raise BundledBackendError(
                f"backend.port {self.settings.port} on {self.settings.host}: {e.strerror} "
                "(0 lets the kernel choose a free port)") from None
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        return sock

    def check_installed(self) -> None:
        if importlib.util.find_spec("torch") is None:
            raise BundledBackendError(
                "upstream.base_url = 'bundled' needs the backend extra: pip install "
                "'semcache[backend]' (or make serve), or set --upstream to an OpenAI-compatible URL")

    async def start(self) -> None:
        self.check_installed()
        sock = self._listen()
        try:
            command = self.command(sock.fileno())
            log.info("starting the bundled backend on port %d: %s", self.port, " ".join(command))
            # The child inherits stdout/stderr so its progress (model conversion) is visible,
            # and the listening socket; the proxy's copy is closed once the child has its own.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                command, stdin=subprocess.DEVNULL, pass_fds=(sock.fileno(),))
        finally:
            sock.close()
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        url = f"http://{self.settings.host}:{self.port}/healthz"
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
