"""Conversation pairs replayed turn by turn through a running proxy, as real traffic.

A line is {"a": [messages], "b": [messages], "labels": [1, 1, 0], ...}: an optional system
message, then user messages only. Each pair gets its own namespace. Conversation `a` is
sent one user turn at a time, each request carrying the history so far with the proxy's
own answers as the assistant turns; then `b` the same way, and each of b's turns counts as
served when the proxy answers it from the cache (`hit-exact` or `hit-semantic`).
labels[i] says whether b's i-th turn, after b's history, asks for the same answer as a's
i-th turn after a's: a served turn with label 0 is a wrong hit. The proxy is the real one
(real Redis, the configured encoder and judge) in front of a fake upstream whose answers
depend on the whole conversation, as a model's do. `semcache eval` calls this for files
whose lines hold message arrays.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from semcache.index.redis_server import EmbeddedRedis
from semcache.loadtest.fake_upstream import FakeUpstream


@contextlib.asynccontextmanager
async def running_proxy(settings: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """The proxy on loopback with an embedded Redis and a fake upstream; yields its URL."""
    from semcache.proxy.app import SEMANTIC, SERVICE, build_app

    with tempfile.TemporaryDirectory(prefix="semcache-replay-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        await redis.start()
        fake = FakeUpstream(answer_with_history=True)
        up_runner = web.AppRunner(fake.app())
        await up_runner.setup()
        up_site = web.TCPSite(up_runner, "127.0.0.1", 0)
        await up_site.start()
        up_port = up_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        settings = replace(
            settings,
            redis=replace(settings.redis, url=redis.url, timeout_s=2.0),
            upstream=replace(settings.upstream, base_url=f"http://127.0.0.1:{up_port}/v1"),
            cache=replace(settings.cache, enabled=True, semantic=True))
        app = build_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(app[SEMANTIC].ready.wait(), 300)
            for _ in range(3000):  # the pair model loads beside the encoder
                if app[SERVICE].pair_model is not None or not settings.judge.model:
                    break
                await asyncio.sleep(0.1)
            yield f"http://127.0.0.1:{port}", app
        finally:
            await runner.cleanup()
            await up_runner.cleanup()
            await redis.stop()


async def replay_one(http: aiohttp.ClientSession, url: str, app: web.Application,
                     messages: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """Send a conversation's user turns one by one; the outcome of each."""
    from semcache.proxy.app import SERVICE

    history: list[dict[str, Any]] = [m for m in messages[:1] if m.get("role") == "system"]
    outcomes = []
    for turn in [m for m in messages if m.get("role") == "user"]:
        history.append(turn)
        body = {"model": "replay-model", "messages": history, "temperature": 0}
        async with http.post(f"{url}/v1/chat/completions", json=body,
                             headers={"X-Semcache-Namespace": namespace,
                                      "Authorization": "Bearer replay"}) as resp:
            data = await resp.json()
            outcomes.append({"outcome": resp.headers.get("X-Semcache"),
                             "reason": resp.headers.get("X-Semcache-Reason"),
                             "similarity": resp.headers.get("X-Semcache-Similarity"),
                             "score": resp.headers.get("X-Semcache-Verifier")})
        await app[SERVICE].drain(30)  # the answer is stored before the next turn, as a human's pause allows
        history.append({"role": "assistant", "content": data["choices"][0]["message"]["content"]})
    return outcomes


def _rate(served: list[bool], labels: list[int]) -> dict[str, float]:
    tp = sum(s and y == 1 for s, y in zip(served, labels, strict=True))
    fp = sum(s and y == 0 for s, y in zip(served, labels, strict=True))
    pos, neg = labels.count(1), labels.count(0)
    return {"turns": len(labels), "positives": pos, "served": tp + fp,
            "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
            "recall": round(tp / pos, 4) if pos else 0.0,
            "wrong_hit_rate": round(fp / neg, 4) if neg else 0.0}


async def replay(rows: list[dict[str, Any]], settings: Any) -> dict[str, Any]:
    started = time.monotonic()
    per_pair = []
    async with running_proxy(settings) as (url, app), aiohttp.ClientSession() as http:
        for i, row in enumerate(rows):
            namespace = f"pair-{i}"
            await replay_one(http, url, app, row["a"], namespace)
            outcomes = await replay_one(http, url, app, row["b"], namespace)
            per_pair.append({"kind": row.get("kind", ""), "labels": row["labels"],
                             "b": outcomes})
    served = [[o["outcome"] in ("hit-exact", "hit-semantic") for o in p["b"]] for p in per_pair]
    labels = [p["labels"][:len(s)] for p, s in zip(per_pair, served, strict=True)]
    flat_s = [x for s in served for x in s]
    flat_y = [y for ys in labels for y in ys]
    later_s = [x for s in served for x in s[1:]]
    later_y = [y for ys in labels for y in ys[1:]]
    kinds: dict[str, Any] = {}
    for p, s, ys in zip(per_pair, served, labels, strict=True):
        k = kinds.setdefault(p["kind"], {"served": [], "labels": []})
        k["served"] += s
        k["labels"] += ys
    return {"pairs": len(rows), "seconds": round(time.monotonic() - started, 1),
            "all_turns": _rate(flat_s, flat_y), "later_turns": _rate(later_s, later_y),
            "last_turns": _rate([s[-1] for s in served], [ys[-1] for ys in labels]),
            "by_kind": {k: _rate(v["served"], v["labels"]) for k, v in sorted(kinds.items())},
            "per_pair": per_pair}
