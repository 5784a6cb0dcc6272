"""The proxy's own cost: exact hits through `semcache serve` vs the same requests sent
straight to the fake upstream, in the same run, at several concurrencies.

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_proxy [--profile]

Every server is its own process, so the load generator (this process) does not share an
event loop with what it measures: a real redis-server (the embedded manager, on a free port
in a temporary directory), the fake upstream, and the proxy (`semcache serve --upstream
<fake> --redis <url>`, no semantic tier). The cache is warmed with every question of the
workload, then each concurrency level runs `direct` and `proxy` back to back, `--rounds`
times, interleaved so that noise from other work on the machine falls on both alike.

Added latency = proxy percentile - direct percentile (medians over rounds). Writes
loadtest/results/proxy_<machine>.json and a PNG. `--profile` also runs the proxy under
cProfile during one extra proxy run and writes the top functions to the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from semcache.index.redis_server import EmbeddedRedis, find_redis_binary, free_port
from semcache.proxy.readiness import ChildExitedError, wait_for_200

from .loadgen import LoadResult, run_load, write_json
from .machine import machine_info, machine_slug, redis_server_version
from .workload import Workload, WorkloadSpec, load_pairs

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"added_p50_ms": 1.5, "added_p99_ms": 5.0, "hit_rps": 1500.0, "concurrency": 16}


def semcache_script() -> str:
    """The installed `semcache` console script (a Python file cProfile can run)."""
    candidate = Path(sys.executable).parent / "semcache"
    if not candidate.exists():
        raise SystemExit(f"no semcache script next to {sys.executable}: pip install -e .")
    return str(candidate)


def proxy_command(port: int, upstream_url: str, redis_url: str, data_dir: Path,
                  profile_out: Path | None = None) -> list[str]:
    if profile_out is None:
        prefix = [sys.executable, "-m", "semcache.proxy"]  # no installed script needed
    else:
        prefix = [sys.executable, "-m", "cProfile", "-o", str(profile_out), semcache_script()]
    return prefix + ["serve", "--host", "127.0.0.1", "--port", str(port),
                     "--upstream", upstream_url, "--redis", redis_url, "--data-dir", str(data_dir)]


@contextlib.asynccontextmanager
async def process(args: list[str], log: Path, ready_url: str, env: dict[str, str] | None = None,
                  ready_timeout_s: float = 60.0) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A child process that is up once `ready_url` answers 200; SIGTERM on the way out."""
    with log.open("wb") as out:
        # Popen returns at once; readiness is awaited below.
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,  # noqa: ASYNC220
                                stdin=subprocess.DEVNULL, env=env)
    try:
        await wait_ready(ready_url, proc, log, ready_timeout_s)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    try:
        await wait_for_200(url, proc.poll, timeout_s=timeout_s)
    except ChildExitedError:
        tail = log.read_text(errors="replace")[-2000:]  # noqa: ASYNC240 (it is over)
        raise SystemExit(f"{proc.args!r} exited: {tail}") from None
    except TimeoutError:
        raise SystemExit(f"{url} not ready after {timeout_s:.0f} s") from None


def hit_workload(pool: int, tenants: int) -> Workload:
    """Uniform over `pool` questions per tenant, no paraphrases or unique ones, no streaming:
    once warmed, every request is an exact hit."""
    spec = WorkloadSpec(pool=pool, zipf_s=0.0, repeat_fraction=1.0, paraphrase_fraction=0.0,
                        tenants=tenants, stream_fraction=0.0)
    return Workload(spec, load_pairs())


async def warm(proxy_url: str, workload: Workload) -> dict[str, Any]:
    """Send every question once (misses, stored), then once more to check they all hit."""
    total = workload.spec.pool * workload.spec.tenants
    first = await run_load(proxy_url, workload.warmup_items(), concurrency=16,
                           max_requests=total, duration_s=300, progress=None)
    await asyncio.sleep(0.5)  # write-backs run off the response path
    second = await run_load(proxy_url, workload.warmup_items(), concurrency=16,
                            max_requests=total, duration_s=300, progress=None)
    check = second.summary()
    hits = check["by_outcome"].get("hit-exact", {}).get("count", 0)
    if hits != total:
        raise SystemExit(f"warm-up: only {hits}/{total} exact hits: {check['by_outcome'].keys()}")
    return {"first_pass": {k: v["count"] for k, v in first.summary()["by_outcome"].items()},
            "second_pass_hits": hits}


