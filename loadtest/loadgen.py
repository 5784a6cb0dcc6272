"""A load generator: an aiohttp client that drives a target with a workload, bounded in
requests and in time, and reports throughput and latency percentiles per outcome.

The outcome of a request is the proxy's `X-Semcache` header (hit-exact, hit-semantic, miss,
bypass), `none` where the target sent none (the upstream called directly), or `error` for a
failed request. Latency is measured from just before the request is sent to the last byte
of the body, so a streamed answer counts whole; time to the response headers is kept too.

    python -m semcache.loadtest.loadgen --url http://127.0.0.1:8080 \
        --concurrency 16 --requests 20000 --duration 60 --out loadtest/results/run.json --plot

Closed loop by default (`concurrency` workers, each sends its next request as soon as the
previous one is answered); `--rate` makes it open loop (requests start on a fixed schedule,
at most `concurrency` in flight), which measures latency without queueing in the client.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import numpy as np

PROGRESS_EVERY_S = 0.5
"""How often the progress line on stderr is redrawn."""


@dataclass(frozen=True, kw_only=True)
class WorkItem:
    """One request to send."""

    path: str
    """Path under the target URL, e.g. `/v1/chat/completions`."""
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False
    kind: str = ""
    """What the workload meant it to be (repeat, paraphrase, unique); kept in the samples."""
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Sample:
    """What happened to one request."""

    start_s: float
    """When it was sent, seconds after the run started."""
    latency_s: float
    """Until the last byte of the body (or the failure)."""
    ttfb_s: float
    """Until the response headers."""
    status: int
    """HTTP status, 0 for a request that failed without one."""
    outcome: str
    kind: str
    stream: bool
    error: str | None = None
    reason: str | None = None
    """The proxy's `X-Semcache-Reason` (why a request bypassed the cache), if any."""


@dataclass(kw_only=True)
class LoadResult:
    samples: list[Sample]
    wall_s: float
    concurrency: int
    rate: float | None
    stopped_by: str
    """`requests`, `duration` or `workload` (the items ran out)."""

    def summary(self) -> dict[str, Any]:
        return summarize(self.samples, self.wall_s) | {
            "concurrency": self.concurrency, "rate": self.rate, "stopped_by": self.stopped_by,
        }


