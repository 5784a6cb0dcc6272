"""Where a streamed request's time to first token goes: marks along its path, and the
means of their phases over recent requests (`ttft_breakdown` in /healthz).

A request's marks are time.perf_counter() stamps in one dict that both threads write to:
the event loop from HTTP arrival to submitting the sequence and again from the first
token's delivery to its write on the socket, the engine's worker from admission to handing
the first token over. Each phase is the time between two consecutive marks, so the phases
add up to the whole time to first token as the server sees it.

On CUDA the worker only waits for the device where it reads the first token back (in
`sample`), so there `prefill` is the host's time to launch the prefill's kernels and
`sample` the device's time still left after that, plus sampling.
"""

from __future__ import annotations

import collections
import gc
import logging
import statistics
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PHASES = (
    ("parse", "arrived", "parsed"),  # reading and validating the body
    ("tokenise", "parsed", "tokenised"),  # chat template and tokenizer, in a worker thread
    ("submit", "tokenised", "submitted"),
    ("queue", "submitted", "admitted"),  # waiting for the worker to take it into the batch
    ("prefix_copy", "admitted", "prefix_loaded"),  # cached prefix KV copied into the slot
    ("prefill", "prefix_loaded", "prefilled"),  # the forward over the uncached prompt
    ("sample", "prefilled", "sampled"),  # the first token chosen (a device sync on CUDA)
    ("post", "sampled", "posted"),  # handed to the request's mailbox
    ("handoff", "posted", "delivered"),  # from the worker thread to the event loop
    ("detokenise", "delivered", "text"),  # the token's text (held back stop-string text too)
    ("write", "text", "written"),  # the SSE chunk written to the socket
)

WINDOW = 256
"""Requests whose breakdowns are kept for the means: recent enough to show the effect of a
change in load, enough that one odd request does not dominate."""


def phases(marks: dict[str, float]) -> dict[str, float]:
    """A request's phases in milliseconds (only those whose two marks it has), and `total`."""
    out = {name: round((marks[end] - marks[start]) * 1e3, 3)
           for name, start, end in PHASES if start in marks and end in marks}
    if "arrived" in marks and "written" in marks:
        out["total"] = round((marks["written"] - marks["arrived"]) * 1e3, 3)
    return out


class TtftStats:
    """Breakdowns of the last WINDOW first tokens; written from the event loop, read by
    /healthz (and by Engine.stats from any thread)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._rows: collections.deque[dict[str, float]] = collections.deque(maxlen=window)
        self._sums: dict[str, float] = collections.defaultdict(float)
        self._lock = threading.Lock()
        self.requests = 0

    def add(self, marks: dict[str, float], **facts: Any) -> None:
        row = phases(marks)
        log.debug("time to first token: %s %s", row, facts)
        with self._lock:
            self._rows.append(row)
            self.requests += 1
            for name, ms in row.items():
                self._sums[name] += ms

    def summary(self) -> dict[str, Any]:
        with self._lock:
            rows = list(self._rows)
            requests = self.requests
            sums = {n: round(ms, 3) for n, ms in self._sums.items()}
        names = [name for name, _, _ in PHASES] + ["total"]
        mean = {n: round(statistics.fmean(r[n] for r in rows if n in r), 3)
                for n in names if any(n in r for r in rows)}
        # Sums since start let a client take the mean over exactly its own requests: the
        # difference of two readings over the difference of their `requests`.
        return {"requests": requests, "window": len(rows), "mean_ms": mean, "sum_ms": sums}


class GcPauses:
    """Collections of the garbage collector and how long each generation's took: a full
    collection stops every thread (the event loop and the engine's worker alike), so one
    on the way to a first token is part of its time. Counted while `install`ed."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.total_ms = [0.0, 0.0, 0.0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen, ms = info["generation"], (time.perf_counter() - self._started) * 1e3
        self.collections[gen] += 1
        self.total_ms[gen] += ms
        self.max_ms[gen] = max(self.max_ms[gen], ms)

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        return {"frozen_objects": gc.get_freeze_count(), "collections": list(self.collections),
                "max_ms": [round(x, 3) for x in self.max_ms],
                "total_ms": [round(x, 3) for x in self.total_ms]}