def parse_level(spec: str) -> tuple[int, float | None]:
    """`16` is closed loop at concurrency 16; `16@500` is open loop at 500 requests/s with
    at most 16 in flight (latency without the client's own queueing)."""
    conc, _, rate = spec.partition("@")
    return int(conc), float(rate) if rate else None


def run_row(target: str, level: str, rnd: int, result: LoadResult) -> dict[str, Any]:
    concurrency, rate = parse_level(level)
    return {"target": target, "level": level, "concurrency": concurrency, "rate": rate,
            "round": rnd, "summary": result.summary()}


def compare(rows: list[dict[str, Any]], levels: list[str]) -> dict[str, Any]:
    """Per concurrency: medians over rounds of each target's percentiles, and each proxy's
    difference to `direct` (`added_ms` is the real proxy's; variants under `variants`)."""
    out: dict[str, Any] = {}
    quantities = ("p50_ms", "p95_ms", "p99_ms", "mean_ms")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    for c in levels:
        level: dict[str, Any] = {}
        for target in targets:
            runs = [r["summary"] for r in rows if r["level"] == c and r["target"] == target]
            level[target] = {q: statistics.median(s["all"][q] for s in runs) for q in quantities}
            level[target]["rps"] = statistics.median(s["rps"] for s in runs)
            level[target]["errors"] = sum(s["errors"] for s in runs)
            if target != "direct":
                level[target]["hit_exact_share"] = min(
                    s["by_outcome"].get("hit-exact", {}).get("count", 0) / max(s["requests"], 1)
                    for s in runs)
                level[target]["added_ms"] = {q: level[target][q] - level["direct"][q]
                                             for q in quantities}
        level["added_ms"] = level["proxy"]["added_ms"]
        out[str(c)] = level
    return out


