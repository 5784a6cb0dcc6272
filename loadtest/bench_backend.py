"""Benchmark of the bundled backend: speculative decoding, prefix caching, throughput.

`python -m semcache.loadtest.bench_backend [--device auto] [--out DIR]`

Starts `python -m semcache.backend` on free ports, the same model each time: with the
defaults (prompt-lookup speculation and prefix caching on) for the whole run, beside it one
with `--speculative off` and then one with `--prefix-cache-tokens 0`; each comparison sends
the same requests to both servers in alternating turns. Over HTTP, as a client sees it:

- speculation: single requests one at a time, greedy, streamed, on extraction-heavy prompts
  (edit or summarise a pasted text, change code, list dates) and on open chat: decoding
  tokens/s (first to last token), end-to-end tokens/s, the drafts' acceptance rate and
  tokens per step (from /healthz), and whether the greedy answers are the same text;
- prefix caching: time to first token for waves of 1 / 8 / 32 concurrent requests that share
  a ~1,000-token system prompt (put in the cache by one request before each wave), and the
  prefill the cache saved;
- throughput: output tokens/s for waves of 1 / 8 / 32 / 64 concurrent streamed stories
  (greedy, ignore_eos: every answer is exactly --throughput-tokens long), speculation on/off;
- first impression: the latency of a new user's first questions with no max_tokens, which is
  what the default max_tokens decides.

Writes loadtest/results/backend_<machine>.json (machine, load average, every number) and a
PNG beside it, and prints a summary. The defaults keep a 2-core CPU run to a few minutes
and a GPU run (CUDA, bf16, CUDA graphs) to about five.
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

import aiohttp

from semcache.index.redis_server import free_port
from semcache.proxy.readiness import ChildExitedError, wait_for_200

from . import backend_prompts as prompts
from .machine import machine_info, machine_slug

RESULTS = Path(__file__).resolve().parent / "results"
STORY_TOPICS = ["the sea", "a lighthouse keeper", "autumn", "a lost key", "the first snow",
                "a robot learning to paint", "a busy market", "an old bridge"]
SERVERS = {"default": [], "no_speculation": ["--speculative", "off"],
           "no_prefix_cache": ["--prefix-cache-tokens", "0"]}


# ---- one server ---------------------------------------------------------------------------


class Backend:
    """A backend child process on a free port, and the client calls the sections make."""

    def __init__(self, args: argparse.Namespace, extra: list[str]) -> None:
        self.args, self.extra = args, extra
        self.url = ""
        self.session: aiohttp.ClientSession | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Backend:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        a = self.args
        cmd = [sys.executable, "-m", "semcache.backend", "--port", str(port), "--model", a.model,
               "--data-dir", a.data_dir, "--device", a.device, "--max-batch", str(a.max_batch),
               "--max-seq-len", str(a.max_seq_len), "--embedding-model", "off", *self.extra]
        self._proc = proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL)
        try:
            await wait_for_200(self.url + "/healthz", lambda: proc.returncode, timeout_s=900,
                               interval_s=0.25)
        except ChildExitedError as e:
            raise RuntimeError(f"the backend exited with {e.returncode}") from None
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=3600))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await asyncio.wait_for(self._proc.wait(), timeout=60)

    async def stats(self) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(self.url + "/healthz") as resp:
            return await resp.json()

    async def chat(self, messages: list[dict[str, str]], **body: Any) -> dict[str, Any]:
        """One streamed chat completion: its text, tokens, and the client-side timings."""
        assert self.session is not None
        payload = {"messages": messages, "stream": True,
                   "stream_options": {"include_usage": True}, **body}
        start = time.perf_counter()
        first = last = None
        parts, tokens, reason = [], 0, None
        async with self.session.post(self.url + "/v1/chat/completions", json=payload) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk["choices"]:
                    text = choice.get("delta", {}).get("content")
                    if text:
                        last = time.perf_counter()
                        first = first or last
                        parts.append(text)
                    reason = choice.get("finish_reason") or reason
        end = time.perf_counter()
        return {"text": "".join(parts), "tokens": tokens, "finish_reason": reason,
                "ttft_s": (first or end) - start, "latency_s": end - start,
                "decode_s": (last or end) - (first or end)}


def delta(before: dict[str, Any], after: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: after[k] - before[k] for k in keys}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- sections -----------------------------------------------------------------------------
# Each section runs the same requests on two servers that are up at the same time, in turns
# whose order alternates (A B, B A, ...): a shared machine's load drifts over minutes, and
# measured one after the other the second server would get another machine.


def turns(backends: dict[str, Backend], i: int) -> list[tuple[str, Backend]]:
    pairs = list(backends.items())
    return pairs if i % 2 == 0 else pairs[::-1]


async def single_requests(backends: dict[str, Backend], texts: list[str],
                          max_tokens: int) -> dict[str, dict[str, Any]]:
    """Each prompt alone (greedy) on each server in turn, after one warm-up request."""
    for backend in backends.values():
        await backend.chat(user(texts[0]), max_tokens=4, temperature=0)
    before = {name: await b.stats() for name, b in backends.items()}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in backends}
    for i, text in enumerate(texts):
        for name, backend in turns(backends, i):
            runs[name].append(await backend.chat(user(text), max_tokens=max_tokens,
                                                 temperature=0))
    out = {}
    for name, backend in backends.items():
        spec = delta(before[name], await backend.stats(), "steps", "tokens_generated",
                     "draft_tokens", "draft_tokens_accepted")
        done = runs[name]
        tokens = sum(r["tokens"] for r in done)
        out[name] = {
            "requests": len(done), "max_tokens": max_tokens, "output_tokens": tokens,
            # First to last token: the decoding speed, without the prompt's prefill.
            "decode_tok_s": round(sum(r["tokens"] - 1 for r in done)
                                  / sum(r["decode_s"] for r in done), 1),
            "end_to_end_tok_s": round(tokens / sum(r["latency_s"] for r in done), 1),
            "ttft_mean_s": round(statistics.mean(r["ttft_s"] for r in done), 4),
            "draft_acceptance": round(spec["draft_tokens_accepted"] / spec["draft_tokens"], 3)
            if spec["draft_tokens"] else None,
            "tokens_per_step": round(spec["tokens_generated"] / spec["steps"], 2),
            **spec,
            "per_request": [{k: (round(v, 4) if isinstance(v, float) else v)
                             for k, v in r.items() if k != "text"} for r in done],
            "texts": [r["text"] for r in done],
        }
    return out


async def ttft_waves(backends: dict[str, Backend], system: str,
                     levels: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Per level and server: one request puts the shared system prompt in the cache (where
    there is one), then that many requests with it and distinct questions arrive at once;
    small levels repeat the wave (8 requests in all at least), as one request's time is
    noise on a shared machine."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in backends}
    for i, level in enumerate(levels):
        for name, backend in turns(backends, i):
            warm = [{"role": "system", "content": system},
                    {"role": "user", "content": "Hello, who are you?"}]
            await backend.chat(warm, max_tokens=2, temperature=0)
            before = await backend.stats()
            ttfts = []
            for wave_no in range(max(1, 8 // level)):
                wave = await asyncio.gather(*(
                    backend.chat([{"role": "system", "content": system},
                                  {"role": "user",
                                   "content": f"{prompts.QUESTIONS[j % 20]} (#{j})"}],
                                 max_tokens=8, temperature=0)
                    for j in range(wave_no * level, (wave_no + 1) * level)))
                ttfts += [r["ttft_s"] for r in wave]
            ttfts.sort()
            row = {"concurrency": level, "requests": len(ttfts),
                   "ttft_mean_s": round(statistics.mean(ttfts), 4),
                   "ttft_p50_s": round(ttfts[len(ttfts) // 2], 4),
                   "ttft_max_s": round(ttfts[-1], 4),
                   **delta(before, await backend.stats(), "prefill_tokens",
                           "prefix_cached_tokens")}
            out[name].append(row)
            print(f"  {name} ttft: {row}", flush=True)
    return out


async def throughput_waves(backends: dict[str, Backend], levels: list[int],
                           tokens: int) -> dict[str, list[dict[str, Any]]]:
    """Per level and server: that many streamed stories at once, `tokens` tokens each."""
    for backend in backends.values():
        await asyncio.gather(*(backend.chat(user("Write a story about the sea."), max_tokens=4,
                                            temperature=0) for _ in range(4)))
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in backends}
    for i, level in enumerate(levels):
        for name, backend in turns(backends, i):
            before = await backend.stats()
            start = time.perf_counter()
            runs = await asyncio.gather(*(
                backend.chat(user(f"Write a story about {STORY_TOPICS[j % 8]}."),
                             max_tokens=tokens, temperature=0, ignore_eos=True)
                for j in range(level)))
            wall = time.perf_counter() - start
            spec = delta(before, await backend.stats(), "steps", "tokens_generated",
                         "draft_tokens", "draft_tokens_accepted", "model_s")
            # The worker's share of the wall time in model stages: near 1, the model is the
            # bound; well below, the rest (HTTP, detokenising, scheduling) is.
            spec["model_busy"] = round(spec.pop("model_s") / wall, 3)
            ttfts = sorted(r["ttft_s"] for r in runs)
            row = {"concurrency": level, "output_tokens": sum(r["tokens"] for r in runs),
                   "wall_s": round(wall, 3),
                   "output_tok_s": round(sum(r["tokens"] for r in runs) / wall, 1),
                   "ttft_p50_s": round(ttfts[len(ttfts) // 2], 4),
                   "tokens_per_step": round(spec["tokens_generated"] / spec["steps"], 2),
                   **spec}
            out[name].append(row)
            print(f"  {name} throughput: {row}", flush=True)
    return out


async def first_impression(backend: Backend) -> dict[str, Any]:
    """A new user's first questions as a client sends them: no max_tokens, no temperature."""
    runs = [await backend.chat(user(q)) for q in prompts.FIRST_QUESTIONS]
    latencies = sorted(r["latency_s"] for r in runs)
    return {"questions": prompts.FIRST_QUESTIONS,
            "latency_s": [round(r["latency_s"], 3) for r in runs],
            "completion_tokens": [r["tokens"] for r in runs],
            "finish_reasons": [r["finish_reason"] for r in runs],
            "latency_p50_s": round(latencies[len(latencies) // 2], 3),
            "latency_max_s": round(latencies[-1], 3)}


# ---- the run ------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, system: str) -> dict[str, Any]:
    report: dict[str, Any] = {name: {} for name in SERVERS}
    async with Backend(args, SERVERS["default"]) as default:
        print("speculation: defaults against --speculative off", flush=True)
        async with Backend(args, SERVERS["no_speculation"]) as plain:
            pair = {"default": default, "no_speculation": plain}
            for kind, texts in (("extraction", prompts.EXTRACTION), ("chat", prompts.CHAT)):
                for name, result in (await single_requests(pair, texts, args.max_tokens)).items():
                    report[name][kind] = result
                    print(f"  {name} {kind}: " + json.dumps(
                        {k: v for k, v in result.items() if k not in ("per_request", "texts")}),
                        flush=True)
            waves = await throughput_waves(pair, args.levels, args.throughput_tokens)
            for name, rows in waves.items():
                report[name]["throughput"] = rows
        print("prefix cache: defaults against --prefix-cache-tokens 0", flush=True)
        async with Backend(args, SERVERS["no_prefix_cache"]) as cold:
            pair = {"default": default, "no_prefix_cache": cold}
            for name, rows in (await ttft_waves(pair, system, args.ttft_levels)).items():
                report[name]["ttft_shared_prefix"] = rows
        report["default"]["first_impression"] = await first_impression(default)
        report["default"]["healthz"] = await default.stats()
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    on, off, cold = report["default"], report["no_speculation"], report["no_prefix_cache"]
    summary: dict[str, Any] = {}
    for kind in ("extraction", "chat"):
        same = sum(a == b for a, b in zip(on[kind]["texts"], off[kind]["texts"], strict=True))
        summary[kind] = {
            "decode_tok_s_speculative": on[kind]["decode_tok_s"],
            "decode_tok_s_plain": off[kind]["decode_tok_s"],
            "decode_speedup": round(on[kind]["decode_tok_s"] / off[kind]["decode_tok_s"], 2),
            "end_to_end_speedup": round(on[kind]["end_to_end_tok_s"]
                                        / off[kind]["end_to_end_tok_s"], 2),
            "draft_acceptance": on[kind]["draft_acceptance"],
            "tokens_per_step": on[kind]["tokens_per_step"],
            "greedy_answers_identical": f"{same}/{len(on[kind]['texts'])}"}
    summary["ttft_shared_prefix"] = [
        {"concurrency": w["concurrency"], "ttft_mean_s_cached": w["ttft_mean_s"],
         "ttft_mean_s_uncached": c["ttft_mean_s"],
         "ttft_speedup": round(c["ttft_mean_s"] / w["ttft_mean_s"], 2)}
        for w, c in zip(on["ttft_shared_prefix"], cold["ttft_shared_prefix"], strict=True)]
    summary["throughput_tok_s"] = [
        {"concurrency": s["concurrency"], "speculative": s["output_tok_s"],
         "plain": p["output_tok_s"]}
        for s, p in zip(on["throughput"], off["throughput"], strict=True)]
    first = on["first_impression"]
    summary["first_impression"] = {"latency_p50_s": first["latency_p50_s"],
                                   "latency_max_s": first["latency_max_s"],
                                   "completion_tokens": first["completion_tokens"]}
    return summary


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on, off, cold = report["default"], report["no_speculation"], report["no_prefix_cache"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    kinds = ["extraction", "chat"]
    x = range(len(kinds))
    ax1.bar([i - 0.2 for i in x], [off[k]["decode_tok_s"] for k in kinds], 0.4,
            label="speculation off")
    ax1.bar([i + 0.2 for i in x], [on[k]["decode_tok_s"] for k in kinds], 0.4,
            label="prompt lookup")
    ax1.set(xticks=list(x), xticklabels=kinds, ylabel="decoding tokens/s, one request",
            title="speculative decoding")
    for label, rows in (("prefix cached", on["ttft_shared_prefix"]),
                        ("no prefix cache", cold["ttft_shared_prefix"])):
        ax2.plot([r["concurrency"] for r in rows], [r["ttft_mean_s"] for r in rows],
                 marker="o", label=label)
    ax2.set(xlabel="concurrent requests", ylabel="mean time to first token (s)", xscale="log",
            yscale="log", title=f"{report['system_prompt_tokens']}-token shared system prompt")
    for label, rows in (("prompt lookup", on["throughput"]), ("speculation off", off["throughput"])):
        ax3.plot([r["concurrency"] for r in rows], [r["output_tok_s"] for r in rows],
                 marker="o", label=label)
    ax3.set(xlabel="concurrent requests", ylabel="output tokens/s", xscale="log", yscale="log",
            title=f"throughput, {report['throughput_tokens']} tokens/request")
    for ax in (ax1, ax2, ax3):
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    where = report["machine"]["gpu"] or report["machine"]["cpu_model"]
    fig.suptitle(f"bundled backend ({report['model']}) on {where}, {report['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged")
    parser.add_argument("--data-dir", default=".data")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-tokens", type=int, default=0,
                        help="most tokens per single request (default: 256 on GPU, 96 on CPU)")
    parser.add_argument("--throughput-tokens", type=int, default=0,
                        help="tokens per story in the throughput waves (256 on GPU, 32 on CPU)")
    parser.add_argument("--levels", default="1,8,32,64", help="throughput concurrency")
    parser.add_argument("--ttft-levels", default="",
                        help="time-to-first-token concurrency (default: 1,8,32 on GPU, 1,8 on "
                             "CPU, where 32 uncached 1,000-token prefills take minutes)")
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--name", default="", help="machine name in the file name")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    info = machine_info(("torch", "transformers"))
    gpu = info["gpu"] is not None and args.device != "cpu"
    args.max_tokens = args.max_tokens or (256 if gpu else 96)
    args.throughput_tokens = args.throughput_tokens or (256 if gpu else 32)
    args.levels = [int(x) for x in args.levels.split(",")]
    args.ttft_levels = [int(x) for x in (args.ttft_levels or ("1,8,32" if gpu else "1,8"))
                        .split(",")]
    args.max_batch = max(args.levels + args.ttft_levels)
    from transformers import AutoTokenizer

    from semcache.backend.model import ensure_packaged

    # Convert the packaged model once here, not in three racing children.
    folder = ensure_packaged(args.data_dir) if args.model == "packaged" else Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    system = prompts.system_prompt(lambda text: len(tokenizer.encode(text)))
    load_before = os.getloadavg()
    start = time.perf_counter()
    measured = asyncio.run(measure(args, system))
    report = {"benchmark": "bench_backend", "model": args.model, "machine": info,
              "device": "cuda" if gpu else "cpu",
              "load_average_before_after": [round(x, 2) for x in load_before + os.getloadavg()],
              "duration_s": round(time.perf_counter() - start, 1),
              "system_prompt_tokens": len(tokenizer.encode(system)),
              "max_tokens": args.max_tokens, "throughput_tokens": args.throughput_tokens,
              "servers": {k: " ".join(v) or "defaults" for k, v in SERVERS.items()},
              **measured}
    report["summary"] = summarise(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"backend_{args.name or machine_slug(info if gpu else {**info, 'gpu': None})}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, path.with_suffix(".png"))
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {path} in {report['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
