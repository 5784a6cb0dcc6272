"""Embedding benchmark: encoder throughput and latency per batch size and variant, and
micro-batched throughput through EmbeddingService under 1, 8, 32, 128 concurrent callers.

    python -m semcache.loadtest.bench_embeddings [--device cpu|cuda] [--variants int8,fp32]

Tokenisation is always included (a text goes in, a unit vector comes out). Sentences are
real Quora questions. Writes loadtest/results/embeddings_<machine>.json and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embeddings.encoder import PAD_RULE, OnnxEncoder, pick_device_variant
from semcache.embeddings.export import ensure_exported, model_dir, resolve_source
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings

from .machine import machine_info, machine_slug

LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "tokenizers", "numpy")
RESULTS = Path(__file__).resolve().parent / "results"
DATA_CANDIDATES = ("../shared/data/qqp_dev_pairs.jsonl.gz",
                   "/work/shared/data/qqp_dev_pairs.jsonl.gz",
                   ".benchdata/qqp_dev_pairs.jsonl.gz")


def load_sentences(path: str | None, limit: int) -> list[str]:
    candidates = [path] if path else list(DATA_CANDIDATES)
    found = next((Path(p) for p in candidates if p and Path(p).is_file()), None)
    if found is None:
        raise SystemExit(f"no sentences file among {candidates}")
    seen: dict[str, None] = {}
    with gzip.open(found, "rt", encoding="utf-8") as fh:
        for line in fh:
            pair = json.loads(line)
            seen.setdefault(pair["a"], None)
            seen.setdefault(pair["b"], None)
            if len(seen) >= limit:
                break
    return list(seen)


def slug(info: dict[str, Any], device: str) -> str:
    """The GPU's name for a CUDA run, else `cpu-<n>core` (a CPU run on a GPU host too)."""
    return machine_slug(info) if device == "cuda" else machine_slug({**info, "gpu": None})


def bench_encoder(enc: OnnxEncoder, sentences: list[str], batch: int,
                  seconds: float) -> dict[str, Any]:
    """Sequential batches: latency of one batch (tokenise + run + normalise)."""
    def one(i: int) -> None:
        start = (i * batch) % (len(sentences) - batch)
        enc.post(enc.core(enc.pre(sentences[start:start + batch])))

    for i in range(3):
        one(i)
    lat: list[float] = []
    t_end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end or len(lat) < 5:
        t0 = time.perf_counter()
        one(i)
        lat.append(time.perf_counter() - t0)
        i += 1
    return _summary(lat, batch)


