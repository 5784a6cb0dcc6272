"""Scale-out on Redis Cluster: two proxy replicas on a 3-master cluster against one Redis,
and a master killed under load.

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_cluster

- throughput: the same seeded workload (repeats with a Zipf distribution, paraphrases,
  unique questions, many tenants so that scopes spread over the shards) spread round-robin
  over two `semcache serve` replicas, once on one redis-server and once on a Redis Cluster
  of 3 masters and 3 replicas (loadtest/redis_topologies.py): throughput, hit rate,
  latency.
- failover: on a fresh cluster, the workload runs; at `--kill-at` seconds one master is
  SIGKILLed (its replica takes over after `cluster-node-timeout`, 1 s here). Counted: failed
  client requests (anything but a 200; the target is 0, bypasses are allowed), the time
  from the kill until the cache serves again (the last bypass) and until the cluster has
  failed over, entries lost (keys that existed just before the kill and are gone after:
  what asynchronous replication had not yet copied), and the hit rate before and after.

The exact tier only (the semantic tier's index is per replica and does not touch the
cluster's layout). Writes loadtest/results/cluster_<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from semcache.index.keys import Keys
from semcache.index.redis_server import EmbeddedRedis, find_redis_binary, free_port

from .bench_proxy import RESULTS, process, proxy_command
from .bench_replicas import round_robin
from .loadgen import Sample, run_load, summarize, timeseries, write_json
from .machine import machine_info, machine_slug, redis_server_version
from .redis_topologies import LocalCluster
from .workload import Workload, WorkloadSpec, load_pairs


def hit_rate(samples: list[Sample]) -> float | None:
    return sum(s.outcome.startswith("hit") for s in samples) / len(samples) if samples else None


def entry_keys(cluster: LocalCluster) -> set[bytes]:
    """Every entry key on the cluster's live masters."""
    found: set[bytes] = set()
    for port in cluster.master_ports():
        node = next(n for n in cluster.nodes if n.port == port)
        if not node.alive:
            continue
        client = redis.Redis(port=port, socket_timeout=10)
        try:
            found.update(client.scan_iter(match=Keys().all_entries_pattern, count=1000))
        finally:
            client.close()
    return found


def unhandled_errors(logs: list[Path]) -> list[list[str]]:
    """The tracebacks the proxies logged for requests that failed (the frames' places and
    the error), to say why a client request was not answered."""
    found: list[list[str]] = []
    for log in logs:
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        for i, line in enumerate(lines):
            if "unhandled error" not in line:
                continue
            block = []
            for nxt in lines[i + 1 : i + 80]:
                if nxt.strip().startswith("File ") or not nxt.startswith(" "):
                    block.append(nxt.strip())
                if nxt and not nxt.startswith((" ", "Traceback")):
                    break
            if block not in found:
                found.append(block)
    return found


@contextlib.asynccontextmanager
async def replicas(redis_url: str, up_url: str, tmp: Path, env: dict[str, str], name: str):  # type: ignore[no-untyped-def]
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for r in range(2):
            port = free_port()
            cmd = proxy_command(port, f"{up_url}/v1", redis_url, tmp / f"data-{name}-{r}")
            url = f"http://127.0.0.1:{port}"
            await stack.enter_async_context(
                process(cmd, tmp / f"proxy-{name}-{r}.log", f"{url}/readyz", env))
            urls.append(url)
        yield urls


