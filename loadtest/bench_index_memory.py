"""Toward 10 million entries on the CPU side: index memory per entry by vector storage (with
recall@1), Redis memory per entry, and the start-up rebuild's rate.

    flock /tmp/semcache-bench.lock python -m semcache.loadtest.bench_index_memory \
        [--codes-size 1000000] [--hnsw-size 100000] [--redis-entries 200000]

- codes: one scope's vectors as FAISS stores them: fp32 (IndexFlatIP), fp16 and int8
  (IndexScalarQuantizer), PQ (IndexPQ, 48 and 96 bytes a vector), each searched
  exhaustively for recall@1 against exact fp32 search (queries at noise 0.25 and, looser
  paraphrases, 0.5), and PQ also with its top 10
  re-scored exactly (what the scope does with its fp32 rows). Bytes per entry from the
  codes; vectors of bench_index's distributions (--data: dense clusters by default, sparse
  as in bench_index's CPU runs), queries noisy copies of stored vectors.
- hnsw: a scope of --hnsw-size entries built as the proxy builds it (ScopeIndex, HNSW M=32)
  for each `index.hnsw_storage` (fp32, fp16, int8): build time, the graph's bytes per entry
  (codes + links, from FAISS's own arrays), the scope's own rows and bookkeeping per entry
  (tracemalloc: fp32 rows, ids, positions; not VectorIndex's id -> scope map), search p50
  and recall@1 through ScopeIndex.search.
- redis: --redis-entries entries written by the real Store (a real redis-server, the entry
  hash, its LRU and scope sets, the stream event), half in one scope and half across
  1,000; INFO used_memory delta per entry.
- startup: the proxy's start-up rebuild (IndexSync.rebuild, bulk) of that Redis into a
  fresh VectorIndex: its progress lines, time and entries a second, then the large
  scope's HNSW build on the builder's thread.

Every figure at 10M is an extrapolation (per-entry figure x 10M), labelled as such.
Writes loadtest/results/index_memory_<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from semcache.index.vectors import IndexSettings, ScopeIndex

from .bench_index import DATA, make_queries, make_vectors
from .machine import machine_info, machine_slug, redis_server_version

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 384
TEN_M = 10_000_000
QUERIES = 200


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    rows = np.zeros(len(queries), dtype=np.int64)
    for first in range(0, len(vectors), 100_000):
        sims = queries @ vectors[first : first + 100_000].T
        top = sims.argmax(axis=1)
        val = sims[np.arange(len(queries)), top]
        better = val > best
        best[better], rows[better] = val[better], top[better] + first
    return rows


FAR_NOISE = 0.5
"""Noise of the second, harder query set (cosine ~0.89 to its source: a looser paraphrase,
whose exact nearest neighbour is often another stored vector)."""


def far_queries(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = vectors[rng.integers(0, len(vectors), QUERIES)]
    noisy = base + rng.standard_normal(base.shape).astype(np.float32) * (FAR_NOISE / np.sqrt(DIM))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def dataset(n: int, data: str, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors of one of bench_index's distributions (DATA: vectors a centre, noise)."""
    if data == "sparse":  # bench_index's CPU data: 2,000 centres, noise 0.6
        centres = rng.standard_normal((2000, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        return make_vectors(n, centres, rng)
    per_centre, spread = DATA[data]
    out = np.empty((n, DIM), dtype=np.float32)
    centres = rng.standard_normal((max(1, n // per_centre), DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for first in range(0, n, 100_000):  # in pieces: no float64 temporary of the whole set
        last = min(n, first + 100_000)
        part = rng.standard_normal((last - first, DIM), dtype=np.float32)
        if per_centre > 1:
            part = centres[rng.integers(0, len(centres), last - first)] + part * (
                spread / np.sqrt(DIM))
        out[first:last] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def codes(n: int, data: str, rng: np.random.Generator) -> dict[str, Any]:
    import faiss

    vectors = dataset(n, data, rng)
    queries = make_queries(vectors, QUERIES, rng)
    truth = exact_top1(vectors, queries)
    far = far_queries(vectors, rng)
    far_truth = exact_top1(vectors, far)
    sample = vectors[rng.choice(n, size=min(n, 100_000), replace=False)]
    out: dict[str, Any] = {"entries": n, "data": data, "queries": QUERIES, "variants": {}}
    ip = faiss.METRIC_INNER_PRODUCT
    variants: dict[str, Any] = {
        "fp32": lambda: faiss.IndexFlatIP(DIM),
        "fp16": lambda: faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, ip),
        "int8": lambda: faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, ip),
        "pq96": lambda: faiss.IndexPQ(DIM, 96, 8, ip),
        "pq48": lambda: faiss.IndexPQ(DIM, 48, 8, ip),
    }
    for name, make in variants.items():
        print(f"  codes {name}", file=sys.stderr, flush=True)
        index = make()
        t = time.perf_counter()
        if name.startswith("pq"):  # 64 points a centroid, 10 k-means rounds: enough for PQ
            index.pq.cp.niter = 10
            index.train(sample[: 64 * 256])
        elif not index.is_trained:
            index.train(sample)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        for first in range(0, n, 65_536):
            index.add(vectors[first : first + 65_536])
        add_s = time.perf_counter() - t
        t = time.perf_counter()
        sims, labels = index.search(queries, 10)
        search_ms = (time.perf_counter() - t) * 1e3 / QUERIES
        code = index.sa_code_size() if name != "fp32" else DIM * 4
        res: dict[str, Any] = {
            "bytes_per_entry": code, "train_s": round(train_s, 2), "add_s": round(add_s, 2),
            "exhaustive_search_ms_per_query": round(search_ms, 2),
            "recall_at_1": round(float(np.mean(labels[:, 0] == truth)), 4),
            "at_10m_gib": gib(code * TEN_M)}
        _, far_labels = index.search(far, 10)
        res[f"recall_at_1_queries_noise_{FAR_NOISE}"] = round(
            float(np.mean(far_labels[:, 0] == far_truth)), 4)
        if name.startswith("pq"):  # top 10 re-scored exactly against the fp32 rows
            for key, lab, qs, tr in (("", labels, queries, truth),
                                     (f"_queries_noise_{FAR_NOISE}", far_labels, far, far_truth)):
                rescored = [int(row[np.argmax(vectors[row] @ q)]) for row, q in zip(lab, qs, strict=True)]
                res[f"recall_at_1_top10_rescored{key}"] = round(
                    float(np.mean(np.array(rescored) == tr)), 4)
        out["variants"][name] = res
        print(f"    {code} B/entry  recall@1 {res['recall_at_1']:.3f}", file=sys.stderr, flush=True)
        del index
    return out


def graph_bytes(graph: Any) -> int:
    import faiss

    hnsw = graph.hnsw
    links = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
    storage = faiss.downcast_index(graph.storage)
    code = storage.code_size if hasattr(storage, "code_size") else DIM * 4
    return int(links + code * graph.ntotal)


def hnsw(n: int, data: str, rng: np.random.Generator) -> dict[str, Any]:
    vectors = dataset(n, data, rng)
    queries = make_queries(vectors, QUERIES, rng)
    truth = exact_top1(vectors, queries)
    far = far_queries(vectors, rng)
    far_truth = exact_top1(vectors, far)
    out: dict[str, Any] = {"entries": n, "data": data, "M": IndexSettings().hnsw_m,
                           "variants": {}}
    for storage in ("fp32", "fp16", "int8"):
        print(f"  hnsw {storage}", file=sys.stderr, flush=True)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        ids = [f"{i:032x}" for i in range(n)]  # counted: the scope holds them
        scope = ScopeIndex(DIM, IndexSettings(hnsw_min_entries=1, hnsw_storage=storage))
        t = time.perf_counter()
        scope.load(ids, vectors)  # no builder: the graph is built inline, as one build
        build_s = time.perf_counter() - t
        python_bytes = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            hits = scope.search(q, 1)
            times.append((time.perf_counter() - t) * 1e3)
            found.append(int(hits[0][0], 16) if hits else -1)
        far_found = [int(hits[0][0], 16) if (hits := scope.search(q, 1)) else -1 for q in far]
        graph = graph_bytes(scope._graph)
        rows_bytes = DIM * 4
        out["variants"][storage] = {
            "build_s": round(build_s, 2), "search_p50_ms": round(float(np.median(times)), 3),
            "recall_at_1": round(float(np.mean(np.array(found) == truth)), 4),
            f"recall_at_1_queries_noise_{FAR_NOISE}": round(
                float(np.mean(np.array(far_found) == far_truth)), 4),
            "graph_bytes_per_entry": round(graph / n, 1),
            "scope_rows_bytes_per_entry": rows_bytes,
            "scope_python_bytes_per_entry": round((python_bytes - rows_bytes * n) / n, 1),
            "total_bytes_per_entry": round(graph / n + python_bytes / n, 1),
            "at_10m_gib_extrapolated": gib((graph + python_bytes) / n * TEN_M)}
        print(f"    build {build_s:.1f} s  {out['variants'][storage]['total_bytes_per_entry']:.0f} "
              f"B/entry  recall@1 {out['variants'][storage]['recall_at_1']:.3f}", file=sys.stderr,
              flush=True)
        del scope, ids
    return out


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.started = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"+{time.monotonic() - self.started:.1f}s {record.getMessage()}")


async def redis_and_startup(n: int, vectors_rng: np.random.Generator) -> dict[str, Any]:
    import orjson
    import redis.asyncio as aioredis

    from semcache.index.redis_server import EmbeddedRedis, find_redis_binary
    from semcache.index.store import Entry, Store
    from semcache.index.sync import IndexSync
    from semcache.index.vectors import VectorIndex

    centres = vectors_rng.standard_normal((2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = make_vectors(n, centres, vectors_rng)
    big = "f" * 32
    out: dict[str, Any] = {"redis_server": redis_server_version(find_redis_binary())}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp))
        await server.start()
        client = aioredis.Redis.from_url(server.url)
        tail = aioredis.Redis.from_url(server.url)
        try:
            store = Store(client, max_entries=0)
            before = (await client.info("memory"))["used_memory"]
            text = "lorem ipsum dolor sit amet " * 30

            def entry(i: int) -> Entry:
                response = orjson.dumps({
                    "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1,
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": f"Answer {i}: {text}"},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 180, "total_tokens": 200}})
                return Entry(id=f"{i:032x}", scope=big if i % 2 == 0 else f"{i % 1000:032x}",
                             tenant="t" * 32, namespace="", endpoint="chat", model="gpt-4o-mini",
                             query=f"How do I do thing number {i} in the most efficient possible way?",
                             response=response, created=time.time(), ttl_s=86_400,
                             embedding=vectors[i].tobytes(), upstream_s=1.5)

            t = time.perf_counter()
            for first in range(0, n, 64):  # 64 writes in flight, as a busy proxy has
                await asyncio.gather(*(store.put(entry(i)) for i in range(first, min(n, first + 64))))
                if first // 50_000 != (first + 64) // 50_000:
                    print(f"    redis: {first:,} of {n:,} entries written", file=sys.stderr, flush=True)
            write_s = time.perf_counter() - t
            info = await client.info("memory")
            delta = info["used_memory"] - before
            out["redis"] = {
                "entries": n, "scopes": 1001, "write_s": round(write_s, 1),
                "writes_per_s": round(n / write_s), "used_memory_delta": delta,
                "bytes_per_entry": round(delta / n, 1),
                "response_bytes": len(entry(0).response), "embedding_bytes": DIM * 4,
                "at_10m_gib_extrapolated": gib(delta / n * TEN_M),
                "mem_allocator": info.get("mem_allocator"),
                "fragmentation_ratio": info.get("mem_fragmentation_ratio")}
            print(f"    redis: {delta / n:.0f} B/entry", file=sys.stderr, flush=True)

            lines = Lines()
            for name in ("semcache.index.sync", "semcache.index.scope"):
                logging.getLogger(name).addHandler(lines)
                logging.getLogger(name).setLevel(logging.INFO)
            index = VectorIndex(DIM, IndexSettings(device="cpu"))
            sync = IndexSync(store, index, tail)
            t = time.perf_counter()
            loaded = await sync.rebuild()
            rebuild_s = time.perf_counter() - t
            print(f"    start-up rebuild: {loaded:,} in {rebuild_s:.1f} s; graph building",
                  file=sys.stderr, flush=True)
            t = time.perf_counter()
            done = await asyncio.to_thread(index.wait_for_builds, 900)
            graph_s = time.perf_counter() - t
            out["startup"] = {
                "entries_indexed": loaded, "rebuild_s": round(rebuild_s, 2),
                "entries_per_s": round(loaded / rebuild_s), "large_scope_entries": (n + 1) // 2,
                "graph_build_after_s": round(graph_s, 1), "graph_built": done,
                "by_kind": index.stats()["by_kind"],
                "at_10m_rebuild_s_extrapolated": round(TEN_M / (loaded / rebuild_s)),
                "progress_lines": lines.lines}
            index.close(5)
        finally:
            await client.aclose()
            await tail.aclose()
            await server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes-size", type=int, default=1_000_000)
    parser.add_argument("--hnsw-size", type=int, default=100_000)
    parser.add_argument("--redis-entries", type=int, default=200_000)
    parser.add_argument("--parts", default="codes,hnsw,redis")
    parser.add_argument("--data", default="dense",
                        help="distributions for codes and hnsw, of sparse (bench_index's CPU "
                        "data), dense, uniform (bench_index.DATA)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    machine = machine_info(("numpy", "faiss-cpu", "redis", "hiredis"))
    results: dict[str, Any] = {"benchmark": "index_memory", "machine": machine, "dim": DIM,
                               "note": "figures at 10M are per-entry figures x 10M (extrapolated)"}
    out = args.out or RESULTS / f"index_memory_{machine_slug(machine)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # parts run separately merge into one file
        previous = json.loads(out.read_text())
        results = {**previous, **results}
    started = time.monotonic()
    for data in args.data.split(","):
        suffix = "" if data == "sparse" else f"_{data}"
        if "codes" in parts:
            print(f"codes at {args.codes_size:,} ({data})", file=sys.stderr)
            results[f"codes{suffix}"] = codes(args.codes_size, data, np.random.default_rng(1))
            out.write_text(json.dumps(results, indent=2))
        if "hnsw" in parts:
            print(f"hnsw at {args.hnsw_size:,} ({data})", file=sys.stderr)
            results[f"hnsw{suffix}"] = hnsw(args.hnsw_size, data, np.random.default_rng(2))
            out.write_text(json.dumps(results, indent=2))
    if "redis" in parts:
        print(f"redis and start-up at {args.redis_entries:,}", file=sys.stderr)
        results.update(asyncio.run(redis_and_startup(args.redis_entries, np.random.default_rng(3))))
    results[f"elapsed_s_{'_'.join(sorted(parts))}"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
