"""What the judge adds to a lookup: the pair model's cost per candidate, student and teacher.

On the CPU (the proxy's default path) the shipped int8 ONNX files run through the
judge's own service (PairModelService: the batcher's threads, pair preparation included),
one candidate at a time as on the hit path, over prompts of the evaluation sets: the added
latency of a verified hit, and of a miss with a candidate (the same model run; a miss then
goes upstream). On a GPU the same architectures run in torch (bf16), at batch 1 and 64;
their weights are the base models' configurations with random values, since cost does not
depend on the values (say so wherever the figures are quoted).

    python -m semcache.loadtest.bench_judge --device cpu --data-dir .data
    python -m semcache.loadtest.bench_judge --device cuda --configs DIR   (GPU machine)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from semcache.loadtest.machine import machine_info

REPO = Path(__file__).resolve().parent.parent
SETS = ["short_prompts", "instructions", "long_prompts_2"]


def pairs() -> list[tuple[str, str, str]]:
    """(cached prompt, new prompt, set) of every pair of the sets."""
    out = []
    for name in SETS:
        for line in (REPO / "loadtest" / "data" / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            out.append((row["a"], row["b"], name))
    return out


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"n": len(times), "p50_ms": round(1000 * statistics.median(times), 2),
            "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 2),
            "mean_ms": round(1000 * statistics.fmean(times), 2)}


async def cpu_model(folder: Path, work: list[tuple[str, str, str]]) -> dict[str, Any]:
    from semcache.proxy.judge.model import PairModelService

    service = await PairModelService.open(folder, device="cpu")
    try:
        await service.score([(a, b) for a, b, _ in work[:4]])  # warm-up
        by_set: dict[str, list[float]] = {}
        for a, b, name in work:
            started = time.perf_counter()
            await service.score([(a, b)])
            by_set.setdefault(name, []).append(time.perf_counter() - started)
        return {"model": service.model.describe()["model"],
                "per_candidate": {k: summary(v) for k, v in by_set.items()},
                "all": summary([t for v in by_set.values() for t in v])}
    finally:
        await service.close()


def gpu_model(config_dir: Path, tokenizer_dir: Path, work: list[tuple[str, str, str]]) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(str(config_dir), num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config).to("cuda", torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out: dict[str, Any] = {"model": config.model_type, "weights": "random (cost only)"}
    for batch in (1, 64):
        times = []
        with torch.no_grad():
            for start in range(0, min(len(work), 64 * 20 if batch > 1 else 300), batch):
                chunk = work[start:start + batch]
                enc = tok([p[0] for p in chunk], [p[1] for p in chunk], truncation=True,
                          max_length=128, padding=True, return_tensors="pt").to("cuda")
                torch.cuda.synchronize()
                started = time.perf_counter()
                model(**enc)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - started) / len(chunk))
        out[f"batch_{batch}"] = summary(times[2:])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_judge", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--data-dir", type=Path, default=Path(".data"))
    p.add_argument("--configs", type=Path, help="GPU: folders minilm/ and mpnet/ (config + tokenizer)")
    p.add_argument("--out", type=Path, default=REPO / "loadtest" / "results")
    args = p.parse_args(argv)
    work = pairs()
    result: dict[str, Any] = {"benchmark": "judge", "machine": machine_info(), "pairs": len(work),
                              "sets": SETS, "models": {}}
    if args.device == "cpu":
        from semcache.proxy.judge.model import SHIPPED
        from semcache.proxy.judge.training.teacher import teacher_folder

        folders = {"student": SHIPPED, "teacher": teacher_folder(args.data_dir)}
        for name, folder in folders.items():
            if (folder / "model_int8.onnx").is_file():
                result["models"][name] = asyncio.run(cpu_model(folder, work))
        tag = "cpu-2core"
    else:
        for name in ("minilm", "mpnet"):
            result["models"][name] = gpu_model(args.configs / name, args.configs / name, work)
        tag = result["machine"].get("gpu", "gpu").lower().replace(" ", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"judge_cost_{tag}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["models"], indent=1))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
