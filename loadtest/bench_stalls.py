"""Does index work, garbage collection or shutdown ever hold up requests? Measured through
real processes, with a probe client's latency as the yardstick.

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_stalls \
        [--scenarios switch,gc,sigterm,large] [--large-size 1000000] [--sigterm-runs 20]

Every server is its own process: a real redis-server, a fake upstream, the proxy (the
instrumented `stall_probe` launcher, or `semcache serve` itself for SIGTERM), and the
writers of synthetic entries (`stall_fill`). The probe sends exact hits of its own tenant
at a fixed rate (open loop, PROBE_RATE a second) and, more slowly, paraphrases into the
large scope (semantic lookups that search it). Scenarios:

- switch: one scope is filled to just under `index.hnsw_min_entries` (20,000) through the
  event stream; then the probe runs idle, while the scope crosses the threshold (its HNSW
  graph is built), and while 26% of it is deleted (just past the quarter of dead rows that
  makes a scope rebuild its graph). Run with the
  index as it is (`new`) and with its builder's jobs run inline on the event loop (`inline`,
  the index before this change), same code otherwise.
- gc: unique misses (write-backs with vectors) at concurrency 8, with and without
  proxy/gc_tuning.py: every collection's pause, recorded inside the proxy.
- sigterm: `semcache serve` under load (misses in flight, a graph build in flight), SIGTERM;
  each run must exit within `server.shutdown_grace_s` with every request sent before the
  signal answered 200.
- large: a scope of `--large-size` entries written to Redis, then a proxy started on it:
  start-up rebuild time, the probe while its graph is built, idle, and while a quarter of
  it is deleted.

Target (issue 16/18): the probe's p99 within 2x of its idle p99, and no bypass, while the
index works. Writes loadtest/results/stalls_<machine>.json (merged per scenario) and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from semcache.index.redis_server import EmbeddedRedis, find_redis_binary, free_port
from semcache.index.vectors import IndexSettings

from .bench_proxy import process
from .loadgen import Sample, WorkItem, percentiles, send_one, write_json
from .machine import machine_info, machine_slug, redis_server_version
from .workload import chat_body, load_pairs

RESULTS = Path(__file__).resolve().parent / "results"
PROBE_RATE = 40.0
"""Exact-hit probe requests a second (open loop)."""
SEMANTIC_RATE = 4.0
"""Semantic probe requests a second, into the large scope."""
AFTER_S = 3.0
"""The probe keeps running this long after the index work has finished."""
PROBE_KEY, BIG_KEY = "sk-stall-probe", "sk-stall-big"
CHAT = "/v1/chat/completions"


def item(question: str, key: str, kind: str) -> WorkItem:
    return WorkItem(path=CHAT, body=chat_body(question, model="fake-model", stream=False,
                                              max_tokens=64),
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                    kind=kind)


def cycle(items: list[WorkItem]) -> Iterator[WorkItem]:
    while True:
        yield from items


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    redis: EmbeddedRedis
    upstream: str
    slow_upstream: str
    models: Path
    centres: Path | None
    pairs: list[tuple[str, str]]
    big_key: str = BIG_KEY
    """The tenant of the large scope (a new one per round of a scenario)."""

    @property
    def threshold(self) -> int:
        return int(self.args.hnsw_min or IndexSettings().hnsw_min_entries)

    @property
    def proxy_env(self) -> dict[str, str]:
        return {"SEMCACHE__INDEX__HNSW_MIN_ENTRIES": str(self.threshold)}

    @property
    def exact_items(self) -> list[WorkItem]:
        return [item(f"probe question number {i}", PROBE_KEY, "probe") for i in range(40)]

    @property
    def stored_items(self) -> list[WorkItem]:
        return [item(a, self.big_key, "stored") for a, _ in self.pairs]

    @property
    def semantic_items(self) -> list[WorkItem]:
        return [item(b, self.big_key, "semantic") for _, b in self.pairs]


# processes --------------------------------------------------------------------------------


def proxy_args(port: int, bench: Bench, upstream: str) -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", str(port), "--upstream", upstream,
            "--redis", bench.redis.url, "--data-dir", str(bench.models)]


@contextlib.asynccontextmanager
async def probed_proxy(bench: Bench, name: str, *flags: str,
                       env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """The instrumented proxy, once its semantic tier is ready; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "semcache.loadtest.stall_probe", *flags,
           *proxy_args(port, bench, bench.upstream)]
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **bench.proxy_env, **(env or {})}
    async with process(cmd, bench.tmp / f"proxy-{name}.log", f"{url}/readyz", full_env):
        await until_ready(url, 600)
        yield url


