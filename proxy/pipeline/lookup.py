"""Lookup: the exact tier, then the semantic tier's candidates, each put to the judge.

Fail open: a failure of the cache itself (Redis, encoder) ends the lookup with a bypass
reason, and the request goes to the upstream. Fail closed: a lookup only ever addresses
entries of its own scope, and a candidate the judge does not accept is a miss.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from semcache.embeddings.service import EmbeddingError, QueueFullError
from semcache.index.store import Entry, Store, StoreError

from ..config import CacheSettings
from ..events import RequestEvent
from ..judge import Ask, Candidate, Judge, Verdict
from ..policy import Directives, Scope
from ..protocol import ParsedRequest
from ..semantic import SemanticTier


@dataclass(frozen=True, kw_only=True)
class Hit:
    """Why a request was answered from the cache."""

    entry: Entry
    tier: str
    """`exact` or `semantic`."""
    verdict: Verdict | None = None
    """The judge's verdict on a semantic hit."""
    coalesced: str | None = None
    """`local` or `remote`: the answer of an identical request's upstream call, which this
    one waited for instead of calling (single-flight, flight.py)."""

    @property
    def similarity(self) -> float:
        return 1.0 if self.verdict is None else self.verdict.similarity


@dataclass(kw_only=True)
class Lookup:
    """Everything the pipeline decided about one cacheable request."""

    req: ParsedRequest
    directives: Directives
    scope: Scope
    entry_id: str
    request_id: str
    text: str | None = None
    """What the index and the judge read of the last message (pipeline/chains.py:
    `judged_text`: a short follow-up with the turn it follows); None: exact tier only."""
    vector: Any = None
    """The query's embedding, once computed (reused by the write-back)."""
    bypass_reason: str | None = None
    """Why the cache was not used at all (redis-unavailable, encoder-busy, ...)."""
    miss_reason: str | None = None
    """Why a cacheable lookup found nothing to serve: the judge's reason for its best
    candidate, or no-candidate, expired, too-old, exact-only, too-long."""
    verdict: Verdict | None = None
    """The judge's verdict on the best candidate (the hit, or what explains the miss)."""
    turned_down: tuple[Entry, Verdict] | None = None
    """A candidate only its adaptive threshold kept from being served, with its verdict,
    picked for a sampled check once the upstream has answered."""

    @property
    def ask(self) -> Ask:
        d = self.directives
        return Ask(text=self.text or "", scope=self.scope.id, threshold=d.threshold,
                   similarity_only=d.similarity_only)

    def event(self, outcome: str, started: float, **fields: Any) -> RequestEvent:
        v = self.verdict
        made: dict[str, Any] = dict(
            request_id=self.request_id, endpoint=self.req.endpoint, model=self.req.model,
            tenant=self.scope.tenant, outcome=outcome, stream=self.req.stream,
            latency_s=time.perf_counter() - started,
            reason=self.bypass_reason or (self.miss_reason if outcome == "miss" else None),
            similarity=None if v is None else v.similarity,
            threshold=None if v is None else v.threshold,
            query=(self.req.query_text or "")[:200])
        return RequestEvent(**{**made, **fields})


def fresh(entry: Entry, directives: Directives) -> bool:
    return directives.max_age is None or entry.age() <= directives.max_age


class Finder:
    """Finds what may answer a lookup: exact tier, then semantic candidates, best first,
    until the judge accepts one."""

    def __init__(self, settings: CacheSettings, store: Store, judge: Judge) -> None:
        self.settings = settings
        self.store = store
        self.judge = judge
        self.semantic: SemanticTier | None = None
        """Set once the semantic tier has loaded; None: exact tier only."""

    async def find(self, lookup: Lookup, check_rate: float = 0.0) -> Hit | None:
        """A hit, or None on a miss (with `miss_reason`, or `bypass_reason` if the cache
        itself failed). `check_rate`: chance that a candidate turned down by its adaptive
        threshold alone is kept for a sampled check (pipeline/sampling.py)."""
        try:
            entry = await self.store.get(lookup.entry_id)
        except StoreError:
            lookup.bypass_reason = "redis-unavailable"
            return None
        if entry is not None and entry.scope == lookup.scope.id:
            if fresh(entry, lookup.directives):
                return Hit(entry=entry, tier="exact")
            lookup.miss_reason = "too-old"
        semantic, text = self.semantic, self.semantic_text(lookup)
        if semantic is None or text is None:
            lookup.miss_reason = lookup.miss_reason or "exact-only"
            return None  # non-text parts, huge prompts and a warming tier: exact tier alone
        try:
            lookup.vector = await semantic.embed(text)
        except EmbeddingError as e:
            lookup.bypass_reason = "encoder-busy" if isinstance(e, QueueFullError) else "encoder-unavailable"
            return None
        return await self._semantic_hit(semantic, lookup, check_rate)

    def semantic_text(self, lookup: Lookup) -> str | None:
        """The text matched by meaning: the last user message's, unless it has other parts
        (protocol.py) or is longer than `cache.semantic_max_chars` (said on the miss)."""
        text = lookup.text
        if text is not None and len(text) > self.settings.semantic_max_chars:
            lookup.miss_reason = "too-long"
            return None
        return text

    async def _semantic_hit(self, semantic: SemanticTier, lookup: Lookup,
                            check_rate: float) -> Hit | None:
        session = self.judge.session(lookup.ask)
        candidates = await semantic.search(lookup.scope.id, lookup.vector, self.settings.top_k)
        lookup.miss_reason = lookup.miss_reason or "no-candidate"
        for candidate, similarity in candidates:  # best first
            if similarity < session.bar:
                if session.best is None:
                    lookup.miss_reason = "below-threshold"
                    lookup.verdict = Verdict(serve=False, reason="below-threshold",
                                             entry_id=candidate, similarity=similarity,
                                             threshold=session.base)
                break
            try:
                entry = await self.store.get(candidate)
            except StoreError:
                lookup.bypass_reason = "redis-unavailable"
                return None
            if entry is None:
                semantic.index.remove(candidate)  # expired or evicted: its vector goes too
                if session.best is None:
                    lookup.miss_reason = "expired"
                continue
            if entry.scope != lookup.scope.id:
                continue
            if not fresh(entry, lookup.directives):
                if session.best is None:
                    lookup.miss_reason = "too-old"
                continue
            verdict = await session.consider(Candidate(
                entry_id=entry.id, text=entry.query, similarity=similarity,
                observations=entry.observations))
            if verdict.serve:
                lookup.verdict, lookup.miss_reason = verdict, None
                return Hit(entry=entry, tier="semantic", verdict=verdict)
            if (verdict.reason == "raised-by-feedback" and lookup.turned_down is None
                    and random.random() < check_rate):
                lookup.turned_down = (entry, verdict)
        if session.best is not None:
            lookup.verdict, lookup.miss_reason = session.best, session.best.reason
        return None
