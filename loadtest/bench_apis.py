"""Exact-hit throughput of every cached API family in one run: chat, completions, Responses,
Anthropic Messages (each plain and streamed; Responses also with `store: false`, whose hits
are not kept for a later turn) and embeddings (single inputs and batches of 8).

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_apis \
        [--duration 10] [--concurrency 32] [--pool 200]

Every server is its own process, as in bench_proxy: a real redis-server (the embedded
manager, in a temporary directory), the fake upstream and the proxy (`semcache serve`, no
semantic tier). Each family's `--pool` questions are sent once (misses, stored), then once
more, which must all be exact hits; then each family runs `--duration` seconds of exact hits
at `--concurrency`, one family after another. Writes loadtest/results/apis_<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from semcache.index.redis_server import EmbeddedRedis, find_redis_binary, free_port

from .bench_proxy import RESULTS, process, proxy_command
from .loadgen import WorkItem, run_load, write_json
from .machine import machine_info, machine_slug, redis_server_version

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
ANTHROPIC_HEADERS = {"Content-Type": "application/json", "x-api-key": "sk-bench",
                     "anthropic-version": "2023-06-01"}


def question(i: int) -> str:
    return f"Benchmark question number {i}: what does a cache hit cost?"


def chat(i: int, stream: bool) -> WorkItem:
    body = {"model": "fake-model", "stream": stream,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": question(i)}]}
    return WorkItem(path="/v1/chat/completions", body=orjson.dumps(body), headers=HEADERS,
                    stream=stream, kind="chat")


def completions(i: int, stream: bool) -> WorkItem:
    body = {"model": "fake-model", "stream": stream, "prompt": question(i), "max_tokens": 50}
    return WorkItem(path="/v1/completions", body=orjson.dumps(body), headers=HEADERS,
                    stream=stream, kind="completions")


def responses(i: int, stream: bool, store: bool = True) -> WorkItem:
    # a tool keeps it a Responses entry (not shared with chat's, which would make it chat's)
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    body: dict[str, Any] = {"model": "fake-model", "stream": stream,
                            "instructions": "Be brief.", "input": question(i), "tools": tools}
    if not store:
        body["store"] = False  # a hit's id is not kept for a later turn (one Redis write less)
    return WorkItem(path="/v1/responses", body=orjson.dumps(body), headers=HEADERS,
                    stream=stream, kind="responses")


def messages(i: int, stream: bool) -> WorkItem:
    body = {"model": "claude-fake", "stream": stream, "max_tokens": 100, "system": "Be brief.",
            "messages": [{"role": "user", "content": question(i)}]}
    return WorkItem(path="/v1/messages", body=orjson.dumps(body), headers=ANTHROPIC_HEADERS,
                    stream=stream, kind="messages")


def embeddings(i: int, batch: int) -> WorkItem:
    inputs = [question(i * batch + j) for j in range(batch)]
    body = {"model": "embed-fake", "input": inputs[0] if batch == 1 else inputs,
            "encoding_format": "base64", "dimensions": 384}
    return WorkItem(path="/v1/embeddings", body=orjson.dumps(body), headers=HEADERS,
                    kind="embeddings")


FAMILIES: dict[str, Callable[[int], WorkItem]] = {
    "chat": lambda i: chat(i, False),
    "chat-stream": lambda i: chat(i, True),
    "completions": lambda i: completions(i, False),
    "completions-stream": lambda i: completions(i, True),
    "responses": lambda i: responses(i, False),
    "responses-stream": lambda i: responses(i, True),
    "responses-store-false": lambda i: responses(i, False, store=False),
    "messages": lambda i: messages(i, False),
    "messages-stream": lambda i: messages(i, True),
    "embeddings": lambda i: embeddings(i, 1),
    "embeddings-batch8": lambda i: embeddings(i, 8),
}
"""Each family's requests; a streamed variant hits the entry its plain form wrote."""


def cycle(make: Callable[[int], WorkItem], pool: int) -> Iterator[WorkItem]:
    while True:
        for i in range(pool):
            yield make(i)


async def warm(url: str, pool: int) -> dict[str, Any]:
    """Every question of every family once (stored), then all of them again: all hits."""
    for name, make in FAMILIES.items():
        if not name.endswith("-stream"):
            await run_load(url, (make(i) for i in range(pool)), concurrency=16,
                           max_requests=pool, duration_s=120, progress=None)
    await asyncio.sleep(1.0)  # write-backs run off the response path
    checked: dict[str, Any] = {}
    for name, make in FAMILIES.items():
        result = await run_load(url, (make(i) for i in range(pool)), concurrency=16,
                                max_requests=pool, duration_s=120, progress=None)
        outcomes = result.summary()["by_outcome"]
        hits = outcomes.get("hit-exact", {}).get("count", 0)
        if hits != pool:
            raise SystemExit(f"warm-up of {name}: {hits}/{pool} exact hits "
                             f"({ {k: v['count'] for k, v in outcomes.items()} })")
        checked[name] = hits
    return checked


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis")
        await redis.start()
        up_port, proxy_port = free_port(), free_port()
        up_url, proxy_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEMCACHE__CACHE__SEMANTIC": "false"}
        fake_cmd = [sys.executable, "-m", "semcache.loadtest.fake_upstream", "--port", str(up_port)]
        families: dict[str, Any] = {}
        try:
            async with process(fake_cmd, tmp / "fake.log", f"{up_url}/v1/models", env), \
                    process(proxy_command(proxy_port, f"{up_url}/v1", redis.url, tmp / "data"),
                            tmp / "proxy.log", f"{proxy_url}/readyz", env):
                warmup = await warm(proxy_url, args.pool)
                for name, make in FAMILIES.items():
                    result = await run_load(proxy_url, cycle(make, args.pool),
                                            concurrency=args.concurrency,
                                            duration_s=args.duration, progress=None)
                    summary = result.summary()
                    hits = summary["by_outcome"].get("hit-exact", {})
                    families[name] = {
                        "rps": summary["rps"], "requests": summary["requests"],
                        "errors": summary["errors"], "hit_exact": hits.get("count", 0),
                        "p50_ms": summary["all"]["p50_ms"], "p99_ms": summary["all"]["p99_ms"],
                        "outcomes": {k: v["count"] for k, v in summary["by_outcome"].items()},
                    }
                    print(f"{name:20s} {summary['rps']:8.0f} req/s  "
                          f"p50 {summary['all']['p50_ms']:6.2f} ms  "
                          f"p99 {summary['all']['p99_ms']:6.2f} ms", file=sys.stderr)
        finally:
            await redis.stop()
    return {
        "benchmark": "bench_apis",
        "machine": machine_info() | {"redis_server": redis_server_version(find_redis_binary())},
        "config": {"duration_s": args.duration, "concurrency": args.concurrency,
                   "pool": args.pool, "semantic": False,
                   "embeddings": "384 dimensions, base64; the batch family sends 8 inputs"},
        "warmup_hits": warmup,
        "families": families,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semcache.loadtest.bench_apis")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per family")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pool", type=int, default=200, help="questions per family")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = asyncio.run(bench(args))
    out = args.out or RESULTS / f"apis_{machine_slug(result['machine'])}.json"
    write_json(out, result)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
