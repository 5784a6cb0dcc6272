"""The `semcache` command: serve, backend, model export."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .config import ConfigError, Settings, load_settings
from .server import ProxyRunner

log = logging.getLogger("semcache")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Subcommands owned by other packages parse their own arguments.
    if argv[:1] == ["backend"]:
        from semcache.backend.server import main as backend_main

        return backend_main(argv[1:])
    if argv[:1] == ["eval"]:
        from .judge.evaluate import main as eval_main

        return eval_main(argv[1:])
    if argv[:2] == ["model", "train-verifier"]:
        from .judge.training.train import main as train_main

        return train_main(argv[2:])
    if argv[:2] == ["model", "export"]:
        from semcache.embeddings.export import main as export_main

        return export_main(argv[2:])
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        print(f"semcache: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semcache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the caching proxy")
    serve_p.add_argument("--config", type=Path, help="config.toml (default: the bundled one)")
    serve_p.add_argument("--host", help="listen address (server.host)")
    serve_p.add_argument("--port", type=int, help="listen port (server.port)")
    serve_p.add_argument("--upstream", help="OpenAI-compatible base URL, or 'bundled'")
    serve_p.add_argument("--redis", help="'embedded' or a redis:// URL")
    serve_p.add_argument("--data-dir", type=Path, help="data directory")
    serve_p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="encoder device")
    sub.add_parser("backend", help="run the bundled inference backend (see `semcache backend -h`)")
    model_p = sub.add_parser("model", help="model tools")
    model_p.add_argument("action", choices=["export"], help="export the encoder to ONNX")
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
    # runner.cleanup stops accepting, waits for in-flight handlers up to the grace period,
    # then runs the cleanup contexts (write-backs drained, Redis and backend stopped).
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
