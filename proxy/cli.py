"""The `semcache` command: serve, backend, eval, model export, train-verifier, build-teacher."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .config import DEFAULT_CONFIG, MAX_PORT, ConfigError, Settings, load_settings
from .resources import SHUTDOWN
from .server import ProxyRunner

log = logging.getLogger("semcache")


# Subcommands whose own packages parse their arguments: `semcache backend -h` and the like
# print those parsers' help. The top-level parser still lists them, so `semcache --help`
# shows every command there is.
DELEGATED: dict[tuple[str, ...], tuple[str, str]] = {
    ("backend",): ("semcache.backend.server", "main"),
    ("eval",): ("semcache.proxy.judge.evaluate", "main"),
    ("model", "export"): ("semcache.embeddings.export", "main"),
    ("model", "train-verifier"): ("semcache.proxy.judge.training.train", "main"),
    ("model", "build-teacher"): ("semcache.proxy.judge.training.teacher", "main"),
}
EXTRAS = {"torch", "transformers", "gguf"}
"""Modules of the `backend` extra, which some commands need and `pip install semcache` omits."""
EXTRA_HINT = ("pip install 'semcache[backend]' (torch: on a machine without a GPU, first "
              "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    for prefix, (module, name) in DELEGATED.items():
        if tuple(argv[: len(prefix)]) == prefix:
            try:
                handler: Callable[[list[str]], int] = getattr(importlib.import_module(module), name)
                return handler(argv[len(prefix):])
            except ImportError as e:
                if e.name not in EXTRAS:
                    raise
                # A command of an extra that is not installed (torch: semcache[backend]).
                print(f"semcache {' '.join(prefix)}: needs {e.name}: {EXTRA_HINT}", file=sys.stderr)
                return 1
    args = _parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        print(f"semcache: invalid configuration: {e}", file=sys.stderr)
        return 2
    return serve(settings)


def configure_logging() -> None:
    """semcache's own progress at INFO, everyone else's from WARNING: onnxruntime's optimiser
    and quantiser log every fused node and tensor at INFO (36 lines on a first start)."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("semcache").setLevel(logging.INFO)


def version() -> str:
    try:
        return importlib.metadata.version("semcache")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-{MAX_PORT})")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semcache", description=__doc__)
    parser.add_argument("--version", action="version", version=f"semcache {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_p = sub.add_parser("serve", help="run the caching proxy")
    serve_p.add_argument("--config", type=Path,
                         help=f"config.toml (default: the packaged one, {DEFAULT_CONFIG})")
    serve_p.add_argument("--host", help="listen address (server.host)")
    serve_p.add_argument("--port", type=port_number, help="listen port, 1-65535 (server.port)")
    serve_p.add_argument("--upstream", help="OpenAI-compatible base URL, or 'bundled'")
    serve_p.add_argument("--redis", help="'embedded' or a redis:// URL")
    serve_p.add_argument("--data-dir", type=Path, help="data directory")
    serve_p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="encoder device")
    sub.add_parser("backend", help="run the bundled inference backend (semcache backend -h)")
    sub.add_parser("eval", help="measure the hit decision on labelled pairs (semcache eval -h)")
    model_p = sub.add_parser("model", help="model tools: export, train-verifier, build-teacher "
                                           "(semcache model -h)")
    model_sub = model_p.add_subparsers(dest="action", required=True, metavar="COMMAND")
    model_sub.add_parser("export", help="export the sentence encoder to ONNX")
    model_sub.add_parser("train-verifier",
                         help="train the judge's pair models on a GPU (needs semcache[backend])")
    model_sub.add_parser("build-teacher",
                         help="build the large pair model from its packaged base (needs "
                              "semcache[backend])")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        overrides={
            "server.host": args.host,
            "server.port": args.port,
            "upstream.base_url": args.upstream,
            "redis.url": args.redis,
            "data_dir": args.data_dir,
            "embeddings.device": args.device,
        },
    )


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed, else None (asyncio's default loop)."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve(settings: Settings) -> int:
    from .app import build_app

    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.server.uvloop)) as runner:
            runner.run(_serve(settings, build_app(settings)))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # start-up failures: one clear line, not a traceback
        log.error("semcache could not start: %s", e)
        return 1
    return 0


async def _serve(settings: Settings, app: web.Application) -> None:
    runner = ProxyRunner(
        app,
        shutdown_timeout=settings.server.shutdown_grace_s,
        access_log=logging.getLogger("aiohttp.access") if settings.server.access_log else None,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port,
                       reuse_port=settings.server.reuse_port or None)
    await site.start()
    log.info("semcache listening on http://%s:%d (upstream %s)", settings.server.host,
             settings.server.port, settings.upstream.base_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (grace %.0f s)",
             settings.server.shutdown_grace_s)
    app[SHUTDOWN].deadline = time.monotonic() + settings.server.shutdown_grace_s
    # runner.cleanup stops accepting, waits for in-flight handlers up to the grace period,
    # then runs the cleanup contexts (write-backs drained, Redis and backend stopped).
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
