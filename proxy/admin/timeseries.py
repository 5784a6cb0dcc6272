"""Per-minute figures in Redis, shared by every replica and kept across restarts.

One hash per minute, `Keys.minute` (index/keys.py; minute = unix time // 60), whose fields are
counters that replicas add to with HINCRBY, so a dashboard on any replica sees the traffic of
all of them. Fields:

    n:{outcome}              requests
    lat:{outcome}:{bucket}   latency histogram (buckets: metrics.LATENCY_BUCKETS, then +Inf)
    lat_sum:{outcome}        summed latency (seconds)
    sim:{outcome}:{bin}      similarity histogram (50 bins over [0, 1]) of hits, and of misses
                             that had a semantic candidate
    tok:prompt, tok:completion, cost, saved_s, feedback

`Keys.totals` holds the same counters (no histograms) without a TTL: the savings since the
cache was first started. `Keys.top` ranks entries by hits, and `Keys.request`
remembers which entry answered a hit, and at what similarity ("{entry_id} {similarity}"), for
a while, so any replica can resolve a report on a hit by request id.

The request path only touches a dict (`record`); a background task writes the pending
counters in one pipeline every `flush_s`.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from semcache.index.connect import REDIS_ERRORS
from semcache.index.keys import Keys

from ..events import RequestEvent
from ..metrics import LATENCY_BUCKETS
from ..runtime import Periodic

log = logging.getLogger(__name__)

OUTCOMES = ("hit-exact", "hit-semantic", "miss", "bypass")
SIM_BINS = 50
"""Similarity histogram resolution: bins of 0.02, fine enough to place a threshold."""
RETENTION_MINUTES = 24 * 60
"""How long each per-minute hash lives; also the longest window the API serves."""
FLUSH_S = 0.5
"""How often pending counters go to Redis: the delay before a dashboard sees a request."""
REQUEST_ID_TTL_S = 300
"""How long a hit's request id can be reported through any replica. Each costs ~250 bytes
of Redis while it lives, so this bounds that memory to ~75 MB at a sustained 1,000 hits/s;
after it, a hit is still reported by its X-Semcache-Entry id (and X-Semcache-Similarity)."""
TOP_KEEP = 5000
"""Entries ranked in `{prefix}top`; the tail is trimmed so the set does not grow forever."""
MAX_PENDING_MINUTES = 60
"""Minutes of counters held while Redis is down; older ones are dropped (the cache bypasses
Redis meanwhile, and a dashboard gap is better than unbounded memory)."""

TOTAL_FIELDS = ("tok:prompt", "tok:completion", "cost", "saved_s", "feedback")


def latency_bucket(seconds: float) -> int:
    """Index of the first bucket whose upper bound holds `seconds` (len(buckets): +Inf)."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def similarity_bin(similarity: float) -> int:
    return min(SIM_BINS - 1, max(0, int(math.floor(similarity * SIM_BINS))))


