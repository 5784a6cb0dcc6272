"""Memory per entry: in Redis (the entry hash, its LRU slot and stream event) and in a
replica's vector index.

    python -m semcache.loadtest.bench_memory [--entries 20000]

Entries are realistic: a question of ~60 characters, a ~900-byte chat.completion answer and
a 384-dimension float32 vector. Redis is measured by INFO's used_memory before and after;
the index by tracemalloc around the inserts (numpy reports its buffers to tracemalloc).
Writes loadtest/results/memory_<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis

from semcache.index.redis_server import EmbeddedRedis
from semcache.index.store import Entry, Store
from semcache.index.vectors import VectorIndex

from .machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 384


def answer(i: int) -> bytes:
    text = f"Answer number {i}: " + "lorem ipsum dolor sit amet " * 30
    return orjson.dumps({
        "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 180, "total_tokens": 200},
    })


async def measure_redis(n: int, vectors: np.ndarray, scopes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        await server.start()
        client = aioredis.Redis.from_url(server.url)
        try:
            store = Store(client, max_entries=0)
            before = (await client.info("memory"))["used_memory"]
            sample = answer(0)
            for i in range(n):
                await store.put(Entry(
                    id=f"{i:032x}", scope=f"{i % scopes:032x}", tenant="t" * 32, namespace="",
                    endpoint="chat", model="gpt-4o-mini",
                    query=f"How do I do thing number {i} in the most efficient possible way?",
                    response=answer(i), created=time.time(), ttl_s=3600,
                    embedding=vectors[i].tobytes(), upstream_s=1.5,
                ))
            after = (await client.info("memory"))["used_memory"]
            return {"entries": n, "used_memory_delta": after - before,
                    "bytes_per_entry": (after - before) / n, "response_bytes": len(sample),
                    "embedding_bytes": DIM * 4}
        finally:
            await client.aclose()
            await server.stop()


def measure_index(n: int, vectors: np.ndarray, scopes: int) -> dict[str, Any]:
    tracemalloc.start()
    index = VectorIndex(DIM)
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        index.add(f"{i % scopes:032x}", f"{i:032x}", vectors[i])
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"entries": n, "scopes": scopes, "traced_bytes": after - before,
            "bytes_per_entry": (after - before) / n, "vector_bytes": DIM * 4,
            "index_stats": index.stats()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((args.entries, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    results: dict[str, Any] = {"benchmark": "memory", "machine": machine_info(("redis", "numpy"))}
    for label, scopes in (("one_scope", 1), ("many_scopes", args.entries // 10)):
        print(f"{label}: redis", file=sys.stderr)
        results[f"redis_{label}"] = asyncio.run(measure_redis(args.entries, vectors, scopes))
        print(f"{label}: index", file=sys.stderr)
        results[f"index_{label}"] = measure_index(args.entries, vectors, scopes)
    out = args.out or RESULTS / "memory_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for key, value in results.items():
        if isinstance(value, dict) and "bytes_per_entry" in value:
            print(f"{key}: {value['bytes_per_entry']:.0f} bytes/entry", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
