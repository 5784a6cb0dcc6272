"""Prometheus metrics, in a registry owned by the application (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
