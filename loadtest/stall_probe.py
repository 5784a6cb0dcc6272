"""`semcache serve` instrumented for the stall benchmark (bench_stalls).

    python -m semcache.loadtest.stall_probe [--no-gc-tuning] [--inline-index] serve ...

Starts the proxy as `semcache serve` does (same settings, same AppRunner and site, SIGTERM
stops it), and records inside the process what a client cannot see: every garbage
collection (generation, pause) and every late turn of the event loop (a 5 ms timer that
fires late by the loop's stall). `GET /_probe?since=UNIX_TIME` returns them with the vector
index's statistics. The variants reproduce the old behaviour in the same build, for a
before/after in one run: `--no-gc-tuning` skips proxy/gc_tuning.py (`--gc-threshold` tries
other thresholds in it), `--inline-index` runs
the index builder's jobs on the event loop, as the index did before it had a builder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from semcache.index import vectors as vectors_module
from semcache.index.builder import INLINE, IndexBuilder, Maintained
from semcache.proxy import gc_tuning
from semcache.proxy.app import SEMANTIC, build_app
from semcache.proxy.cli import _parser as serve_parser
from semcache.proxy.cli import settings_from_args

TICK_S = 0.005
LATE_S = 0.002
"""Loop turns later than this are recorded."""
KEEP = 200_000


class InlineBuilder(IndexBuilder):
    """Runs each job at once in the submitting thread (the event loop): the old index."""

    def submit(self, job: Maintained) -> None:
        job.maintain(INLINE)


class Recorder:
    def __init__(self) -> None:
        self.gcs: deque[tuple[float, int, float, int, float]] = deque(maxlen=KEEP)
        """(unix time at the end, generation, pause s, objects collected, CPU s): the pause
        is wall time (what everyone waiting for the GIL waits), the CPU time is what the
        collection itself cost, without the preemptions of a busy machine."""
        self.lags: deque[tuple[float, float]] = deque(maxlen=KEEP)
        """(unix time, how late the loop turned, s)."""
        self.turns = 0
        self._gc_start = 0.0
        self._gc_cpu = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start, self._gc_cpu = time.perf_counter(), time.thread_time()
        else:
            self.gcs.append((time.time(), info["generation"],
                             time.perf_counter() - self._gc_start, info["collected"],
                             time.thread_time() - self._gc_cpu))

    async def watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            late = loop.time() - due
            self.turns += 1
            if late > LATE_S:
                self.lags.append((time.time(), late))

    def since(self, t: float) -> dict[str, Any]:
        times = os.times()
        return {"gc": [g for g in self.gcs if g[0] >= t], "cpu_s": times.user + times.system,
                "lags": [x for x in self.lags if x[0] >= t], "turns": self.turns,
                "frozen": gc.get_freeze_count(), "gc_threshold": gc.get_threshold()}


def probe_routes(app: web.Application, recorder: Recorder) -> None:
    async def probe(request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0"))
        state = request.app[SEMANTIC]
        index = state.index
        scopes = {}
        if index is not None and "scope" in request.query:
            one = index._scopes.get(request.query["scope"])
            if one is not None:
                scopes = {"kind": one.kind, "live": len(one), "rows": one.rows,
                          "building": one.building, "builds": one.builds,
                          "last_build_s": one.last_build_s}
        census = None
        if "objects" in request.query:  # what the collector walks (frozen objects excluded)
            kinds = Counter(type(o).__name__ for o in gc.get_objects())
            census = {"tracked": sum(kinds.values()), "top": kinds.most_common(15)}
        return web.json_response({"census": census,
            "now": time.time(), "semantic_ready": state.ready.is_set(),
            "index": index.stats() if index is not None else None, "scope": scopes,
            **recorder.since(since)})

    app.router.add_get("/_probe", probe)


async def serve(args: argparse.Namespace, ours: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    recorder = Recorder()
    gc.callbacks.append(recorder.on_gc)
    if ours.no_gc_tuning:
        gc_tuning.tune_gc = lambda: None
    if ours.gc_threshold:
        gen0, gen1, gen2 = (int(x) for x in ours.gc_threshold.split(","))
        gc_tuning.GEN0_THRESHOLD, gc_tuning.GEN1_THRESHOLD, gc_tuning.GEN2_THRESHOLD = \
            gen0, gen1, gen2
    if ours.inline_index:
        vectors_module.IndexBuilder = InlineBuilder  # type: ignore[misc]
    app = build_app(settings)
    probe_routes(app, recorder)

    async def watcher(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(recorder.watch_loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(watcher)
    runner = web.AppRunner(app, shutdown_timeout=settings.server.shutdown_grace_s,
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.server.host, settings.server.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own = argparse.ArgumentParser(prog="python -m semcache.loadtest.stall_probe")
    own.add_argument("--no-gc-tuning", action="store_true")
    own.add_argument("--inline-index", action="store_true")
    own.add_argument("--gc-threshold", help="GEN0,GEN1,GEN2 for gc_tuning (an experiment)")
    ours, rest = own.parse_known_args(argv)
    args = serve_parser().parse_args(rest)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert gc_tuning.tune_gc  # the function --no-gc-tuning replaces
    asyncio.run(serve(args, ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
