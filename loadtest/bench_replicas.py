"""Scale-out: two proxy replicas on one Redis vs one replica, on the same workload.

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_replicas

The same seeded workload (repeats with a Zipf distribution, paraphrases, unique questions,
several tenants, streaming and not) runs twice against a fresh Redis each time: once on a
single `semcache serve`, once spread round-robin over two replicas sharing one Redis. An
entry written by either replica is visible to both, so the hit rates must match (up to the
few requests that race a write-back of the same question on the other replica). Writes
loadtest/results/replicas_<machine>.json and a PNG per run.

The semantic tier is off by default (`--semantic` turns it on): its index is per replica,
kept current from the Redis stream, which the exact tier does not need.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from semcache.index.redis_server import EmbeddedRedis, free_port

from .bench_proxy import RESULTS, process, proxy_command
from .loadgen import WorkItem, run_load, timeseries, write_json
from .machine import machine_info, machine_slug
from .workload import Workload, WorkloadSpec, load_pairs


def round_robin(items: Iterator[WorkItem], urls: list[str]) -> Iterator[WorkItem]:
    """Each item to the next replica in turn (the load generator's base URL is then "")."""
    for i, item in enumerate(items):
        yield replace(item, path=urls[i % len(urls)] + item.path)


async def one_setup(replicas: int, workload: Workload, args: argparse.Namespace,
                    up_url: str, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    redis = EmbeddedRedis(tmp / f"redis-{replicas}")
    await redis.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls = []
            for r in range(replicas):
                port = free_port()
                cmd = proxy_command(port, f"{up_url}/v1", redis.url, tmp / f"data-{replicas}-{r}")
                url = f"http://127.0.0.1:{port}"
                await stack.enter_async_context(
                    process(cmd, tmp / f"proxy-{replicas}-{r}.log", f"{url}/readyz", env))
                urls.append(url)
            print(f"{replicas} replica(s)", file=sys.stderr)
            result = await run_load("", round_robin(workload.items(), urls),
                                    concurrency=args.concurrency, max_requests=args.requests,
                                    duration_s=args.duration)
    finally:
        await redis.stop()
    summary = result.summary()
    hits = sum(v["count"] for k, v in summary["by_outcome"].items() if k.startswith("hit"))
    return {"replicas": replicas, "hit_rate": hits / max(summary["requests"], 1),
            "summary": summary, "timeseries": timeseries(result.samples)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload(WorkloadSpec(pool=args.pool, tenants=args.tenants, seed=args.seed),
                        load_pairs())
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "SEMCACHE__CACHE__SEMANTIC": "true" if args.semantic else "false"}
    with tempfile.TemporaryDirectory(prefix="semcache-replicas-") as tmp_name:
        tmp = Path(tmp_name)
        up_port = free_port()
        up_url = f"http://127.0.0.1:{up_port}"
        fake = [sys.executable, "-m", "semcache.loadtest.fake_upstream", "--port", str(up_port),
                "--delay", str(args.upstream_delay)]
        async with process(fake, tmp / "fake.log", f"{up_url}/v1/models", env):
            runs = [await one_setup(n, workload, args, up_url, tmp, env) for n in (1, 2)]
    return {"benchmark": "bench_replicas", "machine": machine_info(),
            "config": {"requests": args.requests, "duration_s": args.duration,
                       "concurrency": args.concurrency, "semantic": args.semantic,
                       "upstream_delay_s": args.upstream_delay, "workload": workload.describe()},
            "runs": runs,
            "hit_rate_difference": runs[1]["hit_rate"] - runs[0]["hit_rate"]}


def main(argv: list[str] | None = None) -> int:
    from .plots import plot_run

    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.bench_replicas", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=6000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--pool", type=int, default=500)
    p.add_argument("--tenants", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upstream-delay", type=float, default=0.02, help="fake upstream latency (s)")
    p.add_argument("--semantic", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    result = asyncio.run(bench(args))
    stem = f"replicas_{machine_slug(result['machine'])}"
    write_json(args.out / f"{stem}.json", result)
    for run in result["runs"]:
        plot_run(run, args.out / f"{stem}_{run['replicas']}.png")
        s = run["summary"]
        print(f"{run['replicas']} replica(s): hit rate {run['hit_rate']:.3f}, {s['requests']} requests, "
              f"{s['rps']:.0f}/s, errors {s['errors']}")
    print(f"wrote {args.out / stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