def verdict(comparison: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked at concurrency 16 closed loop (throughput, and latency
    that includes queueing in the client) and, where measured, open loop (`16@RATE`)."""
    at = comparison.get(str(TARGETS["concurrency"]))
    if at is None:
        return {"checked": False}
    best_rps = max(level["proxy"]["rps"] for key, level in comparison.items() if "@" not in key)
    out: dict[str, Any] = {
        "checked": True,
        "closed_added_p50_ms": at["added_ms"]["p50_ms"],
        "closed_added_p99_ms": at["added_ms"]["p99_ms"],
        "hit_rps_at_16": at["proxy"]["rps"], "hit_rps_best": best_rps,
        "hit_rps_ok": at["proxy"]["rps"] >= TARGETS["hit_rps"],
    }
    for key, level in comparison.items():
        if key.startswith(f"{TARGETS['concurrency']}@"):
            out |= {"open_level": key, "open_added_p50_ms": level["added_ms"]["p50_ms"],
                    "open_added_p99_ms": level["added_ms"]["p99_ms"]}
    p50, p99 = out.get("open_added_p50_ms", out["closed_added_p50_ms"]), \
        out.get("open_added_p99_ms", out["closed_added_p99_ms"])
    out |= {"added_p50_ok": p50 <= TARGETS["added_p50_ms"], "added_p99_ok": p99 <= TARGETS["added_p99_ms"]}
    return out


def top_functions(prof: Path, n: int = 40) -> dict[str, Any]:
    """The profile's top functions by own time and by cumulative time, as text lines."""
    out: dict[str, Any] = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats = pstats.Stats(str(prof), stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(n)
        out[key] = [line for line in buf.getvalue().splitlines() if line.strip()]
    return out


def rounds_schedule(levels: list[str], rounds: int, targets: list[str]) -> Iterator[tuple[int, str, str]]:
    for rnd in range(rounds):
        for i, c in enumerate(levels):
            # Rotate which target goes first so a slow drift does not favour one.
            shift = (rnd + i) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                yield rnd, c, target


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    levels = [c.strip() for c in args.concurrency.split(",") if c.strip()]
    workload = hit_workload(args.pool, args.tenants)
    with tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis")
        await redis.start()
        up_port, proxy_port = free_port(), free_port()
        up_url, proxy_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"
        # The exact tier alone: the semantic tier's cost is the embedding benchmark's subject.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEMCACHE__CACHE__SEMANTIC": "false"}
        fake_cmd = [sys.executable, "-m", "semcache.loadtest.fake_upstream", "--port", str(up_port)]
        try:
            async with process(fake_cmd, tmp / "fake.log", f"{up_url}/v1/models", env):
                rows, warmup = await measure_all(args, levels, workload, up_url, proxy_url,
                                                 redis.url, tmp, env)
                profile = await profile_run(args, workload, up_url, redis.url, tmp, env) \
                    if args.profile else None
        finally:
            await redis.stop()
    comparison = compare(rows, levels)
    return {
        "benchmark": "bench_proxy",
        "machine": machine_info() | {"redis_server": redis_server_version(find_redis_binary())},
        "config": {"levels": levels, "rounds": args.rounds, "variants": args.variants,
                   "duration_s": args.duration,
                   "max_requests": args.requests, "workload": workload.describe()},
        "targets": TARGETS,
        "warmup": warmup,
        "comparison": comparison,
        "verdict": verdict(comparison),
        "runs": rows,
        "profile": profile,
    }


VARIANTS = {"no-access-log": ["--no-access-log"], "no-hit-count": ["--no-hit-count"],
            "no-access-log+no-hit-count": ["--no-access-log", "--no-hit-count"]}
"""Experimental proxy variants (`profile_proxy` flags) measured beside the real one."""


async def measure_all(args: argparse.Namespace, levels: list[str], workload: Workload, up_url: str,
                      proxy_url: str, redis_url: str, tmp: Path, env: dict[str, str],
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    port = int(proxy_url.rsplit(":", 1)[1])
    cmd = proxy_command(port, f"{up_url}/v1", redis_url, tmp / "data")
    urls = {"direct": up_url, "proxy": proxy_url}
    rows: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(process(cmd, tmp / "proxy.log", f"{proxy_url}/readyz", env))
        for name in args.variants:
            vport = free_port()
            vcmd = [sys.executable, "-m", "semcache.loadtest.profile_proxy", *VARIANTS[name],
                    "serve", "--host", "127.0.0.1", "--port", str(vport), "--upstream",
                    f"{up_url}/v1", "--redis", redis_url, "--data-dir", str(tmp / f"data-{name}")]
            urls[f"proxy:{name}"] = f"http://127.0.0.1:{vport}"
            await stack.enter_async_context(
                process(vcmd, tmp / f"proxy-{name}.log", f"{urls[f'proxy:{name}']}/readyz", env))
        warmup = await warm(proxy_url, workload)  # one Redis: every proxy sees the entries
        for rnd, c, target in rounds_schedule(levels, args.rounds, list(urls)):
            print(f"round {rnd} concurrency {c} {target}", file=sys.stderr)
            conc, rate = parse_level(c)
            result = await run_load(urls[target], workload.items(), concurrency=conc, rate=rate,
                                    max_requests=args.requests, duration_s=args.duration)
            rows.append(run_row(target, c, rnd, result))
    return rows, warmup


async def profile_run(args: argparse.Namespace, workload: Workload, up_url: str, redis_url: str,
                      tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """A second proxy process (same Redis, so the cache is already warm), profiled with
    cProfile during one run at concurrency 16 only (SIGUSR1 on, SIGUSR2 off and dump)."""
    port = free_port()
    prof = tmp / "proxy.prof"
    cmd = [sys.executable, "-m", "semcache.loadtest.profile_proxy", "--out", str(prof),
           "serve", "--host", "127.0.0.1", "--port", str(port), "--upstream", f"{up_url}/v1",
           "--redis", redis_url, "--data-dir", str(tmp / "data-prof")]
    url = f"http://127.0.0.1:{port}"
    async with process(cmd, tmp / "proxy-prof.log", f"{url}/readyz", env) as proc:
        await run_load(url, workload.items(), concurrency=16, max_requests=2000,
                       duration_s=5, progress=None)  # warm the code paths, the pools
        print("profiled proxy run, concurrency 16", file=sys.stderr)
        proc.send_signal(signal.SIGUSR1)
        result = await run_load(url, workload.items(), concurrency=16,
                                max_requests=args.requests, duration_s=args.duration)
        proc.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if prof.exists():
                break
            await asyncio.sleep(0.1)
    if args.profile_out:
        args.profile_out.write_bytes(prof.read_bytes())
    summary = result.summary()
    return {"note": "cProfile slows the proxy ~2x; read it for shares of time, not latency",
            "summary": summary, "per_request_us": per_request(prof, summary["requests"]),
            "top": top_functions(prof)}


STAGES = {
    # (file, function) -> what it is, for the per-request breakdown
    ("web_protocol.py", "data_received"): "aiohttp: parse the HTTP request",
    ("web_app.py", "_handle"): "aiohttp: dispatch (middlewares and handler, total)",
    ("serving.py", "handle"): "pipeline total (parse, scope, lookup, reply)",
    ("serving.py", "read_json"): "read and parse the JSON body",
    ("protocol.py", "parse_request"): "validate the request",
    ("policy.py", "parse_directives"): "X-Semcache-* directives",
    ("policy.py", "tenant_of"): "tenant hash",
    ("policy.py", "scope_of"): "scope hash",
    ("policy.py", "entry_id"): "entry id hash",
    ("serving.py", "find"): "exact lookup (Redis HGETALL, await included)",
    ("store.py", "get"): "Store.get",
    ("serving.py", "_serve_hit"): "build and send the hit",
    ("serving.py", "flush_hits"): "hit counts written to Redis in batches",
    ("events.py", "emit"): "observer: metrics and recent events",
    ("client.py", "execute_command"): "redis-py: one command (all)",
    ("web_protocol.py", "finish_response"): "aiohttp: write the response",
    ("base_events.py", "_run_once"): "event loop total",
    ("{method 'send' of '_socket.socket' objects}", ""): "socket send syscalls",
    ("{method 'poll' of 'select.epoll' objects}", ""): "epoll wait (idle or syscall)",
}


def per_request(prof: Path, requests: int) -> dict[str, float]:
    """Cumulative microseconds per request of the stages above (profiled, so inflated)."""
    stats = pstats.Stats(str(prof)).strip_dirs()
    out: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for (want_file, want_func), label in STAGES.items():
            if (file == want_file and func == want_func) or (want_func == "" and func == want_file):
                out[label] = out.get(label, 0.0) + ct / max(requests, 1) * 1e6
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.bench_proxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,16,64,16@400",
                   help="comma-separated levels: C (closed loop) or C@RATE (open loop)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=6.0, help="seconds per run (bound)")
    p.add_argument("--requests", type=int, default=30_000, help="requests per run (bound)")
    p.add_argument("--pool", type=int, default=500, help="distinct questions per tenant")
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also profile the proxy (cProfile)")
    p.add_argument("--variants", type=lambda v: [x for x in v.split(",") if x], default=[],
                   help=f"experimental proxies measured beside the real one: {','.join(VARIANTS)}")
    p.add_argument("--profile-out", type=Path, help="keep the raw .prof file here")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="suffix of the results file name")
    return p


def main(argv: list[str] | None = None) -> int:
    from .plots import plot_bench

    args = _parser().parse_args(argv)
    result = asyncio.run(bench(args))
    stem = f"proxy_{machine_slug(result['machine'])}{args.tag}"
    write_json(args.out / f"{stem}.json", result)
    plot_bench(result, args.out / f"{stem}.png")
    for c, level in result["comparison"].items():
        d = level["direct"]
        print(f"concurrency {c:>3}: direct p50 {d['p50_ms']:.2f} p99 {d['p99_ms']:.2f} ms "
              f"{d['rps']:.0f}/s")
        for target, row in level.items():
            if target.startswith("proxy"):
                print(f"  {target:<34} p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms "
                      f"{row['rps']:5.0f}/s  added p50 {row['added_ms']['p50_ms']:+.2f} "
                      f"p99 {row['added_ms']['p99_ms']:+.2f} ms")
    print(f"verdict: {result['verdict']}")
    print(f"wrote {args.out / stem}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
