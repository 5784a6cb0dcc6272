"""Reliability under load, faults and hostile input: what issue 16 found, measured.

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_reliability

Two `semcache serve` replicas (exact tier) on one real redis-server, in front of a fake
upstream served from this process, so that every upstream call is counted:

- burst: 20 identical new questions at once, plain and streamed, on one replica and spread
  over two: upstream calls per burst (single-flight);
- saturation: exact hits at 64 concurrent (and 512, past `server.max_in_flight`): upstream
  calls, bypasses and 503s while the proxy's event loop is saturated;
- stall: a probe's latency, one exact hit every 20 ms, while 4 MB bodies built to be slow to
  parse arrive one after another, against the same probe idle;
- hostile: the corpus of loadtest/hostile.py (depth, size, encodings, framing), by status;
- tenants: one question from 18 credentials (3 keys in each of 6 places) and 8 kinds of
  request without one, concurrently, through both replicas: answers served for another;
- passthrough: paths and queries the upstream must receive byte for byte.

Writes loadtest/results/reliability_<machine>.json (with the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from semcache.index.redis_server import EmbeddedRedis, find_redis_binary, free_port

from . import hostile
from .bench_proxy import RESULTS, hit_workload, process, proxy_command, warm
from .fake_upstream import FakeUpstream
from .loadgen import percentiles, run_load, write_json
from .machine import machine_info, machine_slug, redis_server_version

CHAT = "/v1/chat/completions"
PLACES: dict[str, Callable[[str], tuple[dict[str, str], str]]] = {
    "authorization": lambda k: ({"Authorization": f"Bearer {k}"}, ""),
    "api-key": lambda k: ({"api-key": k}, ""),
    "x-api-key": lambda k: ({"x-api-key": k}, ""),
    "x-goog-api-key": lambda k: ({"x-goog-api-key": k}, ""),
    "query-api-key": lambda k: ({}, f"?api-key={k}"),
    "query-key": lambda k: ({}, f"?key={k}"),
}
NO_CREDENTIAL: list[tuple[dict[str, str], str]] = [
    ({}, ""), ({"Authorization": ""}, ""), ({"Authorization": "Bearer"}, ""),
    ({"api-key": ""}, ""), ({"x-api-key": " "}, ""), ({"x-goog-api-key": ""}, ""),
    ({}, "?api-key="), ({}, "?key="),
]
PASSTHROUGH = [
    "/v1/echo/x?name=a%20b", "/v1/echo/files/a%2Fb", "/v1/echo/files/a%3Fb",
    "/v1/echo/files/a%23b", "/v1/echo/x?q=%26%3D&plus=1+2&empty=&flag",
    "/v1/echo/%E2%82%AC?v=%E2%82%AC", "/v1/echo/x?a=%2520", "/v1/echo/a;b,c@d:e~f!g$h'i(j)k*l",
]


def chat_body(question: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake-model",
                            "messages": [{"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
    return body


@contextlib.asynccontextmanager
async def fake_upstream() -> AsyncIterator[tuple[FakeUpstream, list[str], str]]:
    """The fake upstream in this process, every raw path it was asked for recorded."""
    fake, paths = FakeUpstream(), []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        paths.append(request.raw_path)
        return await handler(request)

    app = fake.app()
    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake, paths, fake.base_url
    finally:
        await runner.cleanup()


async def raw_status(port: int, data: bytes, timeout_s: float = 30.0) -> int:
    """Send bytes as they are; the status of the answer (0: closed without one)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(reader.read(), timeout_s)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


# sections -------------------------------------------------------------------------------

