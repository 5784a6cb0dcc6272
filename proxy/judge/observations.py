"""Observations behind adaptive thresholds: in Redis for the proxy, in memory for eval.

An observation is (similarity, correct) for one semantic candidate whose outcome became
known: a client's report on a hit through POST /admin/api/feedback, or a sampled check
(`judge.verify_sample`, proxy/pipeline/sampling.py): a served hit is also sent to the upstream, and a
candidate turned down by its adaptive threshold alone is compared with the answer its miss
got; every candidate is checked while its scope has fewer than MIN_EVIDENCE observations.
Sampling from everything the un-adapted decision would serve keeps the pool a fair picture of
every threshold above the default. Each observation is appended, in one Redis script, to

- the entry's own list (its hash field `obs`, the newest ENTRY_OBSERVATIONS), which arrives
  with the HGETALL every lookup does anyway: no extra round trip on the hit path;
- its scope's pool (`{prefix}so:{scope}`, the newest SCOPE_OBSERVATIONS), which every replica
  keeps in memory and re-reads in the background, only where it changed, every
  SCOPE_REFRESH_S.

A candidate entry must then reach `thresholds.applied_threshold`: its own threshold from its
own observations, starting from its scope's threshold from the pool, which starts from the
bar the lookup would otherwise use (judge.py: `Judge.base_threshold`). All follow the same
rule, `thresholds.entry_threshold`, with the bound `judge.max_wrong_rate`.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from dataclasses import replace
from typing import Any

from semcache.index.connect import REDIS_ERRORS
from semcache.index.store import Entry, Store, decode_observations

from .thresholds import applied_threshold, entry_threshold, scope_threshold

log = logging.getLogger(__name__)

ENTRY_OBSERVATIONS = 64
"""Observations kept per entry (the newest); ~6 bytes each in Redis."""
SCOPE_OBSERVATIONS = 512
"""Observations kept per scope (the newest): a sliding window, so the scope's threshold
follows its recent traffic."""
MAX_SCOPE_POOLS = 10_000
"""Scopes whose pools are tracked (the most recently changed); each costs up to ~3 KB in Redis
and in every replica's memory."""
SCOPE_REFRESH_S = 2.0
"""How often a replica re-reads the pools changed elsewhere: the longest a report made
through another replica takes to move this replica's scope thresholds."""


@functools.lru_cache(maxsize=8192)
def _own_threshold(raw: str, scope_t: float, default: float, bound: float) -> float:
    """applied_threshold for an entry's encoded list (memoised: the hit path asks about the
    same few entries over and over)."""
    return applied_threshold(decode_observations(raw), scope_t, default, bound)


class RedisObservations:
    """This replica's view of the observations in Redis, and the thresholds they give."""

    def __init__(self, store: Store, *, max_wrong_rate: float, scope_ttl_s: int) -> None:
        self.store = store
        self.bound = max_wrong_rate
        self.scope_ttl_s = scope_ttl_s
        self._pools: dict[str, str] = {}
        """Encoded pool of every scope that has one."""
        self._scope_t: dict[tuple[str, float], float] = {}
        """Memo of (scope, default) -> scope threshold, dropped when the pool changes."""
        self._seq: dict[int, int] = {}
        """The latest sequence number read of each Redis shard's pools (index/keys.py)."""

    # the request path: memory only ------------------------------------------------------

    def scope_threshold(self, scope: str, default: float) -> float:
        raw = self._pools.get(scope)
        if raw is None:
            return default
        key = (scope, default)
        t = self._scope_t.get(key)
        if t is None:
            t = self._scope_t[key] = scope_threshold(decode_observations(raw), default, self.bound)
        return t

    def pool_size(self, scope: str) -> int:
        raw = self._pools.get(scope)
        return len(decode_observations(raw)) if raw else 0

    def explain(self, entry: Entry, default: float) -> dict[str, Any]:
        """An entry's observations and thresholds, for the admin API."""
        scope_t = self.scope_threshold(entry.scope, default)
        observations = entry.observations
        return {
            "observations": [[s, ok] for s, ok in observations],
            "own_threshold": (entry_threshold(observations, scope_t, self.bound)
                              if observations else None),
            "scope_threshold": scope_t,
            "scope_observations": len(decode_observations(self._pools.get(entry.scope, ""))),
            "default_threshold": default,
            "threshold": _own_threshold(entry.extra.get("obs", ""), scope_t, default, self.bound),
            "max_wrong_rate": self.bound,
        }

    # recording and refreshing -----------------------------------------------------------

    async def observe(self, entry: Entry, similarity: float, correct: bool) -> Entry | None:
        """Record one observation on the entry and its scope; returns the entry with its new
        list (None if it is gone, and then nothing is recorded). Raises StoreError."""
        result = await self.store.observe(
            entry.id, entry.scope, similarity, correct, entry_max=ENTRY_OBSERVATIONS,
            scope_max=SCOPE_OBSERVATIONS, scope_ttl_s=self.scope_ttl_s,
            max_scopes=MAX_SCOPE_POOLS)
        if result is None:
            return None
        own, pool = result
        self._set_pool(entry.scope, pool)  # this replica at once, the others on refresh
        return replace(entry, extra={**entry.extra, "obs": own})

    async def refresh(self) -> None:
        """Re-read the pools changed since the last call (all of them on the first). While
        Redis is unavailable the pools last read stay in force."""
        try:
            seq, changed = await self.store.changed_pools(self._seq)
        except REDIS_ERRORS:
            return
        if any(n < self._seq.get(shard, 0) for shard, n in seq.items()):
            # Redis lost its data: forget everything read before
            self._pools.clear()
            self._scope_t.clear()
        self._seq = seq
        for scope, raw in changed.items():
            self._set_pool(scope, raw)
        if len(self._pools) > MAX_SCOPE_POOLS:  # trimmed in Redis; forget the oldest here
            for scope in list(self._pools)[: len(self._pools) - MAX_SCOPE_POOLS]:
                self._set_pool(scope, None)

    def _set_pool(self, scope: str, raw: str | None) -> None:
        self._pools.pop(scope, None)  # re-insert: dict order is the order of change
        if raw:
            self._pools[scope] = raw
        for key in [k for k in self._scope_t if k[0] == scope]:
            del self._scope_t[key]


class MemoryObservations:
    """The same pools for `semcache eval`: the pairs of a file are one scope's lookups."""

    def __init__(self, *, max_wrong_rate: float) -> None:
        self.bound = max_wrong_rate
        self.pools: dict[str, deque[tuple[float, bool]]] = {}

    def scope_threshold(self, scope: str, default: float) -> float:
        return scope_threshold(self.pools.get(scope, ()), default, self.bound)

    def pool_size(self, scope: str) -> int:
        return len(self.pools.get(scope, ()))

    def record(self, scope: str, similarity: float, correct: bool) -> None:
        pool = self.pools.setdefault(scope, deque(maxlen=SCOPE_OBSERVATIONS))
        pool.append((round(similarity * 10000) / 10000, correct))  # as Redis keeps it