def run_summary(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    return {"hit_rate": hit_rate(samples), "failed": sum(s.status != 200 for s in samples),
            "summary": summarize(samples, wall_s)}


async def throughput(backend: str, workload: Workload, args: argparse.Namespace, up_url: str,
                     tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        if backend == "redis":
            single = EmbeddedRedis(tmp / "redis")
            await single.start()
            stack.push_async_callback(single.stop)
            url = single.url
        else:
            cluster = LocalCluster(tmp / "cluster-throughput")
            await asyncio.to_thread(cluster.start)
            stack.callback(cluster.stop)
            url = cluster.url
        urls = await stack.enter_async_context(replicas(url, up_url, tmp, env, backend))
        print(f"throughput on {backend}", file=sys.stderr)
        result = await run_load("", round_robin(workload.items(), urls),
                                concurrency=args.concurrency, duration_s=args.duration)
    return {"backend": backend, **run_summary(result.samples, result.wall_s),
            "timeseries": timeseries(result.samples),
            "_samples": sorted(result.samples, key=lambda s: s.start_s)}


async def failover(workload: Workload, args: argparse.Namespace, up_url: str, tmp: Path,
                   env: dict[str, str]) -> dict[str, Any]:
    cluster = LocalCluster(tmp / "cluster-failover")
    await asyncio.to_thread(cluster.start)
    try:
        async with replicas(cluster.url, up_url, tmp, env, "failover") as urls:
            marks: dict[str, Any] = {}

            async def kill_later(t0: float) -> None:
                await asyncio.sleep(args.kill_at)
                marks["before"] = await asyncio.to_thread(entry_keys, cluster)
                marks["killed_at_s"] = time.perf_counter() - t0
                marks["killed_port"] = await asyncio.to_thread(cluster.kill_master)
                await asyncio.to_thread(cluster.wait_failed_over, 60.0)
                marks["failed_over_at_s"] = time.perf_counter() - t0

            print("failover run", file=sys.stderr)
            t0 = time.perf_counter()
            killer = asyncio.create_task(kill_later(t0))
            result = await run_load("", round_robin(workload.items(), urls),
                                    concurrency=args.concurrency, duration_s=args.failover_duration)
            await killer
            after = await asyncio.to_thread(entry_keys, cluster)
        proxy_errors = unhandled_errors([tmp / f"proxy-failover-{r}.log" for r in range(2)])
    finally:
        await asyncio.to_thread(cluster.stop)
    killed_at, failed_over_at = marks["killed_at_s"], marks["failed_over_at_s"]
    samples = result.samples
    before = [s for s in samples if s.start_s < killed_at]
    during = [s for s in samples if s.start_s >= killed_at]
    bypasses = [s for s in during if s.outcome == "bypass"]
    served_again_at = max((s.start_s + s.latency_s for s in bypasses), default=killed_at)
    after_recovery = [s for s in during if s.start_s > served_again_at]
    lost = marks["before"] - after
    return {
        "killed_master_port": marks["killed_port"],
        "killed_at_s": killed_at,
        "failed_client_requests": sum(s.status != 200 for s in samples),
        "errors": sorted({s.error or str(s.status) for s in samples if s.status != 200}),
        "proxy_unhandled_errors": proxy_errors,
        "cluster_failed_over_after_s": failed_over_at - killed_at,
        "hits_return_after_s": served_again_at - killed_at,
        "bypasses_after_kill": len(bypasses),
        "bypass_reasons": sorted({s.reason or "" for s in bypasses}),
        "entries_before_kill": len(marks["before"]),
        "entries_after": len(after),
        "entries_lost": len(lost),
        "hit_rate_before": hit_rate(before),
        "hit_rate_after_recovery": hit_rate(after_recovery),
        # the cache is still filling, so adjacent windows say more than the whole run's halves
        "hit_rate_5s_before": hit_rate([s for s in before if s.start_s >= killed_at - 5]),
        "hit_rate_5s_after_recovery": hit_rate(
            [s for s in after_recovery if s.start_s <= served_again_at + 5]),
        "requests_before": len(before), "requests_after_recovery": len(after_recovery),
        "summary": summarize(samples, result.wall_s),
        "timeseries": timeseries(samples),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload(WorkloadSpec(pool=args.pool, tenants=args.tenants, seed=args.seed),
                        load_pairs())
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEMCACHE__CACHE__SEMANTIC": "false"}
    with tempfile.TemporaryDirectory(prefix="semcache-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        up_port = free_port()
        up_url = f"http://127.0.0.1:{up_port}"
        fake = [sys.executable, "-m", "semcache.loadtest.fake_upstream", "--port", str(up_port),
                "--delay", str(args.upstream_delay)]
        async with process(fake, tmp / "fake.log", f"{up_url}/v1/models", env):
            runs = [await throughput(b, workload, args, up_url, tmp, env) for b in ("redis", "cluster")]
            # Runs of equal length send different numbers of requests, and a longer prefix of
            # the workload has more repeats: the hit rates compare on the same prefix.
            first = min(len(run["_samples"]) for run in runs)
            for run in runs:
                run["hit_rate_first_requests"] = hit_rate(run.pop("_samples")[:first])
                run["first_requests"] = first
            fail = await failover(workload, args, up_url, tmp, env)
    return {"benchmark": "bench_cluster", "machine": machine_info(),
            "redis_server": redis_server_version(find_redis_binary()),
            "config": {"duration_s": args.duration, "failover_duration_s": args.failover_duration,
                       "kill_at_s": args.kill_at, "concurrency": args.concurrency,
                       "replicas": 2, "cluster": "3 masters + 3 replicas, cluster-node-timeout 1000 ms",
                       "upstream_delay_s": args.upstream_delay, "workload": workload.describe()},
            "throughput": runs,
            "cluster_vs_redis_rps": runs[1]["summary"]["rps"] / max(runs[0]["summary"]["rps"], 1e-9),
            "failover": fail}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.bench_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per throughput run")
    p.add_argument("--failover-duration", type=float, default=30.0)
    p.add_argument("--kill-at", type=float, default=10.0, help="seconds into the failover run")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--pool", type=int, default=500)
    p.add_argument("--tenants", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upstream-delay", type=float, default=0.02, help="fake upstream latency (s)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    result = asyncio.run(bench(args))
    stem = f"cluster_{machine_slug(result['machine'])}"
    write_json(args.out / f"{stem}.json", result)
    for run in result["throughput"]:
        s = run["summary"]
        print(f"{run['backend']}: {s['rps']:.0f} req/s, hit rate {run['hit_rate']:.3f} "
              f"({run['hit_rate_first_requests']:.3f} over the first {run['first_requests']}), "
              f"failed {run['failed']}")
    f = result["failover"]
    print(f"failover: failed {f['failed_client_requests']}, hits back after "
          f"{f['hits_return_after_s']:.1f} s (cluster {f['cluster_failed_over_after_s']:.1f} s), "
          f"lost {f['entries_lost']} of {f['entries_before_kill']}, hit rate "
          f"{f['hit_rate_before']:.3f} -> {f['hit_rate_after_recovery']:.3f} (5 s windows "
          f"{f['hit_rate_5s_before']:.3f} -> {f['hit_rate_5s_after_recovery']:.3f})")
    print(f"wrote {args.out / stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
