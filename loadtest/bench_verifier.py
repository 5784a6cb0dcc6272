"""Pair-model cost: what the cross-encoder adds to a semantic hit that falls in its band.

    python -m semcache.loadtest.bench_verifier [--device cpu|cuda] [--seconds 5]

Measures, on real Quora question pairs, (1) the latency of scoring one pair alone (what a
hit pays at concurrency 1), and (2) pairs scored per second and per-lookup latency through
`PairModelService` (the proxy's micro-batcher) under 1, 16, 64 and 256 concurrent lookups.
On CUDA the model is the shipped int8 file dequantised at load (or a model_fp32.onnx next
to it). Writes loadtest/results/verifier_<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from semcache.proxy.judge.model import PairModel, PairModelService

from .loadgen import write_json
from .machine import machine_info, machine_slug

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "qqp_dev_pairs.jsonl.gz"


def load_pairs(path: Path, n: int) -> list[tuple[str, str]]:
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(n), fh, strict=False)]
    return [(r["a"], r["b"]) for r in rows]


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def alone(verifier: PairModel, pairs: list[tuple[str, str]], seconds: float) -> dict[str, Any]:
    for p in pairs[:5]:
        verifier.score([p])
    lat: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        verifier.score([pairs[i % len(pairs)]])
        lat.append(time.perf_counter() - t0)
        i += 1
    return {"runs": len(lat), "p50_ms": 1000 * statistics.median(lat), "p99_ms": ms(lat, 0.99)}


async def concurrent(service: PairModelService, pairs: list[tuple[str, str]], callers: int,
                     seconds: float, offset: int) -> dict[str, Any]:
    lat: list[float] = []
    end = time.perf_counter() + seconds
    batches0, sizes0 = service.stats.batches, service.stats.batch_size_sum

    async def caller(k: int) -> None:
        i = k
        while time.perf_counter() < end:
            a, b = pairs[(offset + i) % len(pairs)]
            t0 = time.perf_counter()
            await service.score([(a, b + f" ({offset + i})")])  # never an LRU hit
            lat.append(time.perf_counter() - t0)
            i += callers

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    wall = time.perf_counter() - t0
    batches = service.stats.batches - batches0
    return {"callers": callers, "pairs_per_s": len(lat) / wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": ms(lat, 0.99),
            "mean_batch": (service.stats.batch_size_sum - sizes0) / max(1, batches)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    pairs = load_pairs(args.pairs, 4000)
    verifier = PairModel.open(device=args.device)
    result: dict[str, Any] = {"provider": verifier.provider,
                              "alone": alone(verifier, pairs, args.seconds), "service": []}
    print("alone", json.dumps(result["alone"]), file=sys.stderr)
    service = PairModelService(verifier)
    try:
        for n, callers in enumerate(args.callers):
            row = await concurrent(service, pairs, callers, args.seconds, offset=n * 100_000)
            result["service"].append(row)
            print("service", json.dumps(row), file=sys.stderr)
    finally:
        service.close()
        await asyncio.sleep(0.1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--callers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64, 256])
    p.add_argument("--pairs", type=Path, default=PAIRS)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    args = p.parse_args(argv)
    machine = machine_info(("onnxruntime", "onnxruntime-gpu", "tokenizers", "numpy"))
    result = {"benchmark": "verifier", "machine": machine, "device": args.device,
              **asyncio.run(bench(args))}
    name = machine_slug(machine) if args.device == "cuda" else machine_slug({**machine, "gpu": None})
    out = args.out / f"verifier_{name}.json"
    write_json(out, result)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
