"""What context chains cost a lookup: the time to resolve a history's fingerprint (one MGET of
its answer keys) against today's exact fingerprint (no Redis call), by history length, and
the bytes each remembered answer stores in Redis.

    python -m semcache.loadtest.bench_chains
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from semcache.index.redis_server import EmbeddedRedis
from semcache.index.store import Store
from semcache.loadtest.machine import machine_info
from semcache.proxy.pipeline.chains import Chains, answer_digest
from semcache.proxy.policy import scope_of
from semcache.proxy.protocol import parse_request

OUT = Path(__file__).resolve().parent / "results"
ROUNDS = 400


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"Question {i}: how do I configure feature {i}?"},
                     {"role": "assistant", "content": f"To configure feature {i}, open settings " * 8}]
    return messages + [{"role": "user", "content": "Make it shorter."}]


async def timed(fn: Any) -> list[float]:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_us": round(1e6 * statistics.median(times), 1),
            "p99_us": round(1e6 * times[int(0.99 * (len(times) - 1))], 1)}


async def main() -> int:
    result: dict[str, Any] = {"benchmark": "bench_chains", "machine": machine_info(),
                              "rounds": ROUNDS, "histories": {}}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        await server.start()
        client = aioredis.Redis.from_url(server.url)
        store = Store(client)
        chains = Chains(store)
        try:
            for turns in (1, 3, 10):
                body = {"model": "m", "messages": conversation(turns)}
                req = parse_request("chat", body)
                row: dict[str, Any] = {}
                row["exact_fingerprint"] = summary(await timed(
                    lambda req=req: _exact(req)))
                row["chains_nothing_cached"] = summary(await timed(
                    lambda req=req: _chained(chains, req)))
                for i, m in enumerate(req.body["messages"]):
                    if m["role"] == "assistant":
                        await chains.remember("t", "", m["content"], f"entry{i}",
                                              req.body["messages"][i - 1]["content"], 3600)
                row["chains_all_cached"] = summary(await timed(
                    lambda req=req: _chained(chains, req)))
                result["histories"][f"{turns}_assistant_turns"] = row
            key = store.keys.answer("t", "", answer_digest(conversation(1)[2]["content"]))
            result["bytes_per_answer_key"] = int(await client.memory_usage(key) or 0)
        finally:
            await client.aclose()
            await server.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "chains_cpu-2core.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    return 0


async def _exact(req: Any) -> None:
    scope_of(req, "t", "")


async def _chained(chains: Chains, req: Any) -> None:
    context = await chains.resolve(req, "t", "")
    scope_of(req, "t", "", context.fingerprint)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
