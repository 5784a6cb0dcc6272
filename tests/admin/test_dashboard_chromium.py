"""The dashboard in real headless Chromium, against a proxy that has served traffic.

The proxy runs on a real port (aiohttp_client), answers real requests (misses, exact hits,
semantic hits through the fake hash encoder), then Chromium loads /admin, runs its scripts
and polls the API; the DOM it leaves must hold charts drawn from that data. A screenshot is
saved; with SEMCACHE_UPDATE_SCREENSHOT=1 it replaces docs/dashboard.png, the README's.

Only the current minute holds live traffic, so that the screenshot shows what an operator
sees after a while, the 56 minutes before it are filled with recorded events of a synthetic
workload (written through the same TimeSeries the live sink uses); the README says so.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from admin.admin_helpers import api, chat
from conftest import make_settings

from semcache.embeddings.fake import HashEncoder
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.admin.api import ADMIN, component
from semcache.proxy.app import SERVICE, build_app
from semcache.proxy.events import RequestEvent

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt install chromium)"),
]

QUESTIONS = [
    "What is the capital of France?", "How do I reverse a list in Python?",
    "What is the boiling point of water at sea level?", "Explain the difference between TCP and UDP",
    "How many moons does Jupiter have?", "What does HTTP status 429 mean?",
    "How do I sort a dictionary by value in Python?", "Who wrote Pride and Prejudice?",
    "What is a Redis stream?", "How do vaccines train the immune system?",
    "Summarise the causes of the French Revolution", "What is the time complexity of binary search?",
]
PARAPHRASE_TAILS = ["please", "quickly", "briefly"]


def chromium_args(profile: Path, *extra: str) -> list[str]:
    return [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=6000", *extra,
    ]


async def chromium(profile: Path, *extra: str) -> str:
    """Run Chromium without blocking the loop that serves the proxy it is loading."""
    proc = await asyncio.create_subprocess_exec(
        *chromium_args(profile, *extra), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace")


async def serve_traffic(proxy: Any, upstream: FakeUpstream) -> None:
    upstream.delay_s = 0.9  # an upstream that takes a while, like a real model

    async def one(question: str, **headers: str) -> None:
        resp = await proxy.post("/v1/chat/completions", json=chat(question), headers=headers)
        await resp.read()

    await asyncio.gather(*(one(q) for q in QUESTIONS))  # misses
    await proxy.app[SERVICE].drain(5)
    for q in QUESTIONS[:8]:  # exact hits
        for _ in range(1 + QUESTIONS.index(q) % 3):
            await one(q)
    for q in QUESTIONS[:6]:  # paraphrases: semantic hits where the tier runs, misses otherwise
        await one(f"{q.rstrip('?')} {PARAPHRASE_TAILS[len(q) % 3]}?", **{"X-Semcache-Threshold": "0.85"})
    await one("Tell me a joke", **{"Cache-Control": "no-store"})
    await proxy.app[SERVICE].drain(5)


def backfill(proxy: Any, minutes: int = 56, seed: int = 7) -> None:
    """Recorded events for the minutes before the live traffic (see the module docstring)."""
    rng = random.Random(seed)
    series = proxy.app[ADMIN].series
    start = (time.time() // 60 - minutes) * 60
    for m in range(minutes):
        load = 20 + 14 * (1 + (m % 15) / 15) + rng.randint(0, 8)
        warm = min(1.0, 0.35 + m / 40)  # the cache warms up: the hit rate climbs
        for _ in range(int(load)):
            r = rng.random()
            if r < 0.42 * warm:
                outcome, sim, lat = "hit-exact", 1.0, rng.lognormvariate(-6.6, 0.35)
            elif r < 0.62 * warm:
                outcome, sim, lat = "hit-semantic", rng.uniform(0.9, 0.995), rng.lognormvariate(-5.4, 0.3)
            elif r < 0.97:
                outcome, sim, lat = "miss", rng.uniform(0.55, 0.9), rng.lognormvariate(0.2, 0.45)
            else:
                outcome, sim, lat = "bypass", None, rng.lognormvariate(0.1, 0.4)
            hit = outcome.startswith("hit-")
            event = RequestEvent(
                request_id=f"req-backfill-{m}-{r}", endpoint="chat", model="gpt-4o-mini", tenant="t",
                outcome=outcome, latency_s=lat, stream=False, similarity=sim, threshold=0.9,
                prompt_tokens_saved=rng.randint(40, 400) if hit else 0,
                completion_tokens_saved=rng.randint(80, 600) if hit else 0,
                upstream_s_saved=rng.uniform(0.8, 3.0) if hit else 0.0,
                at=start + m * 60 + rng.uniform(0, 59),
            )
            cost = (event.prompt_tokens_saved * 0.0025 + event.completion_tokens_saved * 0.01) / 1000
            series.record(event, cost)


async def extra_entries(proxy: Any, n: int) -> None:
    from semcache.index.store import Entry
    from semcache.proxy.app import STORE

    for i in range(n):
        await proxy.app[STORE].put(Entry(
            id=f"extra{i:03d}", scope="extra", tenant="t", namespace="", endpoint="chat",
            model="gpt-4o-mini", query=f"an older question {i}", response=b'{"choices": []}',
            created=time.time() - 3600 + i, ttl_s=3600))


async def test_dashboard_renders_charts_with_data(
    aiohttp_client: Any, redis_url: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url, upstream.base_url, tmp_path, cache__semantic=True,
        costs__price_per_1k_prompt={"gpt-4o-mini": 0.0025, "*": 0.0025},
        costs__price_per_1k_completion={"gpt-4o-mini": 0.01, "*": 0.01},
    )
    embeddings = EmbeddingService.from_encoder(HashEncoder(), EmbeddingSettings())
    proxy = await aiohttp_client(build_app(settings, embeddings=embeddings))
    for _ in range(100):  # the semantic tier loads in the background; the test runs without it too
        if component(proxy.app, "index") is not None:
            break
        await asyncio.sleep(0.05)
    await serve_traffic(proxy, upstream)
    await extra_entries(proxy, 30)  # more than the dashboard's first page of 25
    backfill(proxy)
    await proxy.app[ADMIN].series.flush()
    proxy.app[ADMIN].inventory.invalidate()  # count the entries just written
    stats = await api(proxy, "GET", "stats")
    assert stats["inventory"]["entries"] >= len(QUESTIONS)  # paraphrases may add misses
    assert stats["window"]["requests"]["hit-exact"] > 0

    url = f"http://127.0.0.1:{proxy.port}/admin"
    dom = await chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert 'data-loaded="true"' in dom, dom[:2000]

    def rects(series: str) -> list[int]:
        return [int(v) for v in re.findall(rf'<rect[^>]*data-series="{series}"[^>]*data-value="(\d+)"', dom)]

    assert sum(rects("hit-exact")) == stats["window"]["requests"]["hit-exact"]  # requests per minute
    assert sum(rects("miss")) > stats["window"]["requests"]["miss"]  # + misses' best similarity
    assert sum(rects("hit-semantic")) > 0
    lines = dict(re.findall(r'<path[^>]*data-series="([^"]+)"[^>]*data-points="(\d+)"', dom))
    for name in ("hit p50", "miss p50", "hit-rate", "tokens", "usd"):
        assert int(lines.get(name, 0)) > 0, (name, lines)
    # the line drawn is the bar actually applied, not the configured one where they differ
    applied = stats["threshold"]["applied"]
    drawn = re.findall(r'data-threshold="[^"]*"', dom)
    assert re.search(rf'data-threshold="{applied}"', dom), (applied, drawn)
    assert "What is the capital of France?" in dom  # top entries and recent lookups
    assert "badge hit-exact" in dom
    # The entries table shows its first page and offers the rest.
    more = re.search(r'<button[^>]*id="entries-more"[^>]*>', dom)
    assert more is not None and "hidden" not in more.group(0), more
    assert re.search(r'id="entries-count"[^>]*>25 shown<', dom)

    # The README's picture is refreshed only on request, so a test run leaves the tree clean.
    shot = README_SCREENSHOT if os.environ.get("SEMCACHE_UPDATE_SCREENSHOT") else tmp_path / "dashboard.png"
    shot.parent.mkdir(exist_ok=True)
    await chromium(tmp_path / "profile-shot", f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 10_000