class TimeSeries:
    """Collects events into per-minute counters and writes them to Redis off the request path."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, flush_s: float = FLUSH_S,
        retention_minutes: int = RETENTION_MINUTES,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.flush_s = flush_s
        self.retention_minutes = retention_minutes
        self._ints: dict[int, dict[str, int]] = {}
        self._floats: dict[int, dict[str, float]] = {}
        self._hits: dict[str, int] = defaultdict(int)
        self._request_ids: dict[str, str] = {}
        self._loop: Periodic | None = None
        self.dropped = 0
        """Minutes of counters dropped while Redis was unreachable."""

    def minute_key(self, minute: int) -> str:
        return self.keys.minute(minute)

    @property
    def totals_key(self) -> str:
        return self.keys.totals

    @property
    def top_key(self) -> str:
        return self.keys.top

    def request_key(self, request_id: str) -> str:
        return self.keys.request(request_id)

    # recording (request path: memory only) ----------------------------------------------

    def record(self, event: RequestEvent, cost: float = 0.0) -> None:
        minute = int(event.at // 60)
        ints = self._ints.setdefault(minute, defaultdict(int))
        floats = self._floats.setdefault(minute, defaultdict(float))
        outcome = event.outcome
        ints[f"n:{outcome}"] += 1
        ints[f"lat:{outcome}:{latency_bucket(event.latency_s)}"] += 1
        floats[f"lat_sum:{outcome}"] += event.latency_s
        if event.similarity is not None:
            ints[f"sim:{outcome}:{similarity_bin(event.similarity)}"] += 1
        if outcome.startswith("hit-"):
            ints["tok:prompt"] += event.prompt_tokens_saved
            ints["tok:completion"] += event.completion_tokens_saved
            floats["cost"] += cost
            floats["saved_s"] += event.upstream_s_saved
            if event.entry_id:
                self._hits[event.entry_id] += 1
                self._request_ids[event.request_id] = (
                    event.entry_id if event.similarity is None
                    else f"{event.entry_id} {event.similarity:.4f}")

    def record_feedback(self, at: float) -> None:
        ints = self._ints.setdefault(int(at // 60), defaultdict(int))
        ints["feedback"] += 1

    # flushing ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the pending counters in one pipeline; on failure keep them for the next try."""
        ints, floats, hits, request_ids = self._ints, self._floats, self._hits, self._request_ids
        if not (ints or floats or hits or request_ids):
            return
        self._ints, self._floats, self._hits, self._request_ids = {}, {}, defaultdict(int), {}
        try:
            await self._write(ints, floats, hits, request_ids)
        except REDIS_ERRORS:
            self._merge_back(ints, floats, hits, request_ids)
            raise

    async def _write(
        self, ints: Mapping[int, Mapping[str, int]], floats: Mapping[int, Mapping[str, float]],
        hits: Mapping[str, int], request_ids: Mapping[str, str],
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        ttl = self.retention_minutes * 60 + 120
        for minute in set(ints) | set(floats):
            key = self.minute_key(minute)
            for name, n in ints.get(minute, {}).items():
                pipe.hincrby(key, name, n)
                if name.startswith("n:") or name in TOTAL_FIELDS:
                    pipe.hincrby(self.totals_key, name, n)
            for name, x in floats.get(minute, {}).items():
                if x:
                    pipe.hincrbyfloat(key, name, x)
                    if name in TOTAL_FIELDS:
                        pipe.hincrbyfloat(self.totals_key, name, x)
            pipe.expire(key, ttl)
        for entry_id, n in hits.items():
            pipe.zincrby(self.top_key, n, entry_id)
        if hits:
            pipe.zremrangebyrank(self.top_key, 0, -(TOP_KEEP + 1))
        for request_id, entry_id in request_ids.items():
            pipe.set(self.request_key(request_id), entry_id, ex=REQUEST_ID_TTL_S)
        await pipe.execute()

    def _merge_back(
        self, ints: dict[int, dict[str, int]], floats: dict[int, dict[str, float]],
        hits: dict[str, int], request_ids: dict[str, str],
    ) -> None:
        for minute, fields in ints.items():
            mine = self._ints.setdefault(minute, defaultdict(int))
            for name, n in fields.items():
                mine[name] += n
        for minute, ffields in floats.items():
            fmine = self._floats.setdefault(minute, defaultdict(float))
            for name, x in ffields.items():
                fmine[name] += x
        for entry_id, n in hits.items():
            self._hits[entry_id] += n
        self._request_ids.update(request_ids)
        for minutes in (self._ints, self._floats):
            for minute in sorted(minutes)[:-MAX_PENDING_MINUTES]:
                del minutes[minute]
                self.dropped += 1
        if len(self._request_ids) > 10_000 or len(self._hits) > 10_000:
            self._request_ids.clear()
            self._hits.clear()

    def start(self) -> None:
        self._loop = Periodic(self.flush_s, self.flush)
        self._loop.start()

    async def stop(self) -> None:
        """Stop the loop and write what is pending (best effort)."""
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        with contextlib.suppress(*REDIS_ERRORS):
            await self.flush()

    # reading ----------------------------------------------------------------------------

    async def read(self, minutes: int, now: float | None = None) -> list[dict[str, Any]]:
        """The last `minutes` minutes (oldest first), each as its raw counters plus `t`."""
        last = int((time.time() if now is None else now) // 60)
        span = range(last - minutes + 1, last + 1)
        pipe = self.client.pipeline(transaction=False)
        for minute in span:
            pipe.hgetall(self.minute_key(minute))
        raws = await pipe.execute()
        return [{"t": minute * 60, **_decode(cast(Mapping[bytes, bytes], raw))}
                for minute, raw in zip(span, raws, strict=True)]

    async def totals(self) -> dict[str, float]:
        return _decode(cast(Mapping[bytes, bytes], await self.client.hgetall(self.totals_key)))

    async def top(self, n: int) -> list[tuple[str, float]]:
        ranked = cast(list[tuple[bytes, float]],
                      await self.client.zrevrange(self.top_key, 0, n - 1, withscores=True))
        return [(member.decode(), score) for member, score in ranked]

    async def forget(self, entry_ids: Iterable[str]) -> None:
        ids = list(entry_ids)
        if ids:
            await self.client.zrem(self.top_key, *ids)

    async def hit_for_request(self, request_id: str) -> tuple[str, float | None] | None:
        """(entry id, similarity) of the hit that answered `request_id`, None if unknown."""
        raw = cast(bytes | None, await self.client.get(self.request_key(request_id)))
        if raw is None:
            return None
        entry_id, _, similarity = raw.decode().partition(" ")
        try:
            return entry_id, float(similarity) if similarity else None
        except ValueError:
            return entry_id, None


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


# summaries (pure) -------------------------------------------------------------------------


def quantile(counts: list[float], q: float) -> float | None:
    """The q-quantile of a latency histogram (per-bucket counts, +Inf last), interpolated
    linearly within its bucket as Prometheus' histogram_quantile does."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]  # beyond the last bound: report the bound
            lower = LATENCY_BUCKETS[i - 1] if i else 0.0
            return lower + (LATENCY_BUCKETS[i] - lower) * (rank - seen) / n
        seen += n
    return LATENCY_BUCKETS[-1]


def latency_counts(points: Iterable[Mapping[str, float]], outcomes: Iterable[str]) -> list[float]:
    counts = [0.0] * (len(LATENCY_BUCKETS) + 1)
    wanted = tuple(outcomes)
    for point in points:
        for outcome in wanted:
            for i in range(len(counts)):
                counts[i] += point.get(f"lat:{outcome}:{i}", 0.0)
    return counts


def percentiles(counts: list[float]) -> dict[str, float | None]:
    return {f"p{int(q * 100)}": quantile(counts, q) for q in (0.5, 0.9, 0.95, 0.99)}


def similarity_histogram(points: Iterable[Mapping[str, float]]) -> dict[str, list[int]]:
    """Per outcome, counts in SIM_BINS bins over [0, 1] (only outcomes that have any)."""
    hist: dict[str, list[int]] = {}
    for point in points:
        for name, n in point.items():
            if name.startswith("sim:"):
                _, outcome, b = name.split(":")
                hist.setdefault(outcome, [0] * SIM_BINS)[int(b)] += int(n)
    return hist


def minute_summary(point: Mapping[str, float]) -> dict[str, Any]:
    """One minute for the dashboard: counts, hit rate, latency percentiles, savings."""
    counts = {o: int(point.get(f"n:{o}", 0)) for o in OUTCOMES}
    total = sum(counts.values())
    hits = counts["hit-exact"] + counts["hit-semantic"]
    hit_lat = latency_counts([point], ("hit-exact", "hit-semantic"))
    miss_lat = latency_counts([point], ("miss",))
    return {
        "t": int(point["t"]),
        "requests": counts,
        "total": total,
        "hit_rate": hits / total if total else None,
        "latency_hit": {"p50": quantile(hit_lat, 0.5), "p95": quantile(hit_lat, 0.95)},
        "latency_miss": {"p50": quantile(miss_lat, 0.5), "p95": quantile(miss_lat, 0.95)},
        "tokens_saved": int(point.get("tok:prompt", 0) + point.get("tok:completion", 0)),
        "cost_saved": point.get("cost", 0.0),
        "upstream_s_saved": point.get("saved_s", 0.0),
        "feedback": int(point.get("feedback", 0)),
    }


def window_summary(points: list[dict[str, float]]) -> dict[str, Any]:
    """The whole window: what /admin/api/stats reports as `window`."""
    counts = {o: int(sum(p.get(f"n:{o}", 0) for p in points)) for o in OUTCOMES}
    total = sum(counts.values())
    hits = counts["hit-exact"] + counts["hit-semantic"]
    lookups = total - counts["bypass"]
    return {
        "minutes": len(points),
        "requests": counts,
        "total": total,
        "hit_rate": hits / total if total else None,
        "hit_rate_of_lookups": hits / lookups if lookups else None,
        "latency": {
            "hit": percentiles(latency_counts(points, ("hit-exact", "hit-semantic"))),
            "hit-exact": percentiles(latency_counts(points, ("hit-exact",))),
            "hit-semantic": percentiles(latency_counts(points, ("hit-semantic",))),
            "miss": percentiles(latency_counts(points, ("miss",))),
            "bypass": percentiles(latency_counts(points, ("bypass",))),
        },
        "tokens_saved": {
            "prompt": int(sum(p.get("tok:prompt", 0) for p in points)),
            "completion": int(sum(p.get("tok:completion", 0) for p in points)),
        },
        "cost_saved": sum(p.get("cost", 0.0) for p in points),
        "upstream_s_saved": sum(p.get("saved_s", 0.0) for p in points),
        "feedback": int(sum(p.get("feedback", 0) for p in points)),
        "similarity": {"bins": SIM_BINS, "counts": similarity_histogram(points)},
    }