async def probe_state(url: str, since: float = 0.0, scope: str | None = None,
                      census: bool = False) -> dict[str, Any]:
    params = {"since": repr(since), **({"scope": scope} if scope else {}),
              **({"objects": "1"} if census else {})}
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_probe",
                                                               params=params) as resp:
        return dict(await resp.json())


async def until_ready(url: str, timeout_s: float) -> float:
    started = time.monotonic()
    while not (await probe_state(url))["semantic_ready"]:
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"{url}: semantic tier not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def run_child(*args: str, log: Path) -> None:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=out,
                                                    stderr=subprocess.STDOUT)
        if await proc.wait() != 0:
            tail = log.read_text()[-2000:]  # noqa: ASYNC240 (it is over)
            raise SystemExit(f"{args!r} failed: {tail}")


async def fill(bench: Bench, template: str, count: int, first: int, *, events: bool) -> float:
    started = time.monotonic()
    extra = ["--centres", str(bench.centres)] if bench.centres else []
    await run_child("-m", "semcache.loadtest.stall_fill", "fill", "--redis", bench.redis.url,
                    "--template", template, "--count", str(count), "--first", str(first),
                    *(["--events"] if events else []), *extra, "--seed", str(first),
                    log=bench.tmp / "fill.log")
    return time.monotonic() - started


async def delete(bench: Bench, count: int, first: int = 0) -> float:
    started = time.monotonic()
    await run_child("-m", "semcache.loadtest.stall_fill", "delete", "--redis", bench.redis.url,
                    "--count", str(count), "--first", str(first), "--fraction", "0.26",
                    log=bench.tmp / "fill.log")
    return time.monotonic() - started


# the probe --------------------------------------------------------------------------------


