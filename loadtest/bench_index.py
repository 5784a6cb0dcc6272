"""Vector index benchmark: search latency and recall in ONE scope of 10k, 100k and 1M entries.

    python -m semcache.loadtest.bench_index [--sizes 10000,100000,1000000] [--queries 200]

Variants, same run, same vectors: exact flat search on the CPU (numpy gemv, what small scopes
use), FAISS HNSW on the CPU (what large scopes use) with recall@1 and recall@4 against flat,
and on a CUDA machine the GPU flat search (torch, fp16). Vectors are synthetic but shaped
like real ones: unit vectors clustered around the embeddings of real Quora questions (when
the encoder is exported in --data-dir) or around random centres, and queries are noisy
copies of stored vectors (a paraphrase looks like that to the index).

Writes loadtest/results/index_<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcache.index.vectors import GpuSearch, IndexSettings, ScopeIndex

from .machine import machine_info, machine_slug

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 384


def make_vectors(n: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), n)]
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * (0.6 / np.sqrt(DIM))
    out = picks + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def make_queries(stored: np.ndarray, q: int, rng: np.random.Generator) -> np.ndarray:
    base = stored[rng.integers(0, len(stored), q)]
    noisy = base + rng.standard_normal(base.shape).astype(np.float32) * (0.25 / np.sqrt(DIM))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def timed_search(index: ScopeIndex, queries: np.ndarray, k: int) -> tuple[list[list[str]], list[float]]:
    results, times = [], []
    for query in queries:
        t = time.perf_counter()
        found = index.search(query, k)
        times.append((time.perf_counter() - t) * 1e3)
        results.append([entry_id for entry_id, _ in found])
    return results, times


def summary(times: list[float]) -> dict[str, float]:
    arr = np.array(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean()), "qps_one_thread": float(1e3 / arr.mean())}


def recall(found: list[list[str]], truth: list[list[str]], k: int) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def fill(index: ScopeIndex, vectors: np.ndarray) -> float:
    started = time.perf_counter()
    for i, vector in enumerate(vectors):
        index.add(f"e{i}", vector)
    return time.perf_counter() - started


def run_size(
    n: int, centres: np.ndarray, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    vectors = make_vectors(n, centres, rng)
    queries = make_queries(vectors, args.queries, rng)
    out: dict[str, Any] = {"entries": n, "queries": len(queries)}
    never = IndexSettings(hnsw_min_entries=10**12)
    flat = ScopeIndex(DIM, never)
    out["flat_fill_s"] = fill(flat, vectors)
    truth, times = timed_search(flat, queries, 4)
    out["cpu_flat"] = summary(times)
    print(f"  {n:>9,} flat  p50 {out['cpu_flat']['p50_ms']:.3f} ms", file=sys.stderr)
    if n <= args.max_hnsw:
        hnsw = ScopeIndex(DIM, IndexSettings(hnsw_min_entries=1))
        t = time.perf_counter()
        hnsw.load([f"e{i}" for i in range(n)], vectors)  # the same graph, built at once
        out["hnsw_build_s"] = time.perf_counter() - t
        found, times = timed_search(hnsw, queries, 4)
        out["cpu_hnsw"] = {**summary(times), "recall_at_1": recall(found, truth, 1),
                           "recall_at_4": recall(found, truth, 4),
                           "M": IndexSettings().hnsw_m, "ef_search": IndexSettings().hnsw_ef_search}
        print(f"  {n:>9,} hnsw  p50 {out['cpu_hnsw']['p50_ms']:.3f} ms  recall@1 "
              f"{out['cpu_hnsw']['recall_at_1']:.3f}", file=sys.stderr)
    if GpuSearch.available():
        gpu = ScopeIndex(DIM, IndexSettings(hnsw_min_entries=10**12, gpu_min_entries=1),
                         GpuSearch())
        gpu.load([f"e{i}" for i in range(n)], vectors)
        timed_search(gpu, queries[:10], 4)  # upload and warm up
        found, times = timed_search(gpu, queries, 4)
        out["gpu_flat"] = {**summary(times), "recall_at_1": recall(found, truth, 1),
                           "recall_at_4": recall(found, truth, 4)}
        print(f"  {n:>9,} gpu   p50 {out['gpu_flat']['p50_ms']:.3f} ms", file=sys.stderr)
    out["bytes_per_entry_flat"] = DIM * 4
    return out


def real_centres(data_dir: Path | None, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if data_dir is not None:
        try:
            import asyncio
            import gzip

            from semcache.embeddings.service import EmbeddingService
            from semcache.embeddings.settings import EmbeddingSettings

            pairs = Path(__file__).resolve().parents[2] / "shared/data/qqp_dev_pairs.jsonl.gz"
            with gzip.open(pairs, "rt") as fh:
                texts = [json.loads(line)["a"] for line, _ in zip(fh, range(2000), strict=False)]

            async def embed() -> np.ndarray:
                svc = await EmbeddingService.open(EmbeddingSettings(device="cpu"), data_dir)
                try:
                    return np.concatenate([await svc.embed_many(texts[i:i + 500])
                                           for i in range(0, len(texts), 500)])
                finally:
                    await svc.close()

            return asyncio.run(embed()), "embeddings of 2,000 Quora questions"
        except Exception as e:  # fall back to random centres, and say so in the results
            print(f"  no real centres ({e}); using random ones", file=sys.stderr)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True), "random unit vectors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--max-hnsw", type=int, default=1_000_000,
                        help="largest size for which the HNSW graph is built")
    parser.add_argument("--data-dir", type=Path, help="data dir with the exported encoder")
    parser.add_argument("--centres", type=Path,
                        help=".npy of cluster centres (written by --save-centres), instead of --data-dir")
    parser.add_argument("--save-centres", type=Path, help="write the centres used to this .npy")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    if args.centres is not None:
        centres, centre_kind = np.load(args.centres), f"loaded from {args.centres.name}"
    else:
        centres, centre_kind = real_centres(args.data_dir, rng)
    if args.save_centres is not None:
        np.save(args.save_centres, centres)
    machine = machine_info(("numpy", "faiss-cpu", "torch"))
    results = {"benchmark": "index", "machine": machine,
               "centres": centre_kind, "dim": DIM, "sizes": []}
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"scope of {n:,} entries", file=sys.stderr)
        results["sizes"].append(run_size(n, centres, args, rng))
    out = args.out or RESULTS / f"index_{machine_slug(machine)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
