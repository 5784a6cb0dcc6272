"""End-to-end semantic hits through the proxy: latency and throughput at concurrency 1, 16, 64.

    python -m semcache.loadtest.bench_semantic [--data-dir DIR] [--pool 500] [--duration 10]

Starts the fake upstream and the proxy as their own processes (real Redis, the real encoder
with its default variant: int8 on a CPU, fp16 on CUDA), stores `pool` Quora questions, then
asks variants of them that must go through the whole semantic path: each request's text is
new to the exact tier and to the encoder's LRU (the stored question with the case of one
letter flipped: the exact tier is case-sensitive, and hits never write), yet tokenises like
the stored question (the encoder is uncased), so every answer is a semantic hit that embeds,
searches the scope and reads the entry from Redis.

Writes loadtest/results/semantic_<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from semcache.index.redis_server import EmbeddedRedis, free_port

from .bench_proxy import process, proxy_command
from .cpu import CpuMeter
from .loadgen import LoadResult, WorkItem, run_load, write_json
from .machine import machine_info, machine_slug

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "qqp_dev_pairs.jsonl.gz"
CHAT = "/v1/chat/completions"
TARGETS = {"cpu_p50_ms_at_1": 6.0, "gpu_hits_per_s": 3000.0}


def questions(n: int, path: Path = PAIRS) -> list[str]:
    seen: dict[str, None] = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            text = " ".join(json.loads(line)["a"].split())
            if 10 < len(text) < 200 and sum(c.isalpha() for c in text) >= 20:
                seen.setdefault(text, None)
            if len(seen) >= n:
                break
    return list(seen)


def item(text: str, kind: str) -> WorkItem:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": text}], "max_tokens": 64}
    return WorkItem(path=CHAT, body=orjson.dumps(body),
                    headers={"Authorization": "Bearer bench", "Content-Type": "application/json"},
                    kind=kind)


def flip_case(text: str, k: int) -> str:
    """Upper-case one lower-case letter inside a word (never a word's first letter, so the
    entity check, which reads capitalised words, sees the same names)."""
    letters = [i for i, c in enumerate(text) if c.islower() and i > 0 and text[i - 1].isalpha()]
    if not letters:
        return text
    i = letters[k % len(letters)]
    return text[:i] + text[i].upper() + text[i + 1:]


def variants(pool: list[str], start: int = 0) -> Iterator[WorkItem]:
    k = start
    while True:
        k += 1
        for text in pool:
            yield item(flip_case(text, k), "variant")


# Process kinds whose CPU time is reported per level (see cpu.py); load-generating
# processes report their own, as they exit before the level's second sample.
CPU_KINDS = {"proxy": "semcache.proxy", "redis": "redis-server", "upstream": "fake_upstream",
             "loadgen": "bench_semantic"}


def client(proxy_url: str, pool: list[str], start: int, concurrency: int, max_requests: int,
           duration_s: float) -> tuple[LoadResult, float]:
    """One load-generating process (a single asyncio client tops out at a few thousand
    requests/s, below what several GPU-backed replicas serve); returns its CPU seconds too."""
    from semcache.proxy.cli import loop_factory

    t0 = os.times()
    with asyncio.Runner(loop_factory=loop_factory(True)) as runner:
        result = runner.run(run_load(proxy_url, variants(pool, start), concurrency=concurrency,
                                     max_requests=max_requests, duration_s=duration_s,
                                     progress=None))
    t1 = os.times()
    return result, (t1.user - t0.user) + (t1.system - t0.system)


def run_clients(args: argparse.Namespace, proxy_url: str, pool: list[str], concurrency: int,
                round_: int) -> LoadResult:
    """`args.clients` processes share the concurrency; their samples are merged."""
    n = max(1, min(args.clients, concurrency))
    shares = [concurrency // n + (i < concurrency % n) for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=ctx) as pool_:
        futures = [pool_.submit(client, proxy_url, pool, 1000 * (round_ * n + i), c,
                                args.max_requests // n, args.duration)
                   for i, c in enumerate(shares)]
        done = [f.result() for f in futures]
    parts = [p for p, _ in done]
    result = LoadResult(samples=[s for p in parts for s in p.samples],
                        wall_s=max(p.wall_s for p in parts), concurrency=concurrency, rate=None,
                        stopped_by=parts[0].stopped_by)
    return result, sum(cpu for _, cpu in done)


@contextlib.contextmanager
def mps_daemon(tmp_dir: Path) -> Iterator[dict[str, str]]:
    """NVIDIA's Multi-Process Service for the run: the replicas' CUDA work then shares one
    GPU context instead of time-slicing between one context per process. Yields the
    environment the replicas need to find it; stops it on the way out."""
    import shutil
    import subprocess

    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        raise SystemExit("--mps: nvidia-cuda-mps-control is not on PATH (NVIDIA driver tools)")
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_dir / "mps-pipe"),
           "CUDA_MPS_LOG_DIRECTORY": str(tmp_dir / "mps-log")}
    for d in env.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    subprocess.run([control, "-d"], env={**os.environ, **env}, check=True)
    try:
        yield env
    finally:
        subprocess.run([control], input=b"quit\n", env={**os.environ, **env}, check=False)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    pool = questions(args.pool, args.pairs)
    meter = CpuMeter(CPU_KINDS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        data_dir = args.data_dir or tmp_dir / "data"
        redis = EmbeddedRedis(tmp_dir / "redis")
        await redis.start()
        up_port, proxy_port = free_port(), free_port()
        up_url, proxy_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"
        upstream_cmd = [sys.executable, "-m", "semcache.loadtest.fake_upstream", "--port", str(up_port)]
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(
                    process(upstream_cmd, tmp_dir / "upstream.log", up_url + "/v1/models"))
                # Several replicas share the port through SO_REUSEPORT; each is started once
                # the previous one is ready, so every process has loaded its encoder.
                env = {**os.environ, "SEMCACHE__SERVER__REUSE_PORT": "true"}
                if args.mps:
                    env |= stack.enter_context(mps_daemon(tmp_dir))
                for i in range(args.replicas):
                    await stack.enter_async_context(
                        process(proxy_command(proxy_port, up_url + "/v1", redis.url, data_dir),
                                tmp_dir / f"proxy{i}.log", proxy_url + "/readyz", env=env))
                    await asyncio.sleep(3.0 if args.replicas > 1 else 0.0)
                warm = await run_load(proxy_url, (item(t, "store") for t in pool), concurrency=8,
                                      max_requests=len(pool), duration_s=300, progress=None)
                await asyncio.sleep(1.0)  # write-backs (with their vectors) run off the response path
                levels = {}
                source = variants(pool)
                for round_, concurrency in enumerate(args.levels):
                    print(f"concurrency {concurrency}", file=sys.stderr)
                    before = meter.sample()
                    client_cpu = 0.0
                    if args.clients > 1:
                        result, client_cpu = await asyncio.to_thread(
                            run_clients, args, proxy_url, pool, concurrency, round_)
                    else:
                        result = await run_load(proxy_url, source, concurrency=concurrency,
                                                max_requests=args.max_requests,
                                                duration_s=args.duration)
                    levels[str(concurrency)] = result.summary() | {
                        "cpu": cpu_report(meter.since(before), client_cpu, result),
                        "embedding_batches": await batch_sizes(proxy_url)}
        finally:
            await redis.stop()
    return {"warm": warm.summary()["by_outcome"], "levels": levels}


async def batch_sizes(proxy_url: str, polls: int = 40) -> dict[str, Any]:
    """Mean texts per model run, as /metrics reports it (cumulative since start) from the
    replicas that answer `polls` scrapes (SO_REUSEPORT picks one per connection)."""
    import aiohttp

    seen: dict[tuple[float, float], None] = {}
    for _ in range(polls):
        async with aiohttp.ClientSession() as session:
            async with session.get(proxy_url + "/metrics") as resp:
                text = await resp.text()
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("semcache_embedding_batch_size_count", "semcache_embedding_batch_size_sum"):
                values[name.rsplit("_", 1)[1]] = float(value)
        if values.get("count"):
            seen[(values["count"], values["sum"])] = None
    means = [round(total / count, 2) for count, total in seen]
    return {"replicas_seen": len(means), "mean_batch": means}


def cpu_report(used: dict[str, float], client_cpu: float, result: LoadResult) -> dict[str, Any]:
    """CPU seconds per kind of process over one level, and CPU milliseconds per request."""
    used = dict(used)
    used["loadgen"] = used.get("loadgen", 0.0) + client_cpu
    requests = max(1, len(result.samples))
    cores = os.cpu_count() or 1
    wall = used.pop("wall_s", 0.0) or result.wall_s
    busy = used.pop("machine_busy", 0.0)
    return {"cpu_s": used, "cpu_ms_per_request": {k: round(1000 * v / requests, 3)
                                                  for k, v in used.items()},
            "machine_utilisation": round(busy / (wall * cores), 3) if wall else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data dir holding (or to hold) the exported encoder")
    parser.add_argument("--pool", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=1,
                        help="proxy processes sharing the port (SO_REUSEPORT) and one Redis")
    parser.add_argument("--pairs", type=Path, default=PAIRS, help="qqp_dev_pairs.jsonl.gz")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=1,
                        help="load-generating processes (for more than ~3,000 requests/s)")
    parser.add_argument("--mps", action="store_true",
                        help="run the replicas under NVIDIA MPS (one shared GPU context)")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    machine = machine_info(("aiohttp", "redis", "onnxruntime", "onnxruntime-gpu", "numpy"))
    result = {"benchmark": "semantic_hits", "machine": machine, "targets": TARGETS,
              "pool": args.pool, "replicas": args.replicas, "clients": args.clients, "mps": args.mps,
              "settings_from_env": {k: v for k, v in os.environ.items() if k.startswith("SEMCACHE__")},
              "workload": "stored Quora questions asked again with one letter's case flipped: new to "
              "the exact tier and the LRU, so each request embeds and searches",
              **asyncio.run(bench(args))}
    for level, summary in result["levels"].items():
        hit = summary["by_outcome"].get("hit-semantic", {})
        print(f"c={level}: {hit.get('count', 0)} semantic hits, p50 {hit.get('p50_ms', 0):.2f} ms, "
              f"{hit.get('rps', 0):.0f}/s; outcomes {list(summary['by_outcome'])}; CPU ms per request "
              f"{summary['cpu']['cpu_ms_per_request']}", file=sys.stderr)
    out = args.out or RESULTS / f"semantic_{machine_slug(machine)}.json"
    write_json(out, result)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
