"""`semcache serve` with a switchable profiler and experimental variants, for finding
where the proxy's time goes.

    python -m semcache.loadtest.profile_proxy [--out proxy.prof] [--no-access-log]
        [--no-hit-count] serve --upstream ... --redis ...

Starts the proxy as `semcache serve` does (same settings, same AppRunner and site). With
`--out`, cProfile is enabled only between SIGUSR1 and SIGUSR2, so start-up, warm-up and
shutdown stay out of the profile; the stats are written on SIGUSR2. The variants measure what
a change would save before anyone makes it: `--no-access-log` runs without aiohttp's
per-request access log line, `--no-hit-count` skips the per-hit counter write to Redis (an
upper bound on what batching those writes would save). SIGTERM stops the proxy as usual.
`bench_proxy --profile` and `bench_proxy --variants` drive it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from semcache.proxy.app import build_app
from semcache.proxy.cli import _parser as serve_parser
from semcache.proxy.cli import settings_from_args


async def serve(args: argparse.Namespace, ours: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    # Like `semcache serve`: aiohttp's access log only when server.access_log is on.
    on = settings.server.access_log and not ours.no_access_log
    extra = {"access_log": logging.getLogger("aiohttp.access") if on else None}
    if ours.no_hit_count:
        from semcache.proxy.pipeline.replay import HitCounter

        def no_count(self: HitCounter, entry: object) -> None:
            return None

        HitCounter.note = no_count  # type: ignore[method-assign,assignment]
    runner = web.AppRunner(build_app(settings), shutdown_timeout=settings.server.shutdown_grace_s,
                           **extra)
    await runner.setup()
    await web.TCPSite(runner, settings.server.host, settings.server.port).start()
    profiler = cProfile.Profile()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(str(ours.out))

    if ours.out is not None:
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
        loop.add_signal_handler(signal.SIGUSR2, dump)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own = argparse.ArgumentParser(prog="python -m semcache.loadtest.profile_proxy")
    own.add_argument("--out", type=Path, help="profile file (profiling on SIGUSR1..SIGUSR2)")
    own.add_argument("--no-access-log", action="store_true")
    own.add_argument("--no-hit-count", action="store_true")
    ours, rest = own.parse_known_args(argv)
    args = serve_parser().parse_args(rest)
    import logging

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args, ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
