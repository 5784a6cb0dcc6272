"""Where the bundled backend's time to first token goes (issue 20), phase by phase.

`python -m semcache.loadtest.gpu_ttft_probe [--device cuda] [--data-dir .data] [--out DIR]`

Two parts, both with the ~1,000-token shared system prompt of bench_backend:

- over HTTP, as bench_backend measures it: a backend child with the defaults (prefix cache
  on) and one with `--prefix-cache-tokens 0`; per server and concurrency (1, repeated, and
  8), one request puts the system prompt in the cache, then the wave arrives. Each wave
  reports the client's time to first token and the server's own breakdown of it
  (/healthz `ttft_breakdown`: the mean of each phase over exactly that wave's requests,
  from the sums before and after it), with the prefill done and saved;
- in this process, the model steps alone on the same device, timed with the device
  synchronised: the prefill of the uncached tail (the cached case) and of the whole prompt,
  split into the host's launch time and the device's remaining time, and one CUDA-graph
  decoding step.

Prints the report as JSON and writes it to `<out>/ttft_probe_<machine>.json` and, when
$OUT is set, to `$OUT/ttft_probe.json`. Needs no network and no Redis; about two minutes on
one GPU (two backend starts with their CUDA graphs, then the model steps). On the GPU
machine, with the same set-up as loadtest/gpu_backend.sh (the package copied to /tmp/sc
when it is not installed):

    python3 -m semcache.loadtest.gpu_ttft_probe --device cuda --data-dir /tmp/data --out "$OUT"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from semcache.loadtest import backend_prompts as prompts
from semcache.loadtest.bench_backend import RESULTS, Backend
from semcache.loadtest.machine import machine_info, machine_slug

SERVERS = {"cached": [], "uncached": ["--prefix-cache-tokens", "0"]}
QUESTION = "How do I return an item I bought last week? (#{})"


def _wave_phases(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    b, a = before["ttft_breakdown"], after["ttft_breakdown"]
    n = a["requests"] - b["requests"]
    mean = {k: round((a["sum_ms"][k] - b["sum_ms"].get(k, 0.0)) / n, 3)
            for k in a["sum_ms"]} if n else {}
    return {"requests": n, "mean_ms": mean,
            "prefill_tokens": after["prefill_tokens"] - before["prefill_tokens"],
            "prefix_cached_tokens": after["prefix_cached_tokens"]
            - before["prefix_cached_tokens"],
            # Collections during the wave, per generation, and the time they took.
            "gc_collections": [x - y for x, y in zip(after["gc"]["collections"],
                                                     before["gc"]["collections"], strict=True)],
            "gc_ms": [round(x - y, 3) for x, y in zip(after["gc"]["total_ms"],
                                                      before["gc"]["total_ms"], strict=True)]}


async def _wave(backend: Backend, system: str, level: int, first: int) -> dict[str, Any]:
    warm = [{"role": "system", "content": system}, {"role": "user", "content": "Hello!"}]
    await backend.chat(warm, max_tokens=2, temperature=0)
    before = await backend.stats()
    runs = await asyncio.gather(*(
        backend.chat([{"role": "system", "content": system},
                      {"role": "user", "content": QUESTION.format(first + j)}],
                     max_tokens=8, temperature=0) for j in range(level)))
    after = await backend.stats()
    ttfts = [r["ttft_s"] * 1e3 for r in runs]
    return {"client_ttft_ms": round(statistics.fmean(ttfts), 3),
            "server": _wave_phases(before, after)}


async def http_part(args: argparse.Namespace, system: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, extra in SERVERS.items():
        async with Backend(args, extra) as backend:
            await backend.chat([{"role": "user", "content": "Hi"}], max_tokens=4,
                               temperature=0)
            rows = []
            for level in args.levels:
                waves = [await _wave(backend, system, level, 100 * level + r)
                         for r in range(args.repeats if level == 1 else 1)]
                row = {"concurrency": level, "waves": len(waves),
                       "client_ttft_ms": round(statistics.fmean(w["client_ttft_ms"]
                                                                for w in waves), 3),
                       "server": waves[-1]["server"] if len(waves) == 1 else _merge(waves)}
                print(f"  {name} c={level}: {json.dumps(row)}", flush=True)
                rows.append(row)
            out[name] = rows
    return out


def _merge(waves: list[dict[str, Any]]) -> dict[str, Any]:
    servers = [w["server"] for w in waves]
    keys = {k for s in servers for k in s["mean_ms"]}
    return {"requests": sum(s["requests"] for s in servers),
            "gc_collections": [sum(c) for c in zip(*(s["gc_collections"] for s in servers),
                                                   strict=True)],
            "gc_ms": [round(sum(c), 3) for c in zip(*(s["gc_ms"] for s in servers),
                                                    strict=True)],
            "mean_ms": {k: round(statistics.fmean(s["mean_ms"][k] for s in servers
                                                  if k in s["mean_ms"]), 3)
                        for k in sorted(keys)},
            "prefill_tokens": sum(s["prefill_tokens"] for s in servers),
            "prefix_cached_tokens": sum(s["prefix_cached_tokens"] for s in servers)}


def _timed(fn: Any, sync: Any, repeats: int = 7, idle_s: float = 0.0) -> dict[str, float]:
    """Median host time until fn returns, and until the device is done; after idle_s of
    doing nothing before each run (a GPU left idle lowers its clocks, a CPU thread sleeps)."""
    fn()
    sync()
    launch, total = [], []
    for _ in range(repeats):
        time.sleep(idle_s)
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        launch.append((t1 - t0) * 1e3)
        total.append((t2 - t0) * 1e3)
    return {"launch_ms": round(statistics.median(launch), 3),
            "total_ms": round(statistics.median(total), 3)}


def _load_baseline(path: str) -> Any:
    """An earlier backend/runner.py (say, `git show REV:backend/runner.py > FILE`), loaded as
    a module of semcache.backend so that its relative imports resolve."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("semcache.backend._baseline_runner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.ModelRunner


