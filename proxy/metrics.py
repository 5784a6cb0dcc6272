"""Prometheus metrics, in a registry owned by the application (no process globals).

Counters the pipeline moves itself live on `Metrics`. Figures owned by other components (the
embedding service's batcher, the vector index, the size of the cache in Redis) are read at
scrape time by `StateCollector`, which tolerates any of them being absent: a proxy without
the semantic tier simply exports fewer series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
)
SIMILARITY_BUCKETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0)


class Metrics:
    """Every metric the proxy exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_* (CPU seconds, resident memory, open files, start time), python_info and the
        # garbage collector's counts: what an operator reads first when a replica misbehaves.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "semcache_requests", "Cacheable-route requests by outcome.",
            ["endpoint", "outcome"], registry=r,
        )
        self.bypass_reasons = Counter(
            "semcache_bypass", "Requests served without the cache, by reason.", ["reason"],
            registry=r,
        )
        self.latency = Histogram(
            "semcache_request_seconds", "Time to the last byte of the answer, by outcome.",
            ["outcome"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.similarity = Histogram(
            "semcache_hit_similarity", "Cosine similarity of served hits.", ["tier"],
            buckets=SIMILARITY_BUCKETS, registry=r,
        )
        self.upstream_latency = Histogram(
            "semcache_upstream_seconds", "Upstream time to the last byte.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "semcache_upstream_errors", "Upstream failures and error statuses, by kind.",
            ["kind"], registry=r,
        )
        self.writes = Counter(
            "semcache_writes", "Write-backs by result (stored, skipped, failed).", ["result"],
            registry=r,
        )
        self.redis_up = Gauge(
            "semcache_redis_up", "1 while Redis answers, 0 while the cache is bypassed.",
            registry=r,
        )
        self.tokens_saved = Counter(
            "semcache_tokens_saved", "Tokens the upstream did not have to process, by kind.",
            ["kind"], registry=r,
        )
        self.latency_saved = Counter(
            "semcache_latency_saved_seconds",
            "Upstream time the original answer took, summed over the hits that replayed it.",
            registry=r,
        )
        self.cost_saved = Counter(
            "semcache_cost_saved_usd",
            "Estimated upstream cost of the tokens hits saved, at the [costs] prices.",
            registry=r,
        )
        self.feedback = Counter(
            "semcache_feedback", "Hit reports by result (removed, already-gone, "
            "threshold-raised: a wrong semantic hit recorded, confirmed: a correct one).",
            ["result"], registry=r,
        )
        self.saturated = Counter(
            "semcache_saturated", "Requests refused with 503: no place among "
            "server.max_in_flight within server.max_wait_s.", registry=r,
        )
        self.coalesced = Counter(
            "semcache_coalesced", "Requests answered by an identical request's upstream call "
            "(single-flight), by where that call ran (local: this replica; remote: another).",
            ["source"], registry=r,
        )
        self.loop_late = Gauge(
            "semcache_loop_late_seconds", "Seconds the event loop has run late since start "
            "(its callbacks waited behind other work).", registry=r,
        )
        self.verifications = Counter(
            "semcache_verifications", "Sampled semantic candidates checked against the "
            "upstream's answer (cache.verify_sample), by lookup (hit: served and asked again; "
            "miss: turned down by its adaptive threshold alone) and result (correct, wrong, "
            "failed).", ["lookup", "result"], registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True, kw_only=True)
class Inventory:
    """What the cache holds in Redis, as last measured (scanning is too slow for a scrape)."""

    entries: int
    """Entries under the key prefix."""
    entry_bytes: int
    """Estimated memory of those entries (sampled MEMORY USAGE times the count)."""
    used_memory: int
    """Redis `used_memory` (all of the server, not only semcache's keys)."""
    keys: int
    """DBSIZE of the database (all keys, semcache's and others')."""
    complete: bool = True
    """False when the count stopped at the scan limit (entries is then a lower bound)."""
    at: float = 0.0
    """Unix time of the measurement."""


Provider = Callable[[], Any]


class StateCollector(Collector):
    """Reads the figures other components keep, at scrape time, skipping any that are absent.

    `embeddings()` returns the embedding service (or None): its `stats` are read as plain
    counters (texts, batches, batch_size_sum, truncated, lru_hits, failures, queue_depth) and
    `healthy` as a gauge. `index()` returns the vector index (or None): `stats()["by_kind"]` (a mapping
    kind -> vectors, plus `bytes` and `scopes`) if it has one, else `len(index)` as kind
    "vectors". `inventory()` returns the latest `Inventory` (or None).
    """

    def __init__(self, *, embeddings: Provider, index: Provider, inventory: Provider) -> None:
        self._embeddings = embeddings
        self._index = index
        self._inventory = inventory

    def collect(self) -> Iterator[Any]:
        yield from self._embedding_families(self._embeddings())
        sizes = GaugeMetricFamily(
            "semcache_index_entries", "Entries in the cache, by kind (redis: stored entries, "
            "others: vectors in this replica's in-memory index).", labels=["kind"],
        )
        inventory = self._inventory()
        if inventory is not None:
            sizes.add_metric(["redis"], inventory.entries)
            yield GaugeMetricFamily("semcache_redis_entry_bytes",
                                    "Estimated Redis memory of the cache's entries.",
                                    value=inventory.entry_bytes)
            yield GaugeMetricFamily("semcache_redis_used_memory_bytes",
                                    "Redis used_memory (the whole server).", value=inventory.used_memory)
        index_stats = _index_stats(self._index())
        for kind, count in index_stats.get("by_kind", {}).items():
            sizes.add_metric([str(kind)], count)
        yield sizes
        if "bytes" in index_stats:
            yield GaugeMetricFamily("semcache_index_bytes", "Memory of this replica's vector index.",
                                    value=index_stats["bytes"])
        if "scopes" in index_stats:
            yield GaugeMetricFamily("semcache_index_scopes", "Scopes in this replica's vector index.",
                                    value=index_stats["scopes"])

    def _embedding_families(self, service: Any) -> Iterator[Any]:
        stats = getattr(service, "stats", None)
        if stats is None:
            return
        batches = SummaryMetricFamily("semcache_embedding_batch_size",
                                      "Texts per model run of the embedding batcher.")
        batches.add_metric([], count_value=int(_num(stats, "batches")),
                           sum_value=_num(stats, "batch_size_sum"))
        yield batches
        yield GaugeMetricFamily("semcache_embedding_queue_depth", "Texts waiting for the encoder.",
                                value=_num(stats, "queue_depth"))
        for name, help_ in (
            ("texts", "Texts encoded by the model (LRU hits excluded)."),
            ("truncated", "Texts cut at the model's token limit."),
            ("lru_hits", "Embeddings answered from the LRU of recent texts."),
            ("failures", "Failed encoder batches."),
        ):
            yield CounterMetricFamily(f"semcache_embedding_{name}", help_, value=_num(stats, name))
        healthy = getattr(service, "healthy", None)
        if healthy is not None:
            yield GaugeMetricFamily("semcache_embedding_healthy", "1 while the encoder works.",
                                    value=1 if healthy else 0)


def _num(obj: Any, name: str) -> float:
    value = getattr(obj, name, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def _index_stats(index: Any) -> dict[str, Any]:
    if index is None:
        return {}
    stats = getattr(index, "stats", None)
    if callable(stats):
        found = stats()
        if isinstance(found, Mapping) and isinstance(found.get("by_kind"), Mapping):
            return dict(found)
    try:
        return {"by_kind": {"vectors": len(index)}}
    except TypeError:
        return {}