def bench_pipelined(enc: OnnxEncoder, sentences: list[str], batch: int,
                    seconds: float, workers: int = 2) -> dict[str, Any]:
    """Large-batch throughput with tokenisation of the next batches overlapping the run."""
    pool = ThreadPoolExecutor(workers)
    n_batches = max(1, (len(sentences) - 1) // batch)

    def texts(i: int) -> list[str]:
        start = (i % n_batches) * batch
        return sentences[start:start + batch]

    for i in range(2):
        enc.post(enc.core(enc.pre(texts(i))))
    pending = [pool.submit(enc.pre, texts(i)) for i in range(workers)]
    done = 0
    i = workers
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or done < 3 * batch:
        tok = pending.pop(0).result()
        pending.append(pool.submit(enc.pre, texts(i)))
        i += 1
        enc.post(enc.core(tok))
        done += tok.size
    wall = time.perf_counter() - t0
    pool.shutdown(wait=True)
    # Where one batch's time goes when nothing overlaps: tokenising vs the model run.
    t1 = time.perf_counter()
    tok = enc.pre(texts(0))
    t2 = time.perf_counter()
    enc.post(enc.core(tok))
    t3 = time.perf_counter()
    real = sum(int(mask.sum()) for _, mask in tok.inputs[1])
    padded = sum(mask.size for _, mask in tok.inputs[1])
    return {"batch": batch, "sentences_per_s": done / wall, "seconds": wall, "texts": done,
            "pre_ms": 1000 * (t2 - t1), "core_ms": 1000 * (t3 - t2),
            "model_runs": len(tok.inputs[1]), "tokens": real, "padded_tokens": padded}


def check_accuracy(enc: OnnxEncoder, ref: OnnxEncoder, sentences: list[str]) -> dict[str, float]:
    """Cosine against the fp32 CPU graph, and alone-vs-batched invariance, on this device."""
    texts = sentences[:512]
    ours = np.concatenate([enc.post(enc.core(enc.pre(texts[i:i + 128])))
                           for i in range(0, 512, 128)])
    base = ref.post(ref.core(ref.pre(texts)))
    cos = (ours * base).sum(axis=1)
    alone = np.concatenate([enc.post(enc.core(enc.pre([t]))) for t in texts[:32]])
    inv = (alone * ours[:32]).sum(axis=1)
    return {"cos_vs_fp32_cpu_mean": float(cos.mean()), "cos_vs_fp32_cpu_min": float(cos.min()),
            "alone_vs_batched_min": float(inv.min())}


def _summary(lat: list[float], batch: int) -> dict[str, Any]:
    lat_sorted = sorted(lat)
    return {"batch": batch, "runs": len(lat),
            "latency_ms_p50": 1000 * statistics.median(lat),
            "latency_ms_mean": 1000 * statistics.fmean(lat),
            "latency_ms_p99": 1000 * lat_sorted[min(len(lat) - 1, int(0.99 * len(lat)))],
            "sentences_per_s": batch * len(lat) / sum(lat)}


async def bench_service(settings: EmbeddingSettings, data_dir: Path, sentences: list[str],
                        concurrency: int, seconds: float) -> dict[str, Any]:
    svc = await EmbeddingService.open(settings, data_dir)
    try:
        await svc.embed_many(sentences[:64])  # warm-up (LRU is off: every text is encoded)
        base = (svc.stats.batches, svc.stats.batch_size_sum)
        lat: list[float] = []
        t_end = time.perf_counter() + seconds

        async def caller(k: int) -> None:
            i = k
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                await svc.embed(sentences[i % len(sentences)])
                lat.append(time.perf_counter() - t0)
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*[caller(k) for k in range(concurrency)])
        wall = time.perf_counter() - t0
        batches = svc.stats.batches - base[0]
        lat.sort()
        return {"concurrency": concurrency, "sentences_per_s": len(lat) / wall,
                "latency_ms_p50": 1000 * lat[len(lat) // 2],
                "latency_ms_p99": 1000 * lat[int(0.99 * (len(lat) - 1))],
                "mean_batch": (svc.stats.batch_size_sum - base[1]) / max(batches, 1),
                "texts": len(lat), "describe": svc.describe()}
    finally:
        await svc.close()


def plot(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, rows in result["encoder"].items():
        ax1.plot([r["batch"] for r in rows], [r["sentences_per_s"] for r in rows], "o-",
                 label=variant)
    ax1.set(xscale="log", yscale="log", xlabel="batch size", ylabel="sentences/s",
            title=f"encoder ({result['device']}, tokenisation included)")
    ax1.legend()
    for variant, rows in result["service"].items():
        ax2.plot([r["concurrency"] for r in rows], [r["sentences_per_s"] for r in rows], "o-",
                 label=variant)
    ax2.set(xscale="log", xlabel="concurrent callers", ylabel="sentences/s",
            title="EmbeddingService (micro-batched)")
    ax2.legend()
    fig.suptitle(result["machine"]["gpu"] or result["machine"]["cpu_model"])
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--variants", default="", help="default: int8,fp32 (CPU) fp16,fp32 (CUDA)")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    ap.add_argument("--model", default="packaged", help="packaged or a model folder")
    ap.add_argument("--sentences", default=None, help="qqp_dev_pairs.jsonl.gz")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--large-batches", default="", help="pipelined runs, e.g. 1024,4096")
    ap.add_argument("--tokenize-workers", type=int, default=3,
                    help="threads tokenising the next large batches while the model runs")
    ap.add_argument("--pad-rules", default="",
                    help="pipelined runs per chunking rule too, e.g. 4:16384,1.25:8192 "
                    "(slack:floor, see encoder.PAD_RULE); default: the encoder's own")
    ap.add_argument("--chunk-rows", default="", help="pipelined runs per rows per run, e.g. 1024,2048")
    ap.add_argument("--switch-intervals-ms", default="",
                    help="pipelined runs per GIL switch interval too, e.g. 5,0.5 "
                    "(sys.setswitchinterval; default: the interpreter's, 5 ms)")
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--service-max-batch", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    device, _ = pick_device_variant(args.device, "auto")
    variants = [v for v in args.variants.split(",") if v] or (
        ["fp16", "fp32"] if device == "cuda" else ["int8", "fp32"])
    sentences = load_sentences(args.sentences, 40000)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="semcache-bench-"))
    print(f"exporting/loading {variants} into {data_dir}", flush=True)
    ensure_exported(data_dir, args.model, variants)
    mdir = model_dir(data_dir, resolve_source(args.model)[0])
    info = machine_info(LIBRARIES)
    result: dict[str, Any] = {"machine": info, "device": device, "variants": variants,
                              "sentences": len(sentences), "encoder": {}, "pipelined": {},
                              "service": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    ensure_exported(data_dir, args.model, ("fp32",))
    ref = OnnxEncoder(mdir, device="cpu", variant="fp32")
    result["accuracy"] = {}
    for variant in variants:
        # As the service builds it (EmbeddingSettings.cuda_graphs): on CUDA, single texts
        # replay CUDA graphs.
        enc = OnnxEncoder(mdir, device=device, variant=variant,
                          cuda_graphs=EmbeddingSettings().cuda_graphs)
        result["accuracy"][variant] = check_accuracy(enc, ref, sentences)
        print(variant, "accuracy", json.dumps(result["accuracy"][variant]), flush=True)
        rows = []
        for b in (int(x) for x in args.batches.split(",")):
            rows.append(bench_encoder(enc, sentences, b, args.seconds))
            print(variant, json.dumps(rows[-1]), flush=True)
        result["encoder"][variant] = rows
        large = [int(x) for x in args.large_batches.split(",") if x]
        result["pipelined"][variant] = []
        rules = [tuple(float(v) for v in r.split(":")) for r in args.pad_rules.split(",") if r]
        rows_list = [int(x) for x in args.chunk_rows.split(",") if x]
        default_rule, default_rows = enc.pad_rule, enc.chunk_rows
        default_switch = sys.getswitchinterval()
        switches = [float(x) / 1000 for x in args.switch_intervals_ms.split(",") if x]
        for b, rule, chunk_rows, switch in itertools.product(
                large, rules or [default_rule], rows_list or [default_rows],
                switches or [default_switch]):
            enc.pad_rule, enc.chunk_rows = rule, chunk_rows
            sys.setswitchinterval(switch)
            row = bench_pipelined(enc, sentences, b, args.seconds, workers=args.tokenize_workers)
            row |= {"pad_rule": list(rule), "chunk_rows": chunk_rows,
                    "switch_interval_ms": 1000 * switch,
                    "is_default": (tuple(rule), chunk_rows, switch)
                    == (tuple(default_rule), default_rows, default_switch),
                    "tokenize_workers": args.tokenize_workers,
                    "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "")}
            result["pipelined"][variant].append(row)
            print(variant, "pipelined", json.dumps(row), flush=True)
        enc.pad_rule, enc.chunk_rows = default_rule, default_rows
        sys.setswitchinterval(default_switch)
        enc.close()
        max_batch = args.service_max_batch or (256 if device == "cuda" else 64)
        settings = EmbeddingSettings(model=args.model, device=device, variant=variant,
                                     lru_size=0,
                                     max_batch=max_batch, export_variants=tuple(variants))
        srows = []
        # With --pad-rules, the service is measured under each rule as well (the encoder
        # reads encoder.PAD_RULE when it is built), so small batches show what a rule costs.
        kind = "cuda" if device == "cuda" else "cpu"
        for rule, c in itertools.product(rules or [PAD_RULE[kind]],
                                         (int(x) for x in args.concurrency.split(","))):
            saved, PAD_RULE[kind] = PAD_RULE[kind], rule
            try:
                row = asyncio.run(bench_service(settings, data_dir, sentences, c, args.seconds))
            finally:
                PAD_RULE[kind] = saved
            srows.append(row | {"pad_rule": list(rule), "is_default": tuple(rule) == tuple(saved)})
            print(variant, "service", json.dumps({k: v for k, v in srows[-1].items()
                                                  if k != "describe"}), flush=True)
        result["service"][variant] = srows
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"embeddings_{slug(info, device)}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / f"{stem}.png")
    print(f"wrote {args.out / stem}.json and .png", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
