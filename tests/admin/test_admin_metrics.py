"""/metrics moves as requests flow, and exports the figures other components keep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admin.admin_helpers import api, ask, metrics_text, sample
from conftest import make_settings

from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import build_app
from semcache.proxy.metrics import Inventory, Metrics, StateCollector
from semcache.proxy.prices import Pricing


async def test_metrics_follow_requests(aiohttp_client: Any, redis_url: str, upstream: FakeUpstream,
                                       tmp_path: Path) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path,
                             costs__price_per_1k_prompt={"fake-model": 2.0},
                             costs__price_per_1k_completion={"*": 10.0})
    proxy = await aiohttp_client(build_app(settings))
    before = await metrics_text(proxy)
    assert sample(before, 'semcache_requests_total{endpoint="chat",outcome="miss"}') == 0
    await ask(proxy, "count me")
    await ask(proxy, "count me")
    await ask(proxy, "count me")
    text = await metrics_text(proxy)
    assert sample(text, 'semcache_requests_total{endpoint="chat",outcome="miss"}') == 1
    assert sample(text, 'semcache_requests_total{endpoint="chat",outcome="hit-exact"}') == 2
    assert sample(text, 'semcache_request_seconds_count{outcome="hit-exact"}') == 2
    assert sample(text, 'semcache_hit_similarity_count{tier="exact"}') == 2
    assert sample(text, 'semcache_upstream_seconds_count') == 1
    assert sample(text, 'semcache_tokens_saved_total{kind="prompt"}') == 20
    completion = sample(text, 'semcache_tokens_saved_total{kind="completion"}')
    assert completion > 0
    # 2 hits x 10 prompt tokens at $2/1k, and the completion tokens at the "*" price of $10/1k
    assert abs(sample(text, "semcache_cost_saved_usd_total") - (0.04 + completion * 0.01)) < 1e-9
    assert sample(text, "semcache_redis_up") == 1
    upstream.status = 500
    await ask(proxy, "fails upstream")
    text = await metrics_text(proxy)
    assert sample(text, 'semcache_upstream_errors_total{kind="500"}') == 1
    await api(proxy, "GET", "stats")  # measures the inventory
    text = await metrics_text(proxy)
    assert sample(text, 'semcache_index_entries{kind="redis"}') == 1
    assert sample(text, "semcache_redis_used_memory_bytes") > 0


async def test_feedback_is_counted(proxy: Any) -> None:
    await ask(proxy, "bad hit")
    entry = (await ask(proxy, "bad hit")).headers["X-Semcache-Entry"]
    await api(proxy, "POST", "feedback", {"entry_id": entry})
    await api(proxy, "POST", "feedback", {"entry_id": entry})
    text = await metrics_text(proxy)
    assert sample(text, 'semcache_feedback_total{result="removed"}') == 1
    assert sample(text, 'semcache_feedback_total{result="already-gone"}') == 1


@dataclass
class FakeStats:
    texts: int = 90
    batches: int = 10
    batch_size_sum: int = 90
    truncated: int = 1
    lru_hits: int = 5
    failures: int = 0
    queue_depth: int = 3


@dataclass
class FakeEmbeddings:
    stats: FakeStats
    healthy: bool = True


class FakeIndex:
    def stats(self) -> dict[str, Any]:
        return {"entries": 7, "scopes": 2, "by_kind": {"flat": 5, "hnsw": 2}, "bytes": 4096}


def test_state_collector_reads_what_exists() -> None:
    metrics = Metrics()
    parts: dict[str, Any] = {}
    metrics.registry.register(StateCollector(
        embeddings=lambda: parts.get("embeddings"), index=lambda: parts.get("index"),
        inventory=lambda: parts.get("inventory"),
    ))
    empty = metrics.render().decode()  # nothing there yet: no failure, no series
    assert "semcache_embedding_queue_depth" not in empty
    parts.update(embeddings=FakeEmbeddings(FakeStats()), index=FakeIndex(),
                 inventory=Inventory(entries=12, entry_bytes=3000, used_memory=10**6, keys=40))
    text = metrics.render().decode()
    assert sample(text, "semcache_embedding_batch_size_count") == 10
    assert sample(text, "semcache_embedding_batch_size_sum") == 90
    assert sample(text, "semcache_embedding_queue_depth") == 3
    assert sample(text, "semcache_embedding_truncated_total") == 1
    assert sample(text, "semcache_embedding_healthy") == 1
    assert sample(text, 'semcache_index_entries{kind="flat"}') == 5
    assert sample(text, 'semcache_index_entries{kind="hnsw"}') == 2
    assert sample(text, 'semcache_index_entries{kind="redis"}') == 12
    assert sample(text, "semcache_index_bytes") == 4096
    assert sample(text, "semcache_redis_entry_bytes") == 3000


def test_pricing_uses_the_model_then_the_default() -> None:
    pricing = Pricing({"a": 1.0, "*": 0.5}, {"a": 2.0})
    assert pricing.cost("a", 1000, 1000) == 3.0
    assert pricing.cost("b", 1000, 1000) == 0.5  # no "*" completion price: free
    assert Pricing({}, {}).cost("a", 10**6, 10**6) == 0.0
