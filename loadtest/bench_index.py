"""Vector index benchmark: search latency and recall in ONE scope of 10k, 100k and 1M entries.

    python -m semcache.loadtest.bench_index [--sizes 10000,100000,1000000] [--queries 200]

Variants, same run, same vectors: exact flat search on the CPU (numpy gemv, what small scopes
use), FAISS HNSW on the CPU (what large scopes use) with recall@1 and recall@4 against flat,
and on a CUDA machine the GPU flat search (torch, fp16). Vectors are synthetic but shaped
like real ones: unit vectors clustered around the embeddings of real Quora questions (when
the encoder is exported in --data-dir) or around random centres, and queries are noisy
copies of stored vectors (a paraphrase looks like that to the index).

Writes loadtest/results/index_<machine>.json.

    python -m semcache.loadtest.bench_index --gpu [--sizes 1000000,10000000] [--out-dir $OUT]

GPU mode (loadtest/gpu_index.sh runs it on the lent GPU machine): the backends of
index/gpu.py on one scope of each size, through their own code (`upload`/`search` for flat
indexes, `build_ivf` for IVF): the torch fp16 matrix product (the fallback), FAISS
GpuIndexFlatIP with fp32 and fp16 storage, and FAISS GPU IVF indexes (fp16, int8 and fp32
lists) with nprobe calibrated to the recall target, plus a sweep of nprobe. Vectors are
clustered unit vectors generated on the GPU (torch), queries noisy copies of stored ones;
recall@1 is against exact fp32 search. Per variant: build time, GPU memory it holds
(torch.cuda.mem_get_info before and after), search p50/p99 for one query (as the proxy
searches: a host vector in, host results out) and for batches of 64. A variant that fails
(out of memory, say) records its error and the run goes on; --budget-s stops starting new
variants. Writes index_gpu.json to --out-dir (or $OUT) and
loadtest/results/index_gpu_<machine>.json. Without a GPU the same code runs on the CPU
(FAISS CPU indexes, torch on the CPU): a smoke test at small sizes.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback
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
    parser.add_argument("--gpu", action="store_true", help="the GPU backends (see above)")
    parser.add_argument("--out-dir", type=Path, help="GPU mode: also write index_gpu.json here "
                        "(default: $OUT when set)")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="GPU mode: start no new variant after this many seconds")
    parser.add_argument("--variants", default=",".join(GPU_VARIANTS),
                        help="GPU mode: comma-separated subset of " + ",".join(GPU_VARIANTS))
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", default="dense,uniform",
                        help="GPU mode: distributions of the vectors, of " + ",".join(DATA)
                        + "; after the first, IVF variants only")
    parser.add_argument("--recall", type=float, default=IndexSettings().gpu_ivf_recall,
                        help="GPU mode: the IVF indexes' recall@1 target")
    parser.add_argument("--max-hnsw", type=int, default=1_000_000,
                        help="largest size for which the HNSW graph is built")
    parser.add_argument("--data-dir", type=Path, help="data dir with the exported encoder")
    parser.add_argument("--centres", type=Path,
                        help=".npy of cluster centres (written by --save-centres), instead of --data-dir")
    parser.add_argument("--save-centres", type=Path, help="write the centres used to this .npy")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.gpu:
        return gpu_main(args)
    args.sizes = args.sizes or "10000,100000,1000000"
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


# GPU mode ----------------------------------------------------------------------------------

GPU_VARIANTS = ("torch_fp16", "faiss_flat_fp32", "faiss_flat_fp16", "faiss_ivf_fp16",
                "faiss_ivf_int8", "faiss_ivf_fp32")
RECALL_QUERIES = 1000
TIMED_QUERIES = 300
BATCH = 64
TIMED_BATCHES = 30
DATA = {"dense": (50, 0.3), "sparse": (5000, 0.6), "uniform": (1, 0.0)}
"""Stored vectors per cluster and the noise around its centre. dense: many near neighbours
(cosine ~0.91 within a cluster, ~0.88 from a query to its source's neighbours against ~0.97
to its source), the harder case for compressed vectors; sparse: bench_index's CPU data;
uniform: random unit vectors, no structure for IVF's lists to follow (its worst case)."""
IVF_ONLY_AFTER_FIRST = True
"""Distributions after the first run the IVF variants only: flat search is exact whatever
the data, and its latency does not depend on it."""
SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class GpuRun:
    """One scope size: the vectors (on the device, then on the host), queries and truth."""

    def __init__(self, n: int, torch: Any, device: str, seed: int, data: str) -> None:
        self.n, self.torch, self.device = n, torch, device
        per_centre, spread = DATA[data]
        gen = torch.Generator(device=device).manual_seed(seed)
        if per_centre > 1:
            centres = torch.randn(n // per_centre, DIM, device=device, generator=gen)
            centres /= centres.norm(dim=1, keepdim=True)
        x = torch.empty(n, DIM, device=device)
        step = 1 << 20
        for first in range(0, n, step):  # in pieces: no second 10M x 384 temporary
            last = min(n, first + step)
            part = torch.randn(last - first, DIM, device=device, generator=gen)
            if per_centre > 1:
                picks = torch.randint(0, len(centres), (last - first,), device=device,
                                      generator=gen)
                part = centres[picks] + part * (spread / math.sqrt(DIM))
            x[first:last] = part / part.norm(dim=1, keepdim=True)
        sources = torch.randint(0, n, (RECALL_QUERIES,), device=device, generator=gen)
        q = x[sources] + torch.randn(RECALL_QUERIES, DIM, device=device, generator=gen) * (
            0.25 / math.sqrt(DIM))
        q /= q.norm(dim=1, keepdim=True)
        best = torch.full((RECALL_QUERIES,), -math.inf, device=device)
        truth = torch.zeros(RECALL_QUERIES, dtype=torch.int64, device=device)
        for first in range(0, n, step):  # exact fp32 top-1, a million rows at a time
            sims = q @ x[first : first + step].T
            val, idx = sims.max(dim=1)
            better = val > best
            best[better], truth[better] = val[better], idx[better] + first
        self.x = x
        self.queries = q.cpu().numpy()
        self.truth = truth.cpu().numpy()
        self.source_is_truth = float((truth == sources).float().mean())
        self.host: np.ndarray | None = None

    def to_host(self) -> np.ndarray:
        if self.host is None:
            self.host = self.x.cpu().numpy()
        return self.host

    def drop_device_copy(self) -> None:
        self.x = None
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


def gpu_free(torch: Any) -> int | None:
    if torch is None or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return int(torch.cuda.mem_get_info()[0])


def timings(fn: Any, calls: int) -> dict[str, float]:
    times = []
    for i in range(calls):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1e3)
    arr = np.array(times)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 4),
            "p99_ms": round(float(np.percentile(arr, 99)), 4),
            "mean_ms": round(float(arr.mean()), 4)}


