"""The cache pipeline for the chat, completions, Responses and Anthropic Messages APIs
(each wire format maps to the pipeline's representation in proxy/apis/).

One request: read the body -> a place among the requests in flight -> parse and validate ->
tenant, policy and scope -> lookup (exact tier, then semantic candidates put to the judge) ->
hit: replay | miss: follow an identical call in flight, or make the call, relay it, write
back off the response path -> one RequestEvent (metrics, dashboard). This class only
orchestrates; each step lives in its own module of this package.

Fail open: any failure of the cache itself (Redis, encoder, index) turns the request into a
bypass that is forwarded to the upstream. Fail closed: a lookup only ever addresses entries
of the request's own scope, and the judge serves nothing it does not accept.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from multidict import CIMultiDict

from semcache.index.store import Store, StoreError

from ..apis import APIS
from ..apis.answers import usage_of
from ..apis.embeddings import Embeddings
from ..apis.response_ids import ResponseIds
from ..config import Settings
from ..errors import REQUEST_ID, ProxyError
from ..events import Observer
from ..judge import Judge
from ..judge.model import PairModelService, RoutedService
from ..judge.observations import RedisObservations
from ..policy import cacheable, entry_id, parse_directives, scope_of, split_controls
from ..protocol import Endpoint
from ..runtime import RuntimeState
from ..semantic import SemanticTier
from ..tenants import Tenancy
from ..upstream import Upstream
from .admission import Admission
from .chains import Chains, judged_text
from .flight import Call, Flights, Shared
from .forward import Result, respond, stream
from .intake import parse_body, read_body
from .lookup import Finder, Hit, Lookup
from .replay import HitCounter, coalesced_headers, replay
from .sampling import Sampler
from .writeback import WriteBack

log = logging.getLogger(__name__)

class CacheService:
    """Owns the pipeline's collaborators and the background tasks in flight."""

    def __init__(
        self, settings: Settings, store: Store, upstream: Upstream, observer: Observer,
        runtime: RuntimeState | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.metrics = observer.metrics
        self.observations = RedisObservations(store, max_wrong_rate=settings.judge.max_wrong_rate,
                                              scope_ttl_s=settings.cache.max_ttl_s)
        """Observations of semantic hits behind the adaptive thresholds."""
        self.judge = Judge(settings.judge, self.observations,
                           runtime_threshold=lambda: runtime.threshold if runtime else None,
                           reads_whole=self._reads_whole)
        self.finder = Finder(settings.cache, store, self.judge)
        self.chains = Chains(store)
        self.writeback = WriteBack(settings.cache, store, self.metrics,
                                   lambda: self.finder.semantic, self.finder.semantic_text,
                                   self.chains)
        self.sampler = Sampler(settings.judge, self.judge, self.observations, upstream,
                               self.metrics, self._embed)
        self.hits = HitCounter(store)
        self.tenancy = Tenancy(settings.cache)
        self.flights = Flights(settings.cache, store, upstream, self.metrics,
                               wait_s=settings.upstream.timeout_s, spawn=self.spawn,
                               finish=self._finish)
        """Identical misses in flight, and the lock across replicas (single-flight)."""
        self.admission = Admission(settings.server.max_in_flight, settings.server.max_wait_s,
                                   self.metrics)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.response_ids = ResponseIds(store)
        """Responses the cache served, for a later turn that names one (apis/response_ids.py)."""
        self.embeddings = Embeddings(settings, store, upstream, self.tenancy, observer,
                                     self.admission, self.spawn)
        """/v1/embeddings: cached item by item, beside the pipeline (apis/embeddings.py)."""

    # the parts that load after start-up ------------------------------------------------

    @property
    def semantic(self) -> SemanticTier | None:
        """The semantic tier once it has loaded; None: exact tier only."""
        return self.finder.semantic

    @semantic.setter
    def semantic(self, tier: SemanticTier | None) -> None:
        self.finder.semantic = tier

    @property
    def pair_model(self) -> PairModelService | RoutedService | None:
        """The judge's pair model once it has loaded (with `judge.model` on)."""
        return self.judge.model  # type: ignore[return-value]

    @pair_model.setter
    def pair_model(self, model: PairModelService | RoutedService | None) -> None:
        self.judge.model = model

    def _reads_whole(self, text: str) -> bool:
        tier = self.finder.semantic
        return True if tier is None else tier.reads_whole(text)

    async def _embed(self, text: str) -> np.ndarray | None:
        tier = self.finder.semantic
        return None if tier is None else await tier.embed(text)

    # background work --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait for write-backs in flight (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        await self.hits.flush()

    # the pipeline -----------------------------------------------------------------------

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        raw = await read_body(request, self.settings.server)
        async with self.admission.place():  # the loop's work for this request, bounded
            lookup = await self._lookup(request, endpoint, raw)
            hit = None
            if not lookup.bypass_reason and not lookup.directives.no_cache:
                hit = await self.finder.find(lookup, self.sampler.rate(lookup.scope.id))
            body = None if hit is None else self._answer_of(lookup, hit)
            if hit is not None and body is not None:
                return await self._serve_hit(request, lookup, hit, started, body)
        return await self._forward(request, lookup, started)

    def _answer_of(self, lookup: Lookup, hit: Hit) -> dict[str, Any] | None:
        """The hit's answer in the request's format; None (a miss, `other-format`) where the
        entry another format wrote says more than this one can (apis/answers.py)."""
        body = APIS[lookup.req.endpoint].answer_of(orjson.loads(hit.entry.response))
        if body is None:
            lookup.miss_reason = "other-format"
        return body

    async def _lookup(self, request: web.Request, endpoint: Endpoint, raw: bytes) -> Lookup:
        """What the request asks, of which scope, and whether the cache may answer it."""
        body, controls = split_controls(await parse_body(raw, self.settings.server))
        tenant, no_tenant = self.tenancy.resolve(request.headers, request.rel_url.query)
        if endpoint == "responses" and not no_tenant:  # a turn after one the cache served
            body = await self.response_ids.expand(tenant, body)
        req = APIS[endpoint].parse(body)
        directives = parse_directives(request.headers, self.settings.cache, controls)
        context = await self.chains.resolve(req, tenant, directives.namespace)
        scope = scope_of(req, tenant, directives.namespace, context.fingerprint)
        lookup = Lookup(req=req, directives=directives, scope=scope, entry_id=entry_id(scope, req),
                        request_id=request[REQUEST_ID], text=judged_text(req.query_text, context))
        if no_tenant:
            lookup.bypass_reason = no_tenant  # fail closed: no tenant, no shared cache
        elif req.bypass_reason:
            lookup.bypass_reason = req.bypass_reason  # server-state, non-text-content
        elif not cacheable(req, self.settings.cache):
            lookup.bypass_reason = "not-cacheable"
        elif directives.no_cache:
            lookup.miss_reason = "no-cache"
        return lookup

    async def _serve_hit(self, request: web.Request, lookup: Lookup, hit: Hit,
                         started: float, body: dict[str, Any] | None = None) -> web.StreamResponse:
        body = body or self._answer_of(lookup, hit)
        if body is None:  # an identical request's answer in a format this one cannot say
            return await self._answer(request, lookup, self.flights.alone(request, lookup),
                                      started)
        if lookup.req.endpoint == "responses" and lookup.req.body.get("store") is not False:
            try:  # kept, so that a later turn can name it as its previous_response_id
                await self.response_ids.remember(lookup.scope.tenant, lookup.req.body, body,
                                                 lookup.directives.ttl_s
                                                 or self.settings.cache.ttl_s)
            except StoreError:  # its id would name nothing: the upstream answers instead
                lookup.miss_reason = "redis-unavailable"
                return await self._answer(request, lookup, self.flights.alone(request, lookup),
                                          started)
        response = await replay(request, lookup, hit, body)
        self.hits.note(hit.entry)
        chose = lookup.directives.threshold is not None or lookup.directives.similarity_only
        if (hit.tier == "semantic" and not chose  # a client's own bar is not evidence
                and random.random() < self.sampler.rate(lookup.scope.id)):
            self.spawn(self.sampler.check_hit(CIMultiDict(request.headers), lookup, hit))
        self._emit_hit(lookup, hit, body, started)
        return response

    def _emit_hit(self, lookup: Lookup, hit: Hit, body: dict[str, Any], started: float) -> None:
        prompt_tokens, completion_tokens = usage_of(body)
        self.observer.emit(lookup.event(
            f"hit-{hit.tier}", started, entry_id=hit.entry.id, age_s=hit.entry.age(),
            similarity=hit.similarity,
            prompt_tokens_saved=prompt_tokens,
            completion_tokens_saved=completion_tokens,
            upstream_s_saved=hit.entry.upstream_s,
        ))

    async def _forward(self, request: web.Request, lookup: Lookup,
                       started: float) -> web.StreamResponse:
        """A miss or a bypass: follow an identical call in flight, or lead one, or call
        alone (flight.py says who may do which)."""
        flight = self.flights.find(lookup)
        if flight is not None:
            shared = await flight.follow(lookup)
            if shared is not None:
                return await self._serve_shared(request, lookup, shared, started)
            call = self.flights.alone(request, lookup)  # its call failed: not shared
        else:
            flight = self.flights.lead(request, lookup)
            led = None if flight is None else await flight.lead()
            if isinstance(led, Shared):
                return await self._serve_shared(request, lookup, led, started)
            call = led or self.flights.alone(request, lookup)
        return await self._answer(request, lookup, call, started)

    async def _answer(self, request: web.Request, lookup: Lookup, call: Call,
                      started: float) -> web.StreamResponse:
        """The upstream's answer to the request that made the call."""
        outcome = "bypass" if lookup.bypass_reason else "miss"
        status = 502
        try:
            response = await respond(request, call.relay, call.tail, miss_headers(lookup))
            status = response.status
        except ProxyError as e:
            status = e.status
            e.headers = {**miss_headers(lookup), **e.headers}  # what the cache did, too
            raise
        finally:
            self.observer.emit(lookup.event(outcome, started, status=status))
        return response

    async def _serve_shared(self, request: web.Request, lookup: Lookup, shared: Shared,
                            started: float) -> web.StreamResponse:
        """An identical request's answer, as an exact hit that says so."""
        self.metrics.coalesced.labels(shared.source).inc()
        if shared.tail is not None:
            assert shared.relay is not None and shared.head is not None
            response = await stream(request, shared.relay, shared.tail, shared.head,
                                    coalesced_headers(lookup))
            result = shared.relay.result.result()
            if result.answer is None:  # cut on its way, like the call it followed
                self.observer.emit(lookup.event("miss", started, status=502))
            else:
                self._emit_hit(lookup, Hit(entry=self.writeback.make_entry(
                    lookup, result.answer, result.upstream_s), tier="exact"),
                    orjson.loads(result.answer), started)
            return response
        entry = shared.entry or self.writeback.make_entry(lookup, shared.answer or b"",
                                                          shared.upstream_s)
        return await self._serve_hit(request, lookup,
                                     Hit(entry=entry, tier="exact", coalesced=shared.source),
                                     started)

    async def _finish(self, lookup: Lookup, result: Result) -> None:
        """The end of a call, off the response path: store the answer of a miss (unless
        no-store), and check the candidate it was turned down for (if one was sampled)."""
        if result.answer is None:
            return
        if lookup.turned_down is not None:
            self.spawn(self.sampler.check_miss(lookup, result.answer))
        if not lookup.bypass_reason and not lookup.directives.no_store:
            await self.writeback.write(lookup, result.answer, result.upstream_s)


def miss_headers(lookup: Lookup) -> dict[str, str]:
    """What explains a miss or a bypass: why, and the best candidate's similarity, the
    threshold applied, the checks that fired and the model's score."""
    outcome = "bypass" if lookup.bypass_reason else "miss"
    headers = {"X-Semcache": outcome, "X-Request-Id": lookup.request_id}
    reason = lookup.bypass_reason or lookup.miss_reason
    if reason:
        headers["X-Semcache-Reason"] = reason
    verdict = lookup.verdict
    if verdict is not None and not lookup.bypass_reason:
        headers["X-Semcache-Similarity"] = f"{verdict.similarity:.4f}"
        headers["X-Semcache-Threshold"] = f"{verdict.threshold:.4f}"
        if verdict.checks:
            headers["X-Semcache-Checks"] = ",".join(verdict.checks)
        if verdict.score is not None:
            headers["X-Semcache-Verifier"] = f"{verdict.score:.4f}"
    if lookup.miss_reason == "too-long" and "X-Semcache-Checks" not in headers:
        headers["X-Semcache-Checks"] = "too-long"
    return headers


SERVICE = web.AppKey("service", CacheService)