def _steps(runner: Any, ids: list[int], cached: int, sync: Any) -> dict[str, Any]:
    """The model steps of one runner: prefills (graphed where the runner has prefill graphs,
    and eagerly), the prefix copy, decoding at batch 1 and at the runner's full batch."""
    from semcache.backend.prefix_cache import BLOCK_TOKENS
    from semcache.backend.sampling import sample

    def eager(fn: Any) -> Any:
        def run() -> Any:
            graphs, runner.use_graphs = runner.use_graphs, False
            try:
                return fn()
            finally:
                runner.use_graphs = graphs
        return run

    t0 = time.perf_counter()
    runner.warmup()
    warmup_s = time.perf_counter() - t0
    runner.prefill(0, [ids])
    logits = runner.decode([ids[-1]], [len(ids)])
    after_prefix = lambda: runner.prefill(0, [ids[cached:]], [cached])  # noqa: E731
    one_token = lambda: runner.prefill(0, [ids[-1:]], [len(ids) - 1])  # noqa: E731
    full = runner.slots
    return {
        "graph_warmup_s": round(warmup_s, 2),
        "graphs": len(getattr(runner, "_graphs", {})) + len(getattr(runner, "_prefill_graphs",
                                                                    {})),
        "prefill_whole_prompt": _timed(lambda: runner.prefill(0, [ids]), sync),
        "prefill_after_cached_prefix": _timed(after_prefix, sync),
        "prefill_after_cached_prefix_eager": _timed(eager(after_prefix), sync),
        "prefill_after_cached_prefix_after_1s_idle": _timed(after_prefix, sync, repeats=5,
                                                            idle_s=1.0),
        "prefill_one_token": _timed(one_token, sync),
        "prefill_one_token_eager": _timed(eager(one_token), sync),
        "load_prefix": _timed(lambda: runner.load_prefix(1, list(range(cached // BLOCK_TOKENS))),
                              sync),
        "decode_step": _timed(lambda: runner.decode([ids[-1]], [len(ids)]), sync),
        f"decode_step_batch_{full}": _timed(
            lambda: runner.decode([ids[-1]] * full, [len(ids)] * full), sync),
        "sample_greedy": _timed(lambda: sample(logits, [0.0], [1.0], [0.5]), sync),
    }


def model_part(args: argparse.Namespace, system: str) -> dict[str, Any]:
    import torch

    from semcache.backend.model import load_model
    from semcache.backend.prefix_cache import BLOCK_TOKENS
    from semcache.backend.runner import ModelRunner

    loaded = load_model(args.model, args.data_dir, args.device)
    def prompt(question: str) -> list[int]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return loaded.tokenizer.encode(loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False)

    ids, warm = prompt(QUESTION.format(0)), prompt("Hello!")
    # What the HTTP waves find cached: the full blocks this prompt shares with the warm one.
    shared = next((i for i, (a, b) in enumerate(zip(ids, warm, strict=False)) if a != b),
                  len(warm))
    cached = shared // BLOCK_TOKENS * BLOCK_TOKENS
    cuda = loaded.model.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def made(cls: Any) -> Any:
        return cls(loaded.model, slots=args.model_slots, max_seq_len=args.max_seq_len,
                   cuda_graphs=True, max_draft=6, prefix_blocks=len(ids) // BLOCK_TOKENS)

    out: dict[str, Any] = {
        "prompt_tokens": len(ids), "cached_tokens": cached, "device": str(loaded.model.device),
        "dtype": str(loaded.model.dtype), "cuda_graphs": cuda, "slots": args.model_slots}
    if args.baseline_runner:
        # The earlier runner first, on the model as loaded (this runner re-points the
        # model's projection weights at its fused matrices, the same values).
        baseline = made(_load_baseline(args.baseline_runner))
        out["baseline"] = {"runner": args.baseline_runner,
                           **_steps(baseline, ids, cached, sync)}
        del baseline
        if cuda:
            torch.cuda.empty_cache()
    out.update(_steps(made(ModelRunner), ids, cached, sync))
    if "baseline" in out:
        out["speedup_over_baseline"] = {
            k: round(out["baseline"][k]["total_ms"] / v["total_ms"], 2)
            for k, v in out.items() if isinstance(v, dict) and "total_ms" in v
            and k in out["baseline"]}
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--levels", default="1,8", help="concurrency of the waves")
    parser.add_argument("--repeats", type=int, default=5, help="waves at concurrency 1")
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--skip-model-steps", action="store_true")
    parser.add_argument("--model-slots", type=int, default=64,
                        help="slots of the runners timed in the model steps (the full batch)")
    parser.add_argument("--baseline-runner", default="",
                        help="an earlier backend/runner.py to time beside this one")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    args.max_batch = max(args.levels + [8])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from semcache.backend.model import ensure_packaged

    info = machine_info(("torch", "transformers"))
    gpu = info["gpu"] is not None and args.device != "cpu"
    folder = ensure_packaged(args.data_dir) if args.model == "packaged" else Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    system = prompts.system_prompt(lambda text: len(tokenizer.encode(text)))
    start = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "gpu_ttft_probe", "machine": info, "device": "cuda" if gpu else "cpu",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "system_prompt_tokens": len(tokenizer.encode(system)),
        "servers": {k: " ".join(v) or "defaults" for k, v in SERVERS.items()},
        "http": asyncio.run(http_part(args, system))}
    if not args.skip_model_steps:
        report["model_steps"] = model_part(args, system)
    report["duration_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = machine_slug(info if gpu else {**info, "gpu": None})
    (out / f"ttft_probe_{slug}.json").write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "ttft_probe.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