async def burst(session: aiohttp.ClientSession, fake: FakeUpstream, urls: list[str],
                rounds: int, size: int = 20) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fake.delay_s = 0.2  # long enough for the whole burst to arrive while the first waits
    for replicas in (1, 2):
        for stream in (False, True):
            calls, outcomes, failed = [], Counter[str](), 0
            for r in range(rounds):
                question = f"burst {replicas} {stream} {r} {time.time()}"
                before = len(fake.calls)

                async def one(i: int, q: str = question, n: int = replicas,
                              sse: bool = stream) -> tuple[int, str]:
                    url = urls[i % n] + CHAT
                    async with session.post(url, json=chat_body(q, sse),
                                            headers={"Authorization": "Bearer sk-burst"}) as resp:
                        await resp.read()
                        return resp.status, resp.headers.get("X-Semcache-Coalesced") or \
                            resp.headers.get("X-Semcache", "none")

                results = await asyncio.gather(*(one(i) for i in range(size)))
                failed += sum(status != 200 for status, _ in results)
                outcomes.update(outcome for _, outcome in results)
                calls.append(len(fake.calls) - before)
            out[f"{replicas}-replica{'s' if replicas > 1 else ''}/{'sse' if stream else 'json'}"] = {
                "burst": size, "rounds": rounds, "upstream_calls_per_burst": calls,
                "outcomes": dict(outcomes), "non_200": failed}
    fake.delay_s = 0.0
    return out


async def saturation(fake: FakeUpstream, url: str, duration_s: float,
                     levels: tuple[int, ...] = (64, 512)) -> dict[str, Any]:
    workload = hit_workload(pool=500, tenants=2)
    warmup = await warm(url, workload)
    out: dict[str, Any] = {"warmup": warmup}
    for concurrency in levels:
        before = len(fake.calls)
        result = await run_load(url, workload.items(), concurrency=concurrency,
                                duration_s=duration_s, progress=None)
        summary = result.summary()
        out[str(concurrency)] = {
            "upstream_calls": len(fake.calls) - before,
            "requests": summary["requests"], "rps": summary["rps"],
            "status": summary["status"],
            "outcomes": {k: v["count"] for k, v in summary["by_outcome"].items()},
            "bypass_reasons": summary["bypass_reasons"],
            "p50_ms": summary["all"]["p50_ms"], "p99_ms": summary["all"]["p99_ms"],
            "max_ms": summary["all"]["max_ms"],
        }
    return out