def percentiles(values: Iterable[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    arr = np.fromiter(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q:g}_ms": float("nan") for q in qs} | {"mean_ms": float("nan")}
    pct = np.percentile(arr, qs)
    return {f"p{q:g}_ms": float(v) * 1000 for q, v in zip(qs, pct, strict=True)} | {
        "mean_ms": float(arr.mean()) * 1000, "max_ms": float(arr.max()) * 1000,
    }


def summarize(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    """Throughput and latency for all requests and per outcome."""
    by_outcome: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_outcome[s.outcome].append(s)

    def block(group: list[Sample]) -> dict[str, Any]:
        return {"count": len(group), "rps": len(group) / wall_s if wall_s > 0 else 0.0,
                **percentiles(s.latency_s for s in group),
                "ttfb_p50_ms": percentiles(s.ttfb_s for s in group)["p50_ms"]}

    errors = [s for s in samples if s.error is not None or s.status >= 500 or s.status == 0]
    return {
        "requests": len(samples),
        "wall_s": wall_s,
        "rps": len(samples) / wall_s if wall_s > 0 else 0.0,
        "errors": len(errors),
        "error_kinds": dict(Counter(s.error or str(s.status) for s in errors).most_common(10)),
        "status": {str(k): v for k, v in sorted(Counter(s.status for s in samples).items())},
        "all": block(samples),
        "by_outcome": {k: block(v) for k, v in sorted(by_outcome.items())},
        "by_kind": {k: dict(Counter(s.outcome for s in samples if s.kind == k))
                    for k in sorted({s.kind for s in samples})},
        "bypass_reasons": dict(Counter(s.reason or "none" for s in samples
                                       if s.outcome == "bypass")),
    }


class Progress:
    """One line on stderr, redrawn in place: done/limit, requests/s, errors, elapsed."""

    def __init__(self, out: TextIO | None, max_requests: int | None, duration_s: float | None) -> None:
        self.out = out
        self.max_requests = max_requests
        self.duration_s = duration_s
        self.done = 0
        self.errors = 0

    def draw(self, elapsed: float, final: bool = False) -> None:
        if self.out is None:
            return
        limit = f"/{self.max_requests}" if self.max_requests else ""
        span = f"/{self.duration_s:.0f}s" if self.duration_s else "s"
        rps = self.done / elapsed if elapsed > 0 else 0.0
        frac = max(self.done / self.max_requests if self.max_requests else 0.0,
                   elapsed / self.duration_s if self.duration_s else 0.0)
        bar = "#" * int(min(frac, 1.0) * 20)
        self.out.write(f"\r[{bar:<20}] {self.done}{limit} req  {rps:7.0f} req/s  "
                       f"{self.errors} errors  {elapsed:5.1f}{span}")
        if final:
            self.out.write("\n")
        self.out.flush()


async def send_one(session: aiohttp.ClientSession, base_url: str, item: WorkItem, t0: float) -> Sample:
    started = time.perf_counter()
    ttfb = 0.0
    try:
        async with session.request(item.method, base_url + item.path, data=item.body,
                                   headers=item.headers) as resp:
            ttfb = time.perf_counter() - started
            if item.stream:
                async for _ in resp.content.iter_any():
                    pass
            else:
                await resp.read()
            outcome = resp.headers.get("X-Semcache", "none")
            reason = resp.headers.get("X-Semcache-Reason")
            status = resp.status
        error = None
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        status, outcome, error, reason = 0, "error", type(e).__name__, None
    end = time.perf_counter()
    return Sample(start_s=started - t0, latency_s=end - started, ttfb_s=ttfb or end - started,
                  status=status, outcome=outcome, kind=item.kind, stream=item.stream, error=error,
                  reason=reason)


async def run_load(
    base_url: str,
    items: Iterable[WorkItem],
    *,
    concurrency: int,
    max_requests: int | None = None,
    duration_s: float | None = None,
    rate: float | None = None,
    timeout_s: float = 60.0,
    progress: TextIO | None = sys.stderr,
) -> LoadResult:
    """Send `items` to `base_url` until they run out, `max_requests` are done or
    `duration_s` has passed (requests in flight then are finished and counted)."""
    if max_requests is None and duration_s is None:
        raise ValueError("bound the run: give max_requests, duration_s or both")
    source: Iterator[WorkItem] = iter(items)
    samples: list[Sample] = []
    bar = Progress(progress, max_requests, duration_s)
    stopped_by = "workload"
    t0 = time.perf_counter()
    deadline = t0 + duration_s if duration_s is not None else float("inf")
    counter = itertools.count()
    taken = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal stopped_by, taken
        while True:
            now = time.perf_counter()
            if now >= deadline:
                stopped_by = "duration"
                return
            if max_requests is not None and taken >= max_requests:
                stopped_by = "requests"
                return
            item = next(source, None)
            if item is None:
                return
            taken += 1
            if rate is not None:  # open loop: the i-th request starts at t0 + i / rate
                wait = t0 + next(counter) / rate - now
                if wait > 0:
                    await asyncio.sleep(wait)
            sample = await send_one(session, base_url, item, t0)
            samples.append(sample)
            bar.done += 1
            bar.errors += sample.outcome == "error" or sample.status >= 500

    async def ticker() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            bar.draw(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        finally:
            tick.cancel()
    wall = time.perf_counter() - t0
    bar.draw(wall, final=True)
    return LoadResult(samples=samples, wall_s=wall, concurrency=concurrency, rate=rate,
                      stopped_by=stopped_by)


def timeseries(samples: list[Sample], bucket_s: float = 1.0) -> dict[str, Any]:
    """Per time bucket: latency percentiles per outcome and the hit rate (for the plots)."""
    if not samples:
        return {"bucket_s": bucket_s, "t": [], "hit_rate": [], "rps": [], "by_outcome": {}}
    n = int(max(s.start_s for s in samples) // bucket_s) + 1
    buckets: list[list[Sample]] = [[] for _ in range(n)]
    for s in samples:
        buckets[int(s.start_s // bucket_s)].append(s)
    outcomes = sorted({s.outcome for s in samples})
    by_outcome: dict[str, dict[str, list[float | None]]] = {
        o: {"p50_ms": [], "p95_ms": [], "p99_ms": []} for o in outcomes
    }
    hit_rate: list[float | None] = []
    for bucket in buckets:
        hits = sum(s.outcome.startswith("hit") for s in bucket)
        hit_rate.append(hits / len(bucket) if bucket else None)
        for o in outcomes:
            lat = [s.latency_s for s in bucket if s.outcome == o]
            pct = percentiles(lat) if lat else {}
            for key in ("p50_ms", "p95_ms", "p99_ms"):
                by_outcome[o][key].append(pct.get(key))
    return {"bucket_s": bucket_s, "t": [i * bucket_s for i in range(n)], "hit_rate": hit_rate,
            "rps": [len(b) / bucket_s for b in buckets], "by_outcome": by_outcome}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Sample):
        return asdict(value)
    raise TypeError(type(value).__name__)


def _parser() -> argparse.ArgumentParser:
    from .workload import add_workload_args

    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="target base URL (the proxy, or the upstream)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=10_000, help="stop after this many requests")
    p.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    p.add_argument("--rate", type=float, help="open loop: requests per second")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    p.add_argument("--out", type=Path, help="results JSON (default: print the summary)")
    p.add_argument("--plot", action="store_true", help="also write a PNG next to --out")
    add_workload_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from .machine import machine_info
    from .workload import workload_from_args

    args = _parser().parse_args(argv)
    workload = workload_from_args(args)
    result = asyncio.run(run_load(
        args.url.rstrip("/"), workload.items(), concurrency=args.concurrency,
        max_requests=args.requests, duration_s=args.duration, rate=args.rate,
        timeout_s=args.timeout,
    ))
    payload = {"machine": machine_info(), "target": args.url, "workload": workload.describe(),
               "summary": result.summary(), "timeseries": timeseries(result.samples)}
    if args.out is None:
        print(json.dumps(payload["summary"], indent=2))
        return 0
    write_json(args.out, payload)
    if args.plot:
        from .plots import plot_run

        plot_run(payload, args.out.with_suffix(".png"))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
