"""Sampled verification: is the cached answer the upstream's answer? (`judge.verify_sample`)

Off the response path, a sample of semantic candidates is checked and the outcome recorded as
an observation for the adaptive thresholds (judge/observations.py): a served hit is also sent
to the upstream; a candidate turned down by its adaptive threshold alone is compared with the
answer its miss got (no extra upstream call). Sampling from everything the un-adapted
decision would serve keeps the observations a fair picture of every threshold above the
usual bar, not only of what the adapted one serves. Every candidate is checked while its
scope has fewer than MIN_EVIDENCE observations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Coroutine
from typing import Any

import orjson
from multidict import CIMultiDict

from semcache.index.store import Entry

from ..apis import APIS
from ..apis.answers import answer_text
from ..judge import Candidate, Judge
from ..judge.observations import RedisObservations
from ..judge.settings import JudgeSettings
from ..judge.thresholds import MIN_EVIDENCE
from ..metrics import Metrics
from ..upstream import Upstream
from .lookup import Hit, Lookup

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")
_NOT_SERVED = object()
"""A checked candidate that the un-adapted decision would not have served either."""


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip().strip(".!").lower()


class Sampler:
    def __init__(self, settings: JudgeSettings, judge: Judge, observations: RedisObservations,
                 upstream: Upstream, metrics: Metrics, embed: Any) -> None:
        self.settings = settings
        self.judge = judge
        self.observations = observations
        self.upstream = upstream
        self.metrics = metrics
        self.embed = embed
        """async (text) -> unit vector, or None while the semantic tier is warming."""

    def rate(self, scope: str) -> float:
        """Share of the candidates the un-adapted decision would serve that are checked."""
        rate = self.settings.verify_sample
        if rate > 0 and self.observations.pool_size(scope) < MIN_EVIDENCE:
            return 1.0
        return rate

    async def check_hit(self, headers: CIMultiDict[str], lookup: Lookup, hit: Hit) -> None:
        """A served hit, off the response path: ask the upstream too (non-streaming)."""

        async def upstream_answer() -> Any:
            req = lookup.req
            body = {k: v for k, v in req.body.items() if k not in ("stream", "stream_options")}
            api = APIS[req.endpoint]
            upstream = await self.upstream.send("POST", api.subpath, headers,
                                                orjson.dumps(body), api=api.upstream)
            try:
                raw = await upstream.read()
            finally:
                upstream.release()
            return orjson.loads(raw) if upstream.status == 200 else None

        await self._record("hit", hit.entry, hit.similarity, upstream_answer())

    async def check_miss(self, lookup: Lookup, answer: bytes) -> None:
        """A candidate turned down by its adaptive threshold alone: had the un-adapted
        decision served it, would that have been right? The upstream has just answered the
        miss, so this costs no upstream call."""
        assert lookup.turned_down is not None
        entry, verdict = lookup.turned_down

        async def answer_if_served() -> Any:
            session = self.judge.session(lookup.ask, adaptive=False)
            unadapted = await session.consider(Candidate(
                entry_id=entry.id, text=entry.query, similarity=verdict.similarity))
            return orjson.loads(answer) if unadapted.serve else _NOT_SERVED

        await self._record("miss", entry, verdict.similarity, answer_if_served())

    async def _record(self, lookup_kind: str, entry: Entry, similarity: float,
                      fresh_answer: Coroutine[Any, Any, Any]) -> None:
        """Compare the upstream's answer (None: no usable one) with the entry's and record
        the outcome as an observation. Any failure costs a log line and a metric."""
        verifications = self.metrics.verifications
        try:
            fresh = await fresh_answer
            if fresh is _NOT_SERVED:
                return
            correct = await self._same_answer(fresh, entry)
            if correct is None:
                verifications.labels(lookup_kind, "failed").inc()
                return
            verifications.labels(lookup_kind, "correct" if correct else "wrong").inc()
            await self.observations.observe(entry, similarity, correct)
        except Exception as e:  # noqa: BLE001 - a background check must never break anything
            verifications.labels(lookup_kind, "failed").inc()
            log.warning("check of entry %s failed: %s: %s", entry.id, type(e).__name__, e)

    async def _same_answer(self, fresh: Any, entry: Entry) -> bool | None:
        """Whether two answers say the same: normalised texts equal, or the encoder's cosine
        of them at least `judge.answer_similarity` (None: nothing to compare)."""
        fresh_text = answer_text(fresh)
        cached_text = answer_text(orjson.loads(entry.response))
        if not fresh_text or not cached_text:
            return None
        if normalise(fresh_text) == normalise(cached_text):
            return True
        a, b = await self.embed(fresh_text), await self.embed(cached_text)
        if a is None or b is None:
            return None
        return float(a @ b) >= self.settings.answer_similarity