async def stall(session: aiohttp.ClientSession, url: str, port: int,
                phase_s: float) -> dict[str, Any]:
    """A probe's latency idle, then while 4 MB hostile bodies arrive one after another."""
    body = chat_body("the probe's question")
    headers = {"Authorization": "Bearer sk-probe"}
    async with session.post(url + CHAT, json=body, headers=headers) as resp:
        await resp.read()  # stored: every probe after it is an exact hit
    await asyncio.sleep(0.5)

    async def probe(stop: asyncio.Event, samples: list[tuple[float, str]]) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.post(url + CHAT, json=body, headers=headers) as resp:
                await resp.read()
                samples.append((time.perf_counter() - started, resp.headers["X-Semcache"]))
            await asyncio.sleep(0.02)

    async def phase(load: Callable[[], Any] | None) -> dict[str, Any]:
        stop, samples = asyncio.Event(), []
        prober = asyncio.create_task(probe(stop, samples))
        sent = await load() if load else await asyncio.sleep(phase_s)
        stop.set()
        await prober
        lat = [s for s, _ in samples]
        return {"probes": len(samples), **percentiles(lat),
                "outcomes": dict(Counter(o for _, o in samples)), "load": sent}

    slow = {name: data for name, data in hostile.requests().items()
            if name.startswith("size/")}

    async def hostile_load() -> dict[str, Any]:
        statuses: Counter[str] = Counter()
        deadline = time.perf_counter() + phase_s
        while time.perf_counter() < deadline:
            for data in slow.values():
                statuses[str(await raw_status(port, data))] += 1
        return {"bodies": sum(statuses.values()), "status": dict(statuses)}

    idle = await phase(None)
    loaded = await phase(hostile_load)
    return {"idle": idle, "hostile_4mb_bodies": loaded,
            "p99_ratio": loaded["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else None}


async def hostile_corpus(port: int) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for name, data in hostile.requests().items():
        statuses[name] = await raw_status(port, data)
    classes = Counter(f"{s // 100}xx" if s else "no-answer" for s in statuses.values())
    return {"requests": len(statuses), "by_class": dict(classes),
            "5xx_or_no_answer": sorted(n for n, s in statuses.items() if s == 0 or s >= 500),
            "by_kind": {kind: dict(Counter(str(s) for n, s in statuses.items()
                                           if n.startswith(kind + "/")))
                        for kind in ("depth", "size", "encoding", "framing")}}


def expected_tag(headers: dict[str, str], query: str) -> str:
    """What the fake upstream appends for a credential (fake_upstream.credential_of)."""
    if headers.get("Authorization", "").strip():
        return headers["Authorization"].strip()
    for name in ("api-key", "x-api-key", "x-goog-api-key"):
        if headers.get(name, "").strip():
            return f"{name}={headers[name].strip()}"
    first = query.split("&")[0]
    return first if first and not first.endswith("=") else "nobody"


async def tenants(session: aiohttp.ClientSession, fake: FakeUpstream, urls: list[str],
                  rounds: int) -> dict[str, Any]:
    fake.tag_answers_with_key = True
    identities = [PLACES[p](f"sk-{p}-{k}") for p in PLACES for k in range(3)]
    crossed, anonymous_keyed, served, outcomes = [], 0, 0, Counter[str]()

    async def ask(url: str, question: str, headers: dict[str, str], query: str,
                  keyed: bool) -> None:
        nonlocal anonymous_keyed, served
        async with session.post(url + CHAT + query, json=chat_body(question),
                                headers=headers) as resp:
            text = json.loads(await resp.read())["choices"][0]["message"]["content"]
            outcome = resp.headers["X-Semcache"]
        served += 1
        outcomes[outcome if keyed else f"anonymous:{outcome}"] += 1
        tag = text.rsplit("[for ", 1)[1].rstrip("]")
        if keyed and tag != expected_tag(headers, query):
            crossed.append({"sent": [headers, query], "got": tag})
        if not keyed and tag.startswith(("Bearer sk-", "api-key=sk", "x-api-key=sk",
                                         "x-goog-api-key=sk", "?api-key=sk", "?key=sk")):
            anonymous_keyed += 1

    for r in range(rounds):
        question = f"the same question for everyone {r}"
        jobs = [ask(urls[i % len(urls)], question, h, q, True)
                for i, (h, q) in enumerate(identities * 2)]
        jobs += [ask(urls[i % len(urls)], question, h, q, False)
                 for i, (h, q) in enumerate(NO_CREDENTIAL * 2)]
        await asyncio.gather(*jobs)
        await asyncio.sleep(0.3)  # write-backs land; the next round hits
        await asyncio.gather(*(ask(urls[i % len(urls)], question, h, q, True)
                               for i, (h, q) in enumerate(identities)))
    fake.tag_answers_with_key = False
    return {"credentials": len(identities), "anonymous_kinds": len(NO_CREDENTIAL),
            "requests": served, "outcomes": dict(outcomes), "crossed_to_another_key": crossed,
            "anonymous_served_a_keyed_answer": anonymous_keyed}


async def passthrough(session: aiohttp.ClientSession, port: int,
                      paths: list[str]) -> dict[str, Any]:
    mismatched = []
    for target in PASSTHROUGH:
        before = len(paths)
        status = await raw_status(
            port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        got = paths[before:]
        if status != 200 or got != [target]:
            mismatched.append({"sent": target, "status": status, "upstream_saw": got})
    return {"cases": len(PASSTHROUGH), "mismatched": mismatched}


# the run --------------------------------------------------------------------------------

async def bench(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEMCACHE__CACHE__SEMANTIC": "false"}
    sections = set(args.only.split(",")) if args.only else None
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="semcache-reliability-") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis")
        await redis.start()
        try:
            async with fake_upstream() as (fake, paths, up_url), contextlib.AsyncExitStack() as stack:
                urls, ports = [], []
                for r in range(2):
                    port = free_port()
                    cmd = proxy_command(port, up_url, redis.url, tmp / f"data-{r}")
                    url = f"http://127.0.0.1:{port}"
                    await stack.enter_async_context(
                        process(cmd, tmp / f"proxy-{r}.log", f"{url}/readyz", env))
                    urls.append(url)
                    ports.append(port)
                session = await stack.enter_async_context(aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0)))

                def wanted(name: str) -> bool:
                    return sections is None or name in sections

                if wanted("burst"):
                    print("burst", file=sys.stderr)
                    out["burst"] = await burst(session, fake, urls, args.rounds)
                if wanted("saturation"):
                    print("saturation", file=sys.stderr)
                    out["saturation"] = await saturation(fake, urls[0], args.duration)
                if wanted("stall"):
                    print("stall", file=sys.stderr)
                    out["stall"] = await stall(session, urls[0], ports[0], args.stall_s)
                if wanted("hostile"):
                    print("hostile corpus", file=sys.stderr)
                    out["hostile"] = await hostile_corpus(ports[0])
                if wanted("tenants"):
                    print("tenants", file=sys.stderr)
                    out["tenants"] = await tenants(session, fake, urls, args.rounds)
                if wanted("passthrough"):
                    out["passthrough"] = await passthrough(session, ports[0], paths)
        finally:
            await redis.stop()
    return {"benchmark": "bench_reliability",
            "machine": machine_info() | {"redis_server": redis_server_version(find_redis_binary())},
            "config": {"rounds": args.rounds, "saturation_s": args.duration,
                       "stall_phase_s": args.stall_s, "replicas": 2,
                       "proxy": "semcache serve, exact tier, shipped defaults"},
            **out}


def report(result: dict[str, Any]) -> Iterator[str]:
    for name, row in result.get("burst", {}).items():
        yield (f"burst {name}: upstream calls per burst of {row['burst']} "
               f"{row['upstream_calls_per_burst']} (median "
               f"{statistics.median(row['upstream_calls_per_burst'])}), non-200 {row['non_200']}")
    for level, row in result.get("saturation", {}).items():
        if level != "warmup":
            yield (f"saturation at {level}: {row['requests']} requests, {row['rps']:.0f}/s, "
                   f"upstream calls {row['upstream_calls']}, outcomes {row['outcomes']}, "
                   f"status {row['status']}, p99 {row['p99_ms']:.1f} ms")
    if "stall" in result:
        s = result["stall"]
        yield (f"stall: probe p99 idle {s['idle']['p99_ms']:.1f} ms, with 4 MB hostile bodies "
               f"{s['hostile_4mb_bodies']['p99_ms']:.1f} ms (max "
               f"{s['hostile_4mb_bodies']['max_ms']:.1f}), outcomes "
               f"{s['hostile_4mb_bodies']['outcomes']}")
    if "hostile" in result:
        h = result["hostile"]
        yield f"hostile corpus: {h['requests']} requests, {h['by_class']}"
    if "tenants" in result:
        t = result["tenants"]
        yield (f"tenants: {t['requests']} answers, crossed {len(t['crossed_to_another_key'])}, "
               f"anonymous served a keyed answer {t['anonymous_served_a_keyed_answer']}")
    if "passthrough" in result:
        p = result["passthrough"]
        yield f"passthrough: {p['cases']} cases, {len(p['mismatched'])} changed on the way"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.bench_reliability",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="bursts (and tenant rounds) per case")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per saturation level")
    p.add_argument("--stall-s", type=float, default=5.0, help="seconds per stall phase")
    p.add_argument("--only", default="", help="comma-separated sections")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="suffix of the results file name")
    args = p.parse_args(argv)
    result = asyncio.run(bench(args))
    path = args.out / f"reliability_{machine_slug(result['machine'])}{args.tag}.json"
    write_json(path, result)
    for line in report(result):
        print(line)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