def recall_at_1(labels: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean(labels[:, 0] == truth)), 4)


def measure_search(run: GpuRun, one: Any, batch: Any) -> dict[str, Any]:
    """`one(vector) -> rows`, `batch(queries) -> labels (len, k)`: latency and recall."""
    queries = run.queries
    for i in range(10):
        one(queries[i])
        batch(queries[:BATCH])
    out: dict[str, Any] = {
        "batch_1": timings(lambda i: one(queries[i % len(queries)]), TIMED_QUERIES),
        f"batch_{BATCH}": timings(
            lambda i: batch(queries[(i * BATCH) % (len(queries) - BATCH):][:BATCH]), TIMED_BATCHES)}
    out[f"batch_{BATCH}"]["per_query_us"] = round(out[f"batch_{BATCH}"]["p50_ms"] * 1e3 / BATCH, 2)
    labels = np.concatenate([batch(queries[i : i + BATCH]) for i in range(0, len(queries), BATCH)])
    out["recall_at_1"] = recall_at_1(labels, run.truth)
    return out


def torch_variant(run: GpuRun, args: argparse.Namespace) -> dict[str, Any]:
    from semcache.index.gpu import TorchSearch

    torch = run.torch
    search = TorchSearch(run.device)
    free0 = gpu_free(torch)
    t = time.perf_counter()
    matrix = run.x.to(search.dtype)  # what `upload` makes, here from the device copy
    gpu_free(torch)
    out: dict[str, Any] = {"build_s": round(time.perf_counter() - t, 3)}
    free1 = gpu_free(torch)
    out["gpu_bytes"] = None if free0 is None or free1 is None else free0 - free1

    def batch(queries: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(queries).to(run.device, dtype=search.dtype)
        return torch.topk((matrix @ q.T).float(), 4, dim=0).indices.T.cpu().numpy()

    out.update(measure_search(run, lambda v: search.search(matrix, v, 4), batch))
    return out


def faiss_flat_variant(run: GpuRun, args: argparse.Namespace, fp16: bool) -> dict[str, Any]:
    from semcache.index.gpu import FaissSearch, faiss_gpu_available

    settings = IndexSettings(gpu_flat_fp16=fp16)
    backend = FaissSearch(settings, gpu=faiss_gpu_available())
    host = run.to_host()
    free0 = gpu_free(run.torch)
    t = time.perf_counter()
    index = backend.upload(host)
    out: dict[str, Any] = {"build_s": round(time.perf_counter() - t, 3)}
    free1 = gpu_free(run.torch)
    out["gpu_bytes"] = None if free0 is None or free1 is None else free0 - free1

    def batch(queries: np.ndarray) -> np.ndarray:
        with backend.lock:
            return index.search(np.ascontiguousarray(queries), 4)[1]

    out.update(measure_search(run, lambda v: backend.search(index, v, 4), batch))
    return out


def faiss_ivf_variant(run: GpuRun, args: argparse.Namespace, storage: str) -> dict[str, Any]:
    from semcache.index.builder import INLINE
    from semcache.index.gpu import FaissSearch, faiss_gpu_available
    from semcache.index.rows import BLOCK_ROWS, Rows

    settings = IndexSettings(gpu_ivf_storage=storage, gpu_ivf_recall=args.recall)
    backend = FaissSearch(settings, gpu=faiss_gpu_available())
    host = run.to_host()
    rows = Rows(DIM)  # the scope's rows as views of the host copy (no second 15 GB)
    rows.blocks = [host[i : i + BLOCK_ROWS] for i in range(0, run.n, BLOCK_ROWS)]
    rows.count = run.n
    free0 = gpu_free(run.torch)
    t = time.perf_counter()
    ivf = backend.build_ivf(rows, INLINE)
    build_s = time.perf_counter() - t
    free1 = gpu_free(run.torch)
    out: dict[str, Any] = {
        "build_s": round(build_s, 3), "train_s": round(ivf.train_s, 3), "add_s": round(ivf.add_s, 3),
        "calibrate_s": round(build_s - ivf.train_s - ivf.add_s, 3),
        "gpu_bytes": None if free0 is None or free1 is None else free0 - free1,
        "nlist": ivf.nlist, "nprobe": ivf.nprobe, "recall_target": args.recall,
        "calibration_recall_at_1": ivf.recall_at_1}

    def batch(queries: np.ndarray) -> np.ndarray:
        return ivf.search(queries, 4)[1]

    def one(vector: np.ndarray) -> np.ndarray:
        return ivf.search(vector.reshape(1, -1), 4)[1]

    out.update(measure_search(run, one, batch))
    chosen = ivf.nprobe
    sweep = []
    for nprobe in SWEEP:
        if nprobe > ivf.nlist:
            break
        ivf.set_nprobe(nprobe)
        labels = np.concatenate([batch(run.queries[i : i + BATCH])
                                 for i in range(0, len(run.queries), BATCH)])
        sweep.append({"nprobe": nprobe, "recall_at_1": recall_at_1(labels, run.truth),
                      "batch_1_p50_ms": timings(lambda i: one(run.queries[i]), 50)["p50_ms"]})
    ivf.set_nprobe(chosen)
    out["nprobe_sweep"] = sweep
    return out


def run_variant(name: str, run: GpuRun, args: argparse.Namespace) -> dict[str, Any]:
    if name == "torch_fp16":
        return torch_variant(run, args)
    if name.startswith("faiss_flat_"):
        return faiss_flat_variant(run, args, fp16=name.endswith("fp16"))
    return faiss_ivf_variant(run, args, storage=name.rsplit("_", 1)[1])


def gpu_main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    import torch

    from semcache.index.gpu import faiss_gpu_available

    device = "cuda" if torch.cuda.is_available() else "cpu"
    faiss_gpu = faiss_gpu_available()
    sizes = [int(s) for s in (args.sizes or "1000000,10000000").split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(GPU_VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}")
    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    machine = machine_info(("numpy", "faiss-gpu", "faiss-gpu-cu12", "faiss-cpu", "torch"))
    results: dict[str, Any] = {
        "benchmark": "index_gpu", "machine": machine, "device": device, "faiss": faiss_version,
        "faiss_gpu": faiss_gpu, "torch_cuda": torch.version.cuda, "dim": DIM,
        "data": {name: f"{per:,} vectors a centre, noise {spread}" if per > 1 else
                 "random unit vectors" for name, (per, spread) in DATA.items()},
        "queries": "noisy copies (noise 0.25) of stored vectors; recall@1 against exact fp32",
        "recall_target": args.recall, "target": "10M vectors, p50 <= 1 ms at recall@1 >= 0.95",
        "sizes": []}
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        results["gpu_memory"] = {"total_bytes": int(total), "free_at_start_bytes": int(free)}
    if faiss_gpu:
        from semcache.index.gpu import shared_resources

        before = gpu_free(torch)
        shared_resources()
        after = gpu_free(torch)
        results["gpu_memory"]["faiss_resources_bytes"] = (
            None if before is None or after is None else before - after)
    out_dirs = [d for d in (args.out_dir or (Path(os.environ["OUT"]) if os.environ.get("OUT")
                                              else None),) if d is not None]

    def save() -> None:
        text = json.dumps(results, indent=2)
        for target in [*(d / "index_gpu.json" for d in out_dirs),
                       RESULTS / f"index_gpu_{machine_slug(machine)}.json"]:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            except OSError as e:
                print(f"  could not write {target}: {e}", file=sys.stderr)

    datas = [d for d in args.data.split(",") if d]
    if set(datas) - set(DATA):
        raise SystemExit(f"unknown --data {sorted(set(datas) - set(DATA))}")
    for seed, (data, n) in enumerate((d, n) for d in datas for n in sizes):
        entry: dict[str, Any] = {"entries": n, "data": data, "variants": {}}
        results["sizes"].append(entry)
        print(f"[{time.monotonic() - started:6.1f} s] scope of {n:,} vectors ({data}): generating",
              file=sys.stderr, flush=True)
        these = variants if data == datas[0] or not IVF_ONLY_AFTER_FIRST else [
            v for v in variants if "_ivf_" in v]
        try:
            t = time.perf_counter()
            run = GpuRun(n, torch, device, seed, data)
            entry["generate_s"] = round(time.perf_counter() - t, 3)
            entry["query_source_is_exact_top1"] = run.source_is_truth
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            print(f"  generation failed: {entry['error']}", file=sys.stderr)
            save()
            continue
        for name in these:
            if time.monotonic() - started > args.budget_s:
                entry["variants"][name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
                continue
            if name != "torch_fp16" and run.x is not None:
                run.to_host()
                run.drop_device_copy()  # the FAISS variants read the host copy
            print(f"[{time.monotonic() - started:6.1f} s]   {name}", file=sys.stderr, flush=True)
            try:
                res = run_variant(name, run, args)
            except Exception as e:  # record it and go on with the next variant
                res = {"error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc(limit=4)}
                print(f"    failed: {res['error']}", file=sys.stderr)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            entry["variants"][name] = res
            if "batch_1" in res:
                extra = f"  nprobe {res['nprobe']}" if "nprobe" in res else ""
                print(f"    build {res['build_s']:.2f} s  batch-1 p50 {res['batch_1']['p50_ms']:.3f} ms"
                      f"  p99 {res['batch_1']['p99_ms']:.3f} ms  batch-{BATCH} p50 "
                      f"{res[f'batch_{BATCH}']['p50_ms']:.3f} ms  recall@1 {res['recall_at_1']:.3f}"
                      f"{extra}  gpu {(res.get('gpu_bytes') or 0) / 2**30:.2f} GiB",
                      file=sys.stderr, flush=True)
            save()
        del run
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["verdict"] = gpu_verdict(results)
    save()
    print(json.dumps(results["verdict"], indent=2), file=sys.stderr)
    print(f"wrote index_gpu.json ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


def gpu_verdict(results: dict[str, Any]) -> dict[str, Any]:
    """The fastest variant of the largest size at recall@1 >= 0.95, against the target."""
    best: dict[str, Any] = {}
    for entry in results["sizes"]:
        for name, res in entry.get("variants", {}).items():
            if res.get("recall_at_1", 0) >= 0.95 and "batch_1" in res:
                key = f"{entry['entries']}_{entry.get('data')}"
                if key not in best or res["batch_1"]["p50_ms"] < best[key]["p50_ms"]:
                    best[key] = {"variant": name, "p50_ms": res["batch_1"]["p50_ms"],
                                 "recall_at_1": res["recall_at_1"]}
    tens = [v for k, v in best.items() if k.startswith(f"{10_000_000}_")]
    return {"fastest_at_recall_0.95": best,
            "target_met": None if not tens else all(v["p50_ms"] <= 1.0 for v in tens)}


if __name__ == "__main__":
    sys.exit(main())
