"""Benchmark of the bundled backend: continuous batching against one request at a time.

`python -m semcache.loadtest.bench_backend [--max-tokens N] [--levels 1,8,32,64]`

Starts `python -m semcache.backend` twice on free ports, the same model both times: once
with continuous batching (max_batch = the highest level) and once with max_batch = 1 (every
request served alone, in arrival order). Each level sends that many streamed chat requests
at once (greedy, ignore_eos so every answer has exactly max_tokens tokens) and records output
tokens/s over the wave and each request's time to first token. For reference it also times
transformers' own `generate` on one request. Writes loadtest/results/backend_<machine>.json
and a PNG beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from semcache.index.redis_server import free_port
from semcache.proxy.readiness import ChildExitedError, wait_for_200

from .machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
TOPICS = ["the sea", "a lighthouse keeper", "autumn", "a lost key", "the first snow",
          "a robot learning to paint", "a busy market", "an old bridge"]


async def wait_healthy(url: str, proc: asyncio.subprocess.Process,
                       timeout_s: float = 600) -> None:
    try:
        await wait_for_200(url + "/healthz", lambda: proc.returncode, timeout_s=timeout_s,
                           interval_s=0.25)
    except ChildExitedError as e:
        raise RuntimeError(f"the backend exited with {e.returncode}") from None
    except TimeoutError:
        raise RuntimeError("the backend did not become healthy") from None


async def one_request(session: aiohttp.ClientSession, url: str, i: int,
                      max_tokens: int) -> dict[str, float]:
    body = {"messages": [{"role": "user", "content": f"Write a story about {TOPICS[i % 8]}."}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, 0
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"][0].get("delta", {}).get("content"):
                first = time.perf_counter() - start
    return {"ttft_s": first if first is not None else float("nan"), "tokens": tokens,
            "latency_s": time.perf_counter() - start}


async def wave(url: str, concurrency: int, max_tokens: int) -> dict[str, Any]:
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=3600)) as session:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_request(session, url, i, max_tokens)
                                         for i in range(concurrency)))
        wall = time.perf_counter() - start
    ttfts = sorted(r["ttft_s"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {"concurrency": concurrency, "requests": concurrency, "output_tokens": tokens,
            "wall_s": round(wall, 3), "output_tok_s": round(tokens / wall, 1),
            "ttft_mean_s": round(statistics.mean(ttfts), 4),
            "ttft_p50_s": round(ttfts[len(ttfts) // 2], 4),
            "ttft_max_s": round(ttfts[-1], 4)}


async def serve_and_measure(args: argparse.Namespace, max_batch: int) -> list[dict[str, Any]]:
    port = free_port()
    cmd = [sys.executable, "-m", "semcache.backend", "--port", str(port), "--model", args.model,
           "--data-dir", args.data_dir, "--device", args.device, "--max-batch", str(max_batch),
           "--max-seq-len", str(args.max_seq_len)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        await wave(url, min(4, max_batch), 4)  # warm the kernels and the connection pool
        out = []
        for level in args.levels:
            result = await wave(url, level, args.max_tokens)
            print(f"max_batch={max_batch} concurrency={level}: {result}", flush=True)
            out.append(result)
        return out
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)


def hf_generate_rate(args: argparse.Namespace) -> float:
    """transformers' own generate, one request, for reference (tokens/s)."""
    import torch

    from semcache.backend.model import load_model

    loaded = load_model(args.model, args.data_dir, args.device)
    ids = loaded.tokenizer.encode("Write a story about the sea.", return_tensors="pt")
    ids = ids.to(loaded.device)
    kwargs = {"do_sample": False, "pad_token_id": loaded.tokenizer.eos_token_id}
    with torch.inference_mode():
        loaded.model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kwargs)
        start = time.perf_counter()
        out = loaded.model.generate(ids, max_new_tokens=args.max_tokens,
                                    min_new_tokens=args.max_tokens, **kwargs)
        if loaded.device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return round((out.shape[1] - ids.shape[1]) / elapsed, 1)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("continuous_batching", "continuous batching"),
                       ("one_at_a_time", "one request at a time")):
        rows = report[key]
        levels = [r["concurrency"] for r in rows]
        ax1.plot(levels, [r["output_tok_s"] for r in rows], marker="o", label=label)
        ax2.plot(levels, [r["ttft_p50_s"] for r in rows], marker="o", label=label)
    ax1.set(xlabel="concurrent requests", ylabel="output tokens/s", xscale="log", yscale="log",
            title="throughput")
    ax2.set(xlabel="concurrent requests", ylabel="median time to first token (s)",
            xscale="log", yscale="log", title="time to first token")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    where = report["machine"]["gpu"] or report["machine"]["cpu_model"]
    fig.suptitle(f"{report['model']} on {where}, {report['max_tokens']} output tokens/request")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-tokens", type=int, default=0,
                        help="output tokens per request (default: 32 on CPU, 256 on GPU)")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--name", default="", help="machine name in the file name")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    info = machine_info(("torch", "transformers"))
    gpu = info["gpu"] is not None and args.device != "cpu"
    args.max_tokens = args.max_tokens or (256 if gpu else 32)
    name = args.name or ("gpu-" + info["gpu"].split()[-1].lower() if gpu else "cpu")
    batched = asyncio.run(serve_and_measure(args, max(args.levels)))
    alone = asyncio.run(serve_and_measure(args, 1))
    report = {"benchmark": "bench_backend", "model": args.model, "machine": info,
              "device": "cuda" if gpu else "cpu", "max_tokens": args.max_tokens,
              "workload": "streamed chat requests, greedy, ignore_eos, one wave per level",
              "continuous_batching": batched, "one_at_a_time": alone,
              "hf_generate_single_tok_s": hf_generate_rate(args),
              "speedup_vs_one_at_a_time": {
                  str(b["concurrency"]): round(b["output_tok_s"] / a["output_tok_s"], 2)
                  for b, a in zip(batched, alone, strict=True)}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"backend_{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, path.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("speedup_vs_one_at_a_time",
                                             "hf_generate_single_tok_s")}))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
