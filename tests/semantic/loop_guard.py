"""A guard that fails a test when the event loop is blocked: a heartbeat the loop bumps every
few milliseconds, and a watchdog thread that, when the heartbeat goes stale, records where
the loop's thread is, so that the failure names the call that blocked it."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class Stall:
    seconds: float
    """How long the loop did not turn."""
    where: list[str] = field(default_factory=list)
    """The loop thread's innermost frames while it was stuck (file:line function)."""
    gc_s: float = 0.0
    """Of which in garbage collections (any thread: a collection holds the GIL)."""


class LoopGuard:
    """`async with LoopGuard(limit_s=0.1) as guard: ...`, then `guard.check()` (or look at
    `guard.stalls` and `guard.worst_s`)."""

    def __init__(self, limit_s: float = 0.1, tick_s: float = 0.002) -> None:
        self.limit_s = limit_s
        self.tick_s = tick_s
        self.stalls: list[Stall] = []
        self.worst_s = 0.0
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._where: list[str] = []
        self._ticker: asyncio.Task[None] | None = None
        self._gc_started = 0.0
        self._gc_s = 0.0
        self.gc_pauses: list[tuple[int, float]] = []
        """(generation, seconds) of every collection while the guard ran."""
        self._watchdog = threading.Thread(target=self._watch, name="loop-guard", daemon=True)

    async def __aenter__(self) -> LoopGuard:
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._ticker = asyncio.create_task(self._tick())
        gc.callbacks.append(self._on_gc)
        self._watchdog.start()
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.sleep(self.tick_s * 2)  # let a stall that just ended be counted
        self._stop.set()
        gc.callbacks.remove(self._on_gc)
        assert self._ticker is not None
        self._ticker.cancel()
        await asyncio.gather(self._ticker, return_exceptions=True)
        self._watchdog.join(1.0)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            gap = now - self._beat - self.tick_s
            self._beat = now
            self.worst_s = max(self.worst_s, gap)
            if gap > self.limit_s:
                self.stalls.append(Stall(gap, self._where, self._gc_s))
            self._where, self._gc_s = [], 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self._gc_s += now - self._gc_started
            self.gc_pauses.append((info["generation"], now - self._gc_started))

    def _watch(self) -> None:
        while not self._stop.wait(self.tick_s):
            if self._where or time.monotonic() - self._beat < self.limit_s:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is not None:
                self._where = [f"{f.filename}:{f.lineno} {f.name}"
                               for f in traceback.extract_stack(frame)[-6:]]

    def check(self) -> None:
        assert not self.stalls, "event loop blocked: " + "; ".join(
            f"{s.seconds * 1000:.0f} ms ({s.gc_s * 1000:.0f} ms of it garbage collection) in "
            f"{' <- '.join(reversed(s.where)) or '?'}"
            for s in self.stalls)
