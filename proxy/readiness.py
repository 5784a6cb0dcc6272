"""Waiting for a child process to serve: poll a URL until it answers 200.

One loop for every place that starts a server and must not use it before it is up: the
bundled backend (proxy/bundled.py), the benchmarks' children and the tests' replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp

from .errors import ProxyError


class ChildExitedError(ProxyError):
    """The process exited before its URL answered."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"exited with status {returncode}")
        self.returncode = returncode


async def wait_for_200(url: str, exit_code: Callable[[], int | None], *, timeout_s: float,
                       interval_s: float = 0.1, progress: Callable[[], None] | None = None,
                       progress_every_s: float = 10.0) -> None:
    """Return once GET `url` answers 200.

    exit_code: the child's exit status, None while it runs (`Popen.poll`, or a lambda
        reading `asyncio.subprocess.Process.returncode`); a status raises ChildExitedError.
    timeout_s: past it, TimeoutError. Refused connections and slow answers (2 s each) are
        retried every `interval_s`; `progress` is called every `progress_every_s` meanwhile.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    next_note = loop.time() + progress_every_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            code = exit_code()
            if code is not None:
                raise ChildExitedError(code)
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            now = loop.time()
            if now > deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s")
            if progress is not None and now > next_note:
                progress()
                next_note = now + progress_every_s
            await asyncio.sleep(interval_s)
