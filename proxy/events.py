"""One record per cacheable request: what was decided and why.

The pipeline emits a `RequestEvent` for every answer it gives; `Observer` turns it into
Prometheus metrics and keeps the most recent ones for the admin API ("recent lookups").
Extra sinks (the per-minute time series in Redis) subscribe with `Observer.subscribe`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .metrics import Metrics

RECENT_EVENTS = 500
"""Recent lookups kept in memory for the admin API; a replica's own traffic only."""


@dataclass(frozen=True, kw_only=True)
class RequestEvent:
    request_id: str
    endpoint: str
    model: str
    tenant: str
    """Hash of the credential, never the credential."""
    outcome: str
    """hit-exact | hit-semantic | miss | bypass"""
    latency_s: float
    stream: bool
    reason: str | None = None
    """Why a bypass happened (redis-unavailable, not-cacheable, ...)."""
    entry_id: str | None = None
    similarity: float | None = None
    """Best similarity found (hits, and semantic misses that had a candidate)."""
    threshold: float | None = None
    age_s: float | None = None
    query: str = ""
    """The first characters of the question, for the dashboard."""
    prompt_tokens_saved: int = 0
    completion_tokens_saved: int = 0
    upstream_s_saved: float = 0.0
    status: int = 200
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Sink = Callable[[RequestEvent], None]


class Observer:
    """Fans each event out to metrics, the recent-events buffer and subscribers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.recent: deque[RequestEvent] = deque(maxlen=RECENT_EVENTS)
        self._sinks: list[Sink] = []

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, event: RequestEvent) -> None:
        m = self.metrics
        m.requests.labels(event.endpoint, event.outcome).inc()
        m.latency.labels(event.outcome).observe(event.latency_s)
        if event.reason:
            m.bypass_reasons.labels(event.reason).inc()
        if event.outcome.startswith("hit-") and event.similarity is not None:
            m.similarity.labels(event.outcome[4:]).observe(event.similarity)
            m.latency_saved.inc(event.upstream_s_saved)
            m.tokens_saved.labels("prompt").inc(event.prompt_tokens_saved)
            m.tokens_saved.labels("completion").inc(event.completion_tokens_saved)
        self.recent.append(event)
        for sink in self._sinks:
            sink(event)