async def probe(url: str, items: Iterator[WorkItem], rate: float, stop: asyncio.Event,
                max_in_flight: int = 32) -> tuple[float, list[Sample]]:
    """Requests at `rate` a second until `stop`; (wall time of t0, samples)."""
    samples: list[Sample] = []
    pending: set[asyncio.Task[None]] = set()
    room = asyncio.Semaphore(max_in_flight)
    wall0, t0 = time.time(), time.perf_counter()

    async def one(session: aiohttp.ClientSession, work: WorkItem) -> None:
        try:
            samples.append(await send_one(session, url, work, t0))
        finally:
            room.release()

    connector = aiohttp.TCPConnector(limit=max_in_flight)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        i = 0
        while not stop.is_set():
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await stop.wait()
                continue
            i += 1
            await room.acquire()
            task = asyncio.create_task(one(session, next(items)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
    return wall0, samples


def summary(samples: list[Sample]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for s in samples:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
    return {"requests": len(samples), "outcomes": outcomes,
            "bypasses": outcomes.get("bypass", 0),
            "errors": sum(s.status != 200 for s in samples),
            **percentiles(s.latency_s for s in samples)}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def lag_summary(state: dict[str, Any]) -> dict[str, Any]:
    lags = [late for _, late in state["lags"]]
    gcs = state["gc"]
    by_gen: dict[str, dict[str, float]] = {}
    for gen in (0, 1, 2):
        pauses = [(wall, cpu) for _, g, wall, _, cpu in gcs if g == gen]
        if pauses:
            walls, cpus = [w for w, _ in pauses], [c for _, c in pauses]
            by_gen[str(gen)] = {"count": len(pauses), "max_ms": max(walls) * 1000,
                                "p99_ms": float(np.percentile(walls, 99)) * 1000,
                                "total_ms": sum(walls) * 1000,
                                "cpu_max_ms": max(cpus) * 1000,
                                "cpu_median_ms": float(np.median(cpus)) * 1000}
    return {"loop_late_max_ms": max(lags, default=0.0) * 1000,
            "loop_late_over_50ms": sum(late > 0.05 for late in lags),
            "loop_late_over_250ms": sum(late > 0.25 for late in lags),
            "gc": by_gen}


async def measure(url: str, bench: Bench, *, work: Callable[[], Awaitable[Any]] | None = None,
                  done: Callable[[], Awaitable[bool]] | None = None, min_s: float = 0.0,
                  max_s: float = 600.0, semantic: bool = True) -> dict[str, Any]:
    """The probes while `work` runs and until `done()` holds (at least `min_s`), plus
    AFTER_S; what the proxy recorded meanwhile (loop lateness, collections)."""
    stop = asyncio.Event()
    began = time.time()
    busy0, total0 = machine_busy()
    cpu0 = (await probe_state(url, began))["cpu_s"]
    load0 = os.getloadavg()[0]
    probes = [asyncio.create_task(probe(url, cycle(bench.exact_items), PROBE_RATE, stop))]
    if semantic:
        probes.append(asyncio.create_task(
            probe(url, cycle(bench.semantic_items), SEMANTIC_RATE, stop, max_in_flight=8)))
    result: Any = await work() if work is not None else None
    deadline = time.monotonic() + max_s
    await asyncio.sleep(max(0.0, min_s - (time.time() - began)))
    timed_out = False
    while done is not None and not await done():
        if time.monotonic() > deadline:
            timed_out = True
            break
        await asyncio.sleep(0.5)
    worked_s = time.time() - began
    await asyncio.sleep(AFTER_S)
    stop.set()
    (wall0, exact), *rest = await asyncio.gather(*probes)
    state = await probe_state(url, began)
    busy1, total1 = machine_busy()
    cores = os.cpu_count() or 1
    # The proxy's share of the cores, and everything else's: Redis, this process, the
    # writers, and whatever else the machine runs (other users' jobs on a shared box).
    out = {"seconds": worked_s,
           "machine": {"busy_share": (busy1 - busy0) / max(total1 - total0, 1e-9),
                       "proxy_cores": (state["cpu_s"] - cpu0) / max(total1 - total0, 1e-9)
                       * cores, "rest_cores": ((busy1 - busy0) - (state["cpu_s"] - cpu0))
                       / max(total1 - total0, 1e-9) * cores,
                       "loadavg_1m": [load0, os.getloadavg()[0]]}, "timed_out": timed_out, "work": result,
           "probe": summary(exact), "proxy": lag_summary(state),
           "timeline": timeline(exact, wall0 - began)}
    if rest:
        out["semantic_probe"] = summary(rest[0][1])
    return out


def timeline(samples: list[Sample], offset_s: float, bucket_s: float = 0.5) -> dict[str, Any]:
    """The probe's latency per bucket (seconds since the phase began): median and worst."""
    buckets: dict[int, list[float]] = {}
    for s in samples:
        buckets.setdefault(int((offset_s + s.start_s) / bucket_s), []).append(s.latency_s)
    keys = sorted(buckets)
    return {"bucket_s": bucket_s, "t": [k * bucket_s for k in keys],
            "p50_ms": [round(float(np.median(buckets[k])) * 1000, 2) for k in keys],
            "max_ms": [round(max(buckets[k]) * 1000, 2) for k in keys]}


async def send(url: str, work: list[WorkItem]) -> list[Sample]:
    async with aiohttp.ClientSession() as session:
        return [await send_one(session, url, w, time.perf_counter()) for w in work]


async def warm(url: str, bench: Bench) -> str:
    """Store the probe's questions and the large scope's real questions; the id of one of
    the latter (a template for synthetic entries of that scope)."""
    await send(url, bench.exact_items + bench.stored_items)
    await asyncio.sleep(1.0)  # write-backs run after the response
    again = await send(url, bench.exact_items + bench.stored_items[:1])
    misses = [s for s in again if s.outcome != "hit-exact"]
    if misses:
        raise SystemExit(f"warm-up: {len(misses)} requests did not hit: {misses[:3]}")
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}{CHAT}", data=bench.stored_items[0].body,
            headers=dict(bench.stored_items[0].headers)) as resp:
        await resp.read()
        return resp.headers["X-Semcache-Entry"]


async def scope_of(bench: Bench, entry_id: str) -> str:
    import redis.asyncio as aioredis

    from semcache.index.store import Store

    client = aioredis.Redis.from_url(bench.redis.url)
    try:
        scope = await client.hget(Store(client).entry_key(entry_id), "scope")
    finally:
        await client.aclose()
    return scope.decode()


async def flush(bench: Bench) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(bench.redis.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def poll(done: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await done():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the proxy")
        await asyncio.sleep(0.25)


def scope_done(url: str, scope: str, check: Callable[[dict[str, Any]], bool]
               ) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return check((await probe_state(url, time.time(), scope))["scope"])
    return done


# scenarios ----------------------------------------------------------------------------------


SWITCH_VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "new": ((), {}),
    "inline": (("--inline-index",), {}),
    "nice19_all_cores": ((), {"SEMCACHE__INDEX__BUILD_NICE": "19",
                              "SEMCACHE__INDEX__BUILD_THREADS": str(os.cpu_count() or 2)}),
}
"""Proxies the switch scenario compares: the index as shipped, its jobs run inline on the
event loop (the index before it had a builder), and builds deprioritised (nice 19) on
every core."""


async def switch(bench: Bench) -> dict[str, Any]:
    """Rounds of (idle, switch, delete) per variant, each round on a scope of its own."""
    out: dict[str, Any] = {"hnsw_min_entries": bench.threshold}
    for variant in bench.args.switch_variants:
        flags, env = SWITCH_VARIANTS[variant]
        await flush(bench)
        rounds = []
        async with probed_proxy(bench, f"switch-{variant}", *flags, env=env) as url:
            for n in range(bench.args.rounds):
                print(f"switch: {variant}, round {n}", file=sys.stderr)
                bench.big_key = f"{BIG_KEY}-{n}"
                rounds.append(await switch_round(bench, url, first=n * 10**6))
        out[variant] = {"rounds": rounds}
    return out


async def switch_round(bench: Bench, url: str, first: int) -> dict[str, Any]:
    template = await warm(url, bench)
    scope = await scope_of(bench, template)
    below = bench.threshold - len(bench.pairs) - 500
    await fill(bench, template, below, first, events=True)
    await poll(scope_done(url, scope, lambda s: s.get("live", 0) >= below), 300)
    row: dict[str, Any] = {"idle": await measure(url, bench, min_s=bench.args.idle_s)}
    built = scope_done(url, scope, lambda s: s["kind"] == "hnsw" and not s["building"])
    row["switch"] = await measure(
        url, bench, work=lambda: fill(bench, template, 1000, first + below, events=True),
        done=built, min_s=5.0, max_s=300)
    row["switch"]["scope"] = (await probe_state(url, 0, scope))["scope"]
    live, builds = row["switch"]["scope"]["live"], row["switch"]["scope"]["builds"]
    compacted = scope_done(url, scope, lambda s: s["builds"] > builds and not s["building"])
    row["delete"] = await measure(url, bench, work=lambda: delete(bench, below + 1000, first),
                                  done=compacted, min_s=5.0, max_s=300)
    row["delete"]["scope"] = (await probe_state(url, 0, scope))["scope"]
    row["delete"]["deleted"] = live - row["delete"]["scope"]["live"]
    return row


async def gc_pauses(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    variants = [("default_gc", ("--no-gc-tuning",)), ("tuned_gc", ())] + [
        (f"tuned_gc_threshold_{t.replace(',', '_')}", ("--gc-threshold", t))
        for t in bench.args.gc_thresholds]
    for variant, flags in variants:
        print(f"gc: {variant}", file=sys.stderr)
        await flush(bench)
        async with probed_proxy(bench, f"gc-{variant}", *flags) as url:
            await warm(url, bench)
            state = await probe_state(url)
            writer = [sys.executable, "-m", "semcache.loadtest.loadgen", "--url", url,
                      "--concurrency", "8", "--duration", str(bench.args.gc_seconds),
                      "--requests", "10000000", "--repeat", "0", "--paraphrase", "0",
                      "--stream", "0.3", "--tenants", "4", "--out",
                      str(bench.tmp / f"writer-{variant}.json")]

            async def write_load(cmd: list[str] = writer, name: str = variant) -> dict[str, Any]:
                await run_child(*cmd[1:], log=bench.tmp / "writer.log")
                written = json.loads((bench.tmp / f"writer-{name}.json").read_text())
                return dict(written["summary"]["by_outcome"].get("miss", {}))

            row = {"frozen_objects": state["frozen"], "gc_threshold": state["gc_threshold"],
                   "census_before": (await probe_state(url, time.time(), census=True))["census"],
                   "idle": await measure(url, bench, min_s=10.0, semantic=False)}
            writing = asyncio.create_task(write_load())
            row["write_load"] = await measure(url, bench, work=None, done=writing_done(writing),
                                              min_s=5.0, semantic=False)
            row["write_load"]["writer_misses"] = await writing
            row["census_after"] = (await probe_state(url, time.time(), census=True))["census"]
        out[variant] = row
    return out


def writing_done(task: asyncio.Task[Any]) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return task.done()
    return done


async def sigterm(bench: Bench) -> dict[str, Any]:
    """N runs of SIGTERM under load against `semcache serve` itself."""
    grace = bench.args.grace
    await flush(bench)
    runs: list[dict[str, Any]] = []
    prefill = bench.args.sigterm_prefill
    async with probed_proxy(bench, "sigterm-seed") as url:
        template = await warm(url, bench)
    if prefill:
        await fill(bench, template, prefill, 0, events=False)  # each start builds a graph
    for n in range(bench.args.sigterm_runs):
        runs.append(await sigterm_run(bench, n))
        print(f"sigterm run {n}: {runs[-1]}", file=sys.stderr)
    return {"grace_s": grace, "runs": runs,
            "all_within_grace": all(r["within_grace"] for r in runs),
            "dropped": sum(r["dropped"] for r in runs),
            "exit_s_max": max(r["exit_s"] for r in runs),
            "runs_with_build_in_flight": sum(bool(r["graph_build_in_flight"]) for r in runs)}


async def sigterm_run(bench: Bench, n: int) -> dict[str, Any]:
    from .loadgen import run_load

    grace = bench.args.grace
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "semcache.proxy", *proxy_args(port, bench, bench.slow_upstream)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **bench.proxy_env,
           "SEMCACHE__SERVER__SHUTDOWN_GRACE_S": str(grace)}
    sent: list[float] = []
    async with process(cmd, bench.tmp / f"sigterm-{n}.log", f"{url}/readyz", env) as proc:
        await until_stats(url)
        building = await builder_busy(url)

        async def terminate() -> None:
            await asyncio.sleep(1.5)
            sent.append(time.perf_counter())
            proc.send_signal(signal.SIGTERM)

        t0 = time.perf_counter()
        killer = asyncio.create_task(terminate())
        unique = (item(f"sigterm run {n} question {i}", PROBE_KEY, "unique")
                  for i in range(10**6))
        result = await run_load(url, unique, concurrency=16, duration_s=4.0, progress=None)
        await killer
        try:
            code: int | None = await asyncio.to_thread(proc.wait, grace + 20)
        except subprocess.TimeoutExpired:
            code = None
        exited = time.perf_counter()
    term = sent[0] - t0
    before = [s for s in result.samples if s.start_s < term - 0.05]
    return {
        "run": n, "exit_code": code, "exit_s": exited - sent[0],
        "within_grace": code is not None and exited - sent[0] <= grace,
        "sent_before_sigterm": len(before),
        "in_flight_at_sigterm": sum(s.start_s + s.latency_s > term for s in before),
        "dropped": sum(s.status != 200 for s in before),
        "after_sigterm_5xx": sum(s.status >= 500 for s in result.samples
                                 if s.start_s > term + 0.05),
        "graph_build_in_flight": building}


async def until_stats(url: str, timeout_s: float = 120.0) -> None:
    """`semcache serve` has no probe route: wait for the semantic tier on the admin API."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with aiohttp.ClientSession() as session, session.get(
                f"{url}/admin/api/stats") as resp:
            if resp.status == 200 and (await resp.json()).get("semantic"):
                return
        await asyncio.sleep(0.25)
    raise SystemExit(f"{url}: semantic tier not ready")


async def builder_busy(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/admin/api/stats") as resp:
        stats = await resp.json()
    index = (stats.get("inventory") or {}).get("index") or {}
    return bool(index.get("builder", {}).get("scopes_waiting"))


async def large(bench: Bench) -> dict[str, Any]:
    size = bench.args.large_size
    await flush(bench)
    async with probed_proxy(bench, "large-seed") as url:
        template = await warm(url, bench)
        scope = await scope_of(bench, template)
    print(f"large: writing {size} entries", file=sys.stderr)
    out: dict[str, Any] = {"entries": size, "fill_s": await fill(bench, template, size, 0,
                                                                  events=False)}
    port = free_port()
    cmd = [sys.executable, "-m", "semcache.loadtest.stall_probe",
           *proxy_args(port, bench, bench.upstream)]
    url = f"http://127.0.0.1:{port}"
    log = bench.tmp / "proxy-large.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **bench.proxy_env}
    started = time.monotonic()
    # Ready once the start-up rebuild has read the store: about a minute per million
    # entries on the 2-core machine, longer while it is busy.
    async with process(cmd, log, f"{url}/readyz", env, ready_timeout_s=1800):
        out["startup_rebuild"] = await measure(
            url, bench, done=lambda: probe_ready(url), max_s=1800, semantic=False)
        out["startup_rebuild_s"] = time.monotonic() - started
        built = scope_done(url, scope, lambda s: s["kind"] == "hnsw" and not s["building"])
        print("large: graph build", file=sys.stderr)
        semantic = not bench.args.no_semantic_probe
        out["semantic_probe"] = semantic
        out["build"] = await measure(url, bench, done=built, max_s=bench.args.large_budget,
                                     semantic=semantic)
        out["build"]["scope"] = (await probe_state(url, 0, scope))["scope"]
        if out["build"]["timed_out"]:
            return out
        out["idle"] = await measure(url, bench, min_s=bench.args.idle_s, semantic=semantic)
        builds = out["build"]["scope"]["builds"]
        compacted = scope_done(url, scope, lambda s: s["builds"] > builds and not s["building"])
        print("large: deleting a quarter", file=sys.stderr)
        out["delete"] = await measure(url, bench, work=lambda: delete(bench, size), done=compacted,
                                      semantic=semantic,
                                      max_s=bench.args.large_budget)
        out["delete"]["scope"] = (await probe_state(url, 0, scope))["scope"]
    out["log"] = [line for line in log.read_text().splitlines()
                  if "rebuil" in line or "graph" in line][-40:]
    return out


async def probe_ready(url: str) -> bool:
    return bool((await probe_state(url, time.time()))["semantic_ready"])


# the run ------------------------------------------------------------------------------------


SCENARIOS = {"switch": switch, "gc": gc_pauses, "sigterm": sigterm, "large": large}


async def bench_all(args: argparse.Namespace) -> dict[str, Any]:
    from semcache.embeddings.export import ensure_exported
    from semcache.embeddings.settings import EmbeddingSettings

    from .bench_index import real_centres

    args.models.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(ensure_exported, args.models, "packaged",
                            EmbeddingSettings().export_variants)
    centres_file = args.models / "stall-centres.npy"
    if not centres_file.exists():
        centres, _ = await asyncio.to_thread(real_centres, args.models, np.random.default_rng(0))
        np.save(centres_file, centres)
    pairs = load_pairs().duplicates[:20]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="semcache-stalls-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis")
        await redis.start()
        fast, slow = free_port(), free_port()
        fake = [sys.executable, "-m", "semcache.loadtest.fake_upstream", "--port"]
        try:
            async with process([*fake, str(fast), "--delay", "0.02"], tmp / "fake.log",
                               f"http://127.0.0.1:{fast}/v1/models"), \
                    process([*fake, str(slow), "--delay", "0.6"], tmp / "fake-slow.log",
                            f"http://127.0.0.1:{slow}/v1/models"):
                bench = Bench(args, tmp, redis, f"http://127.0.0.1:{fast}/v1",
                              f"http://127.0.0.1:{slow}/v1", args.models, centres_file, pairs)
                for name in args.scenarios:
                    out[name] = await SCENARIOS[name](bench)
                    if args.keep_logs:
                        for f in tmp.glob("*.log"):  # noqa: ASYNC240 (a few small files)
                            (args.keep_logs / f.name).write_bytes(f.read_bytes())
        finally:
            await redis.stop()
    return out


def ratio(idle: dict[str, Any], busy: dict[str, Any]) -> dict[str, Any]:
    """The probe while the index worked against the probe idle just before (same round)."""
    p99, idle_p99 = busy["probe"]["p99_ms"], idle["probe"]["p99_ms"]
    return {"idle_p99_ms": idle_p99, "p99_ms": p99, "max_ms": busy["probe"]["max_ms"],
            "ratio": p99 / idle_p99 if idle_p99 else float("nan"),
            "within_2x": p99 <= 2 * idle_p99, "bypasses": busy["probe"]["bypasses"],
            "idle_bypasses": idle["probe"]["bypasses"],
            "rest_cores_busy": busy["machine"]["rest_cores"],
            "rest_cores_idle": idle["machine"]["rest_cores"]}


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def check(name: str, idle: dict[str, Any], busy: dict[str, Any]) -> None:
        out[name] = ratio(idle, busy)

    for variant, row in (result.get("switch") or {}).items():
        if isinstance(row, dict) and "rounds" in row:
            for phase in ("switch", "delete"):
                per_round = [ratio(r["idle"], r[phase]) for r in row["rounds"]]
                out[f"{phase}_{variant}"] = {
                    "rounds": per_round,
                    "median_ratio": float(np.median([r["ratio"] for r in per_round])),
                    "rounds_within_2x": sum(r["within_2x"] for r in per_round),
                    "bypasses": sum(r["bypasses"] for r in per_round),
                    "idle_bypasses": sum(r["idle_bypasses"] for r in per_round)}
    big = result.get("large") or {}
    if "idle" in big:
        check("large_build", big["idle"], big["build"])
        check("large_delete", big["idle"], big["delete"])
    if "sigterm" in result:
        s = result["sigterm"]
        out["sigterm"] = {"runs": len(s["runs"]), "all_within_grace": s["all_within_grace"],
                          "dropped": s["dropped"], "exit_s_max": s["exit_s_max"]}
    return out


def plot(payload: dict[str, Any], png: Path) -> None:
    """The probe's worst latency over time in each phase, one panel per scenario run."""
    from .plots import _pyplot

    panels: list[tuple[str, dict[str, Any]]] = []
    scenarios = payload["scenarios"]
    for variant, row in (scenarios.get("switch") or {}).items():
        if isinstance(row, dict) and "rounds" in row:
            panels.append((f"{scenarios['switch']['hnsw_min_entries']:,}-entry scope, index "
                           f"{variant}, round 0", row["rounds"][0]))
    if "large" in scenarios and "build" in scenarios["large"]:
        panels.append((f"{scenarios['large']['entries']:,}-entry scope", scenarios["large"]))
    for variant, row in (scenarios.get("gc") or {}).items():
        panels.append((f"write load, {variant}", row))
    if not panels:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for ax, (title, row) in zip(axes[:, 0], panels, strict=True):
        start = 0.0
        for phase in ("startup_rebuild", "idle", "switch", "build", "delete", "write_load"):
            if phase not in row or "timeline" not in row[phase]:
                continue
            tl = row[phase]["timeline"]
            ts = [start + t for t in tl["t"]]
            ax.plot(ts, tl["max_ms"], lw=0.8, label=f"{phase} (max per {tl['bucket_s']} s)")
            ax.axvline(start, color="grey", lw=0.5)
            start = (ts[-1] if ts else start) + 1.0
        ax.set_yscale("log")
        ax.set_ylabel("probe latency (ms)")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds (phases back to back)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.bench_stalls",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", type=lambda v: [x for x in v.split(",") if x],
                   default=["switch", "gc", "sigterm"], help=f"of {','.join(SCENARIOS)}")
    p.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "semcache-bench-models",
                   help="data directory with the exported encoder (exported there if missing)")
    p.add_argument("--gc-seconds", type=float, default=30.0)
    p.add_argument("--gc-thresholds", type=lambda v: [x for x in v.split(";") if x], default=[],
                   help="also try these thresholds with the freeze: '50000,20,10;...'")
    p.add_argument("--idle-s", type=float, default=15.0, help="length of the idle phases")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the switch scenario")
    p.add_argument("--switch-variants", type=lambda v: [x for x in v.split(",") if x],
                   default=["new", "nice19_all_cores", "inline"],
                   help=f"of {','.join(SWITCH_VARIANTS)}")
    p.add_argument("--hnsw-min", type=int, default=0,
                   help="index.hnsw_min_entries of the proxies (default: the shipped one)")
    p.add_argument("--sigterm-runs", type=int, default=20)
    p.add_argument("--sigterm-prefill", type=int, default=25_000,
                   help="entries in Redis before each SIGTERM run (a graph build at start-up)")
    p.add_argument("--grace", type=float, default=10.0, help="server.shutdown_grace_s")
    p.add_argument("--large-size", type=int, default=1_000_000)
    p.add_argument("--no-semantic-probe", action="store_true",
                   help="large: only the exact-hit probe (no searches of the large scope)")
    p.add_argument("--large-budget", type=float, default=900.0,
                   help="longest wait for one graph build of the large scope (s)")
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
    info = machine_info(("aiohttp", "redis", "numpy", "faiss-cpu", "onnxruntime")) | {
        "redis_server": redis_server_version(find_redis_binary())}
    stem = f"stalls_{machine_slug(info)}{args.tag}"
    path = args.out / f"{stem}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    result = asyncio.run(bench_all(args))
    merged = {**previous.get("scenarios", {}), **result}
    payload = {"benchmark": "bench_stalls", "machine": info,
               "config": {"probe_rate": PROBE_RATE, "semantic_rate": SEMANTIC_RATE,
                          "idle_s": args.idle_s, "rounds": args.rounds, "large_size": args.large_size,
                          "sigterm_runs": args.sigterm_runs, "grace_s": args.grace,
                          "index": asdict(IndexSettings())},
               "updated": {name: time.strftime("%Y-%m-%dT%H:%M:%S") for name in result}
               | {k: v for k, v in previous.get("updated", {}).items() if k not in result},
               "verdict": verdict(merged), "scenarios": merged}
    write_json(path, payload)
    plot(payload, path.with_suffix(".png"))
    print(json.dumps(payload["verdict"], indent=2))
    print(f"wrote {path} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
