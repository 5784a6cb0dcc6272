"""The cache pipeline for /v1/chat/completions and /v1/completions.

One request: parse and validate -> policy and scope -> exact tier -> (semantic tier) ->
hit: replay | miss: forward, relay, write back off the response path -> metrics.

Fail open: any failure of the cache itself (Redis, encoder, index) turns the request into a
bypass that is forwarded to the upstream. Fail closed: a lookup only ever addresses entries
of the request's own scope.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from semcache.embeddings.service import EmbeddingError, QueueFullError
from semcache.index.store import Entry, Store, StoreError

from .adaptive import AdaptiveThresholds, answer_text, normalise
from .checks import run_checks
from .config import Settings
from .decision import MIN_EVIDENCE, decide, needs_verifier
from .errors import (
    BadRequestError,
    PayloadTooLargeError,
    ProxyError,
    UnsupportedMediaTypeError,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
)
from .events import Observer, RequestEvent
from .metrics import Metrics
from .policy import Directives, Scope, cacheable, entry_id, parse_directives, scope_of, tenant_of
from .protocol import Endpoint, ParsedRequest, parse_json_body, parse_request
from .runtime import RuntimeState
from .semantic import WRITE_WAIT_S, SemanticTier
from .sse import SSEParser, StreamAssembler, replay_chunks
from .upstream import Upstream, response_headers
from .verifier import VerifierService

log = logging.getLogger(__name__)

SUBPATHS: dict[Endpoint, str] = {"chat": "chat/completions", "completions": "completions"}
ID_PREFIX: dict[Endpoint, str] = {"chat": "chatcmpl-", "completions": "cmpl-"}
HIT_FLUSH_S = 0.5
"""How often hit counts gathered in memory are written to Redis."""


@dataclass(frozen=True, kw_only=True)
class Hit:
    """Why a request was answered from the cache."""

    entry: Entry
    tier: str
    """`exact` or `semantic`."""
    similarity: float
    threshold: float | None = None
    verifier_score: float | None = None
    """The verifier's probability that one answer serves both (1.0: the same question, not
    asked); None where it did not run."""


@dataclass(kw_only=True)
class Lookup:
    """Everything the pipeline decided about one cacheable request."""

    req: ParsedRequest
    directives: Directives
    scope: Scope
    entry_id: str
    request_id: str
    vector: Any = None
    """The query's embedding, once computed (reused by the write-back)."""
    bypass_reason: str | None = None
    best_similarity: float | None = None
    """Closest candidate the semantic tier saw, hit or not (for explaining misses)."""
    threshold: float | None = None
    checks_fired: tuple[str, ...] = ()
    """Checks that stopped the best candidate (for explaining misses)."""
    verifier_score: float | None = None
    """The verifier's score of the candidate it judged (for explaining misses)."""
    turned_down: tuple[Entry, float, float] | None = None
    """(entry, similarity, default threshold) of a candidate that only its adaptive threshold
    kept from being served, picked for a sampled check once the upstream has answered."""

    def event(self, outcome: str, started: float, **fields: Any) -> RequestEvent:
        return RequestEvent(
            request_id=self.request_id, endpoint=self.req.endpoint, model=self.req.model,
            tenant=self.scope.tenant, outcome=outcome, stream=self.req.stream,
            latency_s=time.perf_counter() - started, reason=self.bypass_reason,
            similarity=self.best_similarity, threshold=self.threshold,
            query=(self.req.query_text or "")[:200], **fields,
        )


class CacheService:
    """Owns the pipeline's collaborators and the write-back tasks in flight."""

    def __init__(
        self, settings: Settings, store: Store, upstream: Upstream, observer: Observer,
        runtime: RuntimeState | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.observer = observer
        self.metrics: Metrics = observer.metrics
        self.semantic: SemanticTier | None = None
        """Set once the semantic tier has loaded; None: exact tier only."""
        self.verifier: VerifierService | None = None
        """Set once the verifier has loaded (with `cache.verifier` on)."""
        self.runtime = runtime
        """Settings changed at run time through the admin API (shared by replicas via Redis)."""
        self.adaptive = AdaptiveThresholds(store, max_wrong_rate=settings.cache.max_wrong_rate,
                                           scope_ttl_s=settings.cache.max_ttl_s)
        """Observations of semantic hits and the per-entry and per-scope thresholds they give."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_hits: dict[str, tuple[int, float]] = {}

    # background work --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait for write-backs in flight (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        await self.flush_hits()

    # the pipeline -----------------------------------------------------------------------

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        req = parse_request(endpoint, await read_json(request, self.settings.server.max_body_bytes))
        directives = parse_directives(request.headers, self.settings.cache)
        tenant = tenant_of(request.headers.get("Authorization"), self.settings.cache)
        scope = scope_of(req, tenant, directives.namespace)
        lookup = Lookup(req=req, directives=directives, scope=scope, entry_id=entry_id(scope, req),
                        request_id=request_id(request))
        if not cacheable(req, self.settings.cache):
            lookup.bypass_reason = "not-cacheable"
        elif not directives.no_cache:
            hit = await self.find(lookup)
            if hit is not None:
                return await self._serve_hit(request, lookup, hit, started)
        return await self._finish(request, lookup, started)

    async def find(self, lookup: Lookup) -> Hit | None:
        """Exact tier, then semantic tier; None on a miss, with a bypass reason set if the
        cache itself failed."""
        try:
            entry = await self.store.get(lookup.entry_id)
        except StoreError:
            lookup.bypass_reason = "redis-unavailable"
            return None
        if entry is not None and entry.scope == lookup.scope.id and fresh(entry, lookup.directives):
            return Hit(entry=entry, tier="exact", similarity=1.0)
        semantic, text = self.semantic, self._semantic_text(lookup)
        if semantic is None or text is None:
            return None  # non-text parts, huge prompts and a warming tier: exact tier alone
        try:
            lookup.vector = await semantic.embed(text)
        except EmbeddingError as e:
            lookup.bypass_reason = "encoder-busy" if isinstance(e, QueueFullError) else "encoder-unavailable"
            return None
        return await self._semantic_hit(semantic, lookup)

    def _semantic_text(self, lookup: Lookup) -> str | None:
        """The text matched by meaning: the last user message's, unless it has other parts
        (protocol.py) or is longer than `cache.semantic_max_chars` (said on the miss)."""
        text = lookup.req.query_text
        if text is not None and len(text) > self.settings.cache.semantic_max_chars:
            lookup.checks_fired = ("too-long",)
            return None
        return text

    def threshold_for(self, lookup: Lookup) -> float:
        # 0 is a valid threshold (serve the nearest entry), so only fall back on None.
        if lookup.directives.threshold is not None:
            return lookup.directives.threshold
        return self.default_threshold()

    def default_threshold(self) -> float:
        """Where a lookup without its own X-Semcache-Threshold starts, before adaptation: the
        verifier's floor once it is loaded (it decides in its band, so the floor drops to
        where it may rescue), else the run-time or the configured threshold."""
        if self.settings.cache.verifier and self.verifier is not None:
            return self.settings.cache.verifier_floor
        if self.runtime is not None and self.runtime.threshold is not None:
            return self.runtime.threshold
        return self.settings.cache.threshold

    async def _semantic_hit(self, semantic: SemanticTier, lookup: Lookup) -> Hit | None:
        default = self.threshold_for(lookup)
        # A request that names its own X-Semcache-Threshold takes the similarity alone (0: the
        # nearest); every other lookup adapts: its scope's threshold (in memory), then each
        # candidate's own (from the observations its HGETALL brings: no extra round trip).
        explicit = lookup.directives.threshold is not None
        scope_t = lookup.threshold = (
            default if explicit else self.adaptive.scope_threshold(lookup.scope.id, default))
        floor = min(default, scope_t)
        candidates = await semantic.search(lookup.scope.id, lookup.vector, self.settings.cache.top_k)
        verified = False
        for candidate, similarity in candidates:  # best first
            if lookup.best_similarity is None:
                lookup.best_similarity = similarity
            if similarity < floor:
                break
            try:
                entry = await self.store.get(candidate)
            except StoreError:
                lookup.bypass_reason = "redis-unavailable"
                return None
            if entry is None:
                semantic.index.remove(candidate)  # expired or evicted: its vector goes too
                continue
            if entry.scope != lookup.scope.id or not fresh(entry, lookup.directives):
                continue
            threshold = scope_t if explicit else self.adaptive.entry_threshold(entry, scope_t, default)
            if similarity < threshold:  # the evidence on this entry or its scope asks for more
                if (similarity >= default and lookup.turned_down is None
                        and random.random() < self._check_rate(lookup.scope.id)):
                    lookup.turned_down = (entry, similarity, default)
                continue
            # One verifier run per lookup (~4-5 ms on a 2-core CPU) bounds what a miss costs;
            # a weaker candidate the best one's verdict did not clear is not worth another.
            serve, score, fired = await self._judge(semantic, lookup, entry, similarity, threshold,
                                                    may_verify=not verified)
            if fired and not lookup.checks_fired:
                lookup.checks_fired = fired
            if score is not None:
                verified, lookup.verifier_score = True, score
            if serve:
                return Hit(entry=entry, tier="semantic", similarity=similarity,
                           threshold=threshold, verifier_score=score)
        return None

    async def _judge(self, semantic: SemanticTier, lookup: Lookup, entry: Entry,
                     similarity: float, threshold: float, *, may_verify: bool = True,
                     ) -> tuple[bool, float | None, tuple[str, ...]]:
        """Whether to serve one candidate at `threshold`: the decision `semcache eval`
        measures (proxy/decision.py). (serve, the verifier's score or None where it did not
        run, what stopped it: the checks that fired, or "too-long"). A candidate in the
        verifier's band is not served unless it was scored, so may_verify=False (its run for
        this lookup spent) turns it down."""
        cache = self.settings.cache
        query = lookup.req.query_text or ""
        fired = run_checks(query, entry.query,
                           () if lookup.directives.threshold is not None else cache.checks)
        score = None
        if not fired and self._verifying(lookup) and needs_verifier(
                similarity, threshold, cache.verify_below):
            if not may_verify:
                return False, None, fired
            score = await self._verify(lookup, entry)
        # No verifier read them and the encoder cut one off: what differs past its window
        # nobody has seen (two such prompts embed identically). Fail closed.
        read_whole = score is not None or bool(fired) or (
            semantic.reads_whole(entry.query) and semantic.reads_whole(query))
        if not read_whole:
            fired = ("too-long",)
        return decide(similarity, threshold, score, fired, verifier_min=cache.verifier_min,
                      read_whole=read_whole), score, fired

    def _verifying(self, lookup: Lookup) -> bool:
        """Verifier on and loaded, and the client did not pick its own threshold (while it
        loads, the configured threshold and the checks decide alone)."""
        return (self.settings.cache.verifier and self.verifier is not None
                and lookup.directives.threshold is None)

    async def _verify(self, lookup: Lookup, entry: Entry) -> float | None:
        """The verifier's score for a candidate the caller found in its band; None while the
        verifier is off or not loaded, or the client chose its own threshold."""
        if not self._verifying(lookup):
            return None
        assert self.verifier is not None
        try:
            scores = await self.verifier.score([(entry.query, lookup.req.query_text or "")])
        except Exception:  # a broken verifier must cost a miss, never a wrong hit
            log.exception("verifier failed")
            return 0.0
        return float(scores[0])

    async def _finish(self, request: web.Request, lookup: Lookup, started: float) -> web.StreamResponse:
        """Forward a miss or a bypass; store the answer of a miss unless told not to."""
        req = lookup.req
        outcome = "bypass" if lookup.bypass_reason else "miss"
        headers = {"X-Semcache": outcome, "X-Request-Id": lookup.request_id}
        if lookup.bypass_reason:
            headers["X-Semcache-Reason"] = lookup.bypass_reason
        if lookup.best_similarity is not None:
            headers["X-Semcache-Similarity"] = f"{lookup.best_similarity:.4f}"
        if lookup.checks_fired:
            headers["X-Semcache-Checks"] = ",".join(lookup.checks_fired)
        if lookup.verifier_score is not None:
            headers["X-Semcache-Verifier"] = f"{lookup.verifier_score:.4f}"
        store = outcome == "miss" and not lookup.directives.no_store
        forward = self._forward_stream if req.stream else self._forward
        status = 502
        try:
            response = await forward(request, req, lookup if store else None, headers,
                                     check=lookup if lookup.turned_down is not None else None)
            status = response.status
        except ProxyError as e:
            status = e.status
            raise
        finally:
            self.observer.emit(lookup.event(outcome, started, status=status))
        return response

    # hits -------------------------------------------------------------------------------

    async def _serve_hit(
        self, request: web.Request, lookup: Lookup, hit: Hit, started: float
    ) -> web.StreamResponse:
        req, entry = lookup.req, hit.entry
        outcome = f"hit-{hit.tier}"
        body = orjson.loads(entry.response)
        body["id"] = ID_PREFIX[req.endpoint] + uuid.uuid4().hex
        body["created"] = int(time.time())
        headers = {
            "X-Semcache": outcome,
            "X-Request-Id": lookup.request_id,
            "X-Semcache-Entry": entry.id,
            "X-Semcache-Similarity": f"{hit.similarity:.4f}",
            "Age": str(int(entry.age())),
        }
        if hit.threshold is not None:
            headers["X-Semcache-Threshold"] = f"{hit.threshold:.4f}"
        if hit.verifier_score is not None:
            headers["X-Semcache-Verifier"] = f"{hit.verifier_score:.4f}"
        if req.stream:
            response = web.StreamResponse(
                headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            events = replay_chunks(body, req.endpoint, include_usage=req.include_usage)
            try:
                await response.write(b"".join(events))
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client left; nothing to clean up on a replay
        else:
            response = web.Response(body=orjson.dumps(body), content_type="application/json",
                                    headers=headers)
        self._note_hit(entry)
        if (hit.tier == "semantic" and lookup.directives.threshold is None
                and random.random() < self._check_rate(lookup.scope.id)):
            self.spawn(self._check_hit(CIMultiDict(request.headers), lookup, hit))
        usage = body.get("usage") or {}
        lookup.best_similarity, lookup.threshold = hit.similarity, hit.threshold
        self.observer.emit(lookup.event(
            outcome, started, entry_id=entry.id, age_s=entry.age(),
            prompt_tokens_saved=_int(usage.get("prompt_tokens")),
            completion_tokens_saved=_int(usage.get("completion_tokens")),
            upstream_s_saved=entry.upstream_s,
        ))
        return response

    def _note_hit(self, entry: Entry) -> None:
        # Counted in memory and written by flush_hits in one pipeline: a Redis round trip
        # per hit cost a fifth of the exact-hit throughput (loadtest/results/proxy_*.json).
        count, _ = self._pending_hits.get(entry.id, (0, 0.0))
        self._pending_hits[entry.id] = (count + 1, time.time())

    async def flush_hits(self) -> None:
        """Write the hit counts gathered since the last flush (called every HIT_FLUSH_S)."""
        hits, self._pending_hits = self._pending_hits, {}
        try:
            await self.store.record_hits(hits)
        except StoreError:
            pass  # lost hit counts are not worth failing anything for

    # sampled verification -----------------------------------------------------------------

    def _check_rate(self, scope: str) -> float:
        """Share of the semantic candidates the un-adapted decision would serve that are
        checked against the upstream's answer: `cache.verify_sample`, and every one while the
        scope has too few observations for its pool to count (with checks on at all)."""
        rate = self.settings.cache.verify_sample
        if rate > 0 and self.adaptive.pool_size(scope) < MIN_EVIDENCE:
            return 1.0
        return rate

    async def _check_hit(self, headers: CIMultiDict[str], lookup: Lookup, hit: Hit) -> None:
        """A served hit, off the response path: ask the upstream too (non-streaming)."""

        async def upstream_answer() -> Any:
            req = lookup.req
            body = {k: v for k, v in req.body.items() if k not in ("stream", "stream_options")}
            upstream = await self.upstream.send("POST", SUBPATHS[req.endpoint], headers,
                                                orjson.dumps(body))
            try:
                raw = await upstream.read()
            finally:
                upstream.release()
            return orjson.loads(raw) if upstream.status == 200 else None

        await self._record_check("hit", hit.entry, hit.similarity, upstream_answer())

    async def _check_miss(self, lookup: Lookup, answer: bytes) -> None:
        """A candidate turned down by its adaptive threshold alone: had the un-adapted
        decision served it, would that have been right? The upstream has just answered the
        miss, so this costs no upstream call; it keeps the observations a fair sample of
        everything above the default threshold, not only of what the adapted one serves."""
        assert lookup.turned_down is not None
        entry, similarity, default = lookup.turned_down

        async def answer_if_served() -> Any:
            semantic = self.semantic
            if semantic is None:
                return _NOT_SERVED
            serve, _, _ = await self._judge(semantic, lookup, entry, similarity, default)
            return orjson.loads(answer) if serve else _NOT_SERVED

        await self._record_check("miss", entry, similarity, answer_if_served())

    async def _record_check(self, lookup_kind: str, entry: Entry, similarity: float,
                            fresh_answer: Coroutine[Any, Any, Any]) -> None:
        """Compare the upstream's answer (None: no usable one) with the entry's and record
        the outcome as an observation. Any failure costs a log line and a metric, nothing
        else."""
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
            await self.adaptive.observe(entry, similarity, correct)
        except Exception as e:  # noqa: BLE001 - a background check must never break anything
            verifications.labels(lookup_kind, "failed").inc()
            log.warning("check of entry %s failed: %s: %s", entry.id, type(e).__name__, e)

    async def _same_answer(self, fresh: Any, entry: Entry) -> bool | None:
        """Whether two answers say the same: normalised texts equal, or the encoder's cosine
        of them at least `cache.answer_similarity` (None: nothing to compare)."""
        fresh_text = answer_text(fresh)
        cached_text = answer_text(orjson.loads(entry.response))
        if not fresh_text or not cached_text:
            return None
        if normalise(fresh_text) == normalise(cached_text):
            return True
        semantic = self.semantic
        if semantic is None:
            return None
        a, b = await semantic.embed(fresh_text), await semantic.embed(cached_text)
        return float(a @ b) >= self.settings.cache.answer_similarity

    # misses -----------------------------------------------------------------------------

    async def _forward(
        self, request: web.Request, req: ParsedRequest, lookup: Lookup | None,
        headers: dict[str, str], check: Lookup | None = None,
    ) -> web.Response:
        sent = time.perf_counter()
        upstream = await self._send(request, req)
        try:
            body = await upstream.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            self.metrics.upstream_errors.labels("timeout").inc()
            raise UpstreamTimeoutError("the upstream did not answer in time") from e
        except aiohttp.ClientError as e:
            self.metrics.upstream_errors.labels("broken").inc()
            raise UpstreamUnreachableError("the upstream connection broke") from e
        finally:
            upstream.release()
        elapsed = time.perf_counter() - sent
        self.metrics.upstream_latency.observe(elapsed)
        if upstream.status != 200:
            self.metrics.upstream_errors.labels(str(upstream.status)).inc()
        else:
            if lookup is not None:
                self.spawn(self._write_back(lookup, body, elapsed))
            if check is not None:
                self.spawn(self._check_miss(check, body))
        out_headers = response_headers(upstream.headers)
        out_headers.update(headers)
        return web.Response(status=upstream.status, body=body, headers=out_headers)

    async def _forward_stream(
        self, request: web.Request, req: ParsedRequest, lookup: Lookup | None,
        headers: dict[str, str], check: Lookup | None = None,
    ) -> web.StreamResponse:
        sent = time.perf_counter()
        upstream = await self._send(request, req)
        is_sse = upstream.content_type == "text/event-stream"
        if upstream.status != 200 or not is_sse:
            # An error (or an upstream that ignored `stream`) is relayed whole, never stored.
            upstream_headers = dict(upstream.headers)
            try:
                body = await upstream.read()
            except (TimeoutError, aiohttp.ClientError) as e:
                raise UpstreamUnreachableError("the upstream connection broke") from e
            finally:
                upstream.release()
            self.metrics.upstream_errors.labels(str(upstream.status)).inc()
            out_headers = response_headers(upstream_headers)
            out_headers.update(headers)
            return web.Response(status=upstream.status, body=body, headers=out_headers)
        response = web.StreamResponse(status=200, headers={**response_headers(upstream.headers),
                                                           **headers})
        await response.prepare(request)
        parser, assembler = SSEParser(), StreamAssembler(req.endpoint)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                for payload in parser.feed(chunk):
                    assembler.feed(payload)
            await response.write_eof()
        except ConnectionResetError:
            # The client left: stop generating upstream (closing the connection cancels it
            # on servers that watch for disconnects) and store nothing.
            upstream.close()
            self.metrics.writes.labels("client-disconnected").inc()
            return response
        except (TimeoutError, aiohttp.ClientError):
            # The upstream broke mid-stream: the status is already sent, so cut the client's
            # connection too; the partial answer is not stored.
            upstream.close()
            self.metrics.upstream_errors.labels("broken-stream").inc()
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            upstream.release()
        elapsed = time.perf_counter() - sent
        self.metrics.upstream_latency.observe(elapsed)
        result = assembler.result()
        if check is not None and result is not None:
            self.spawn(self._check_miss(check, orjson.dumps(result)))
        if lookup is not None and result is not None:
            self.spawn(self._write_back(lookup, orjson.dumps(result), elapsed))
        elif lookup is not None:
            self.metrics.writes.labels("incomplete-stream").inc()
        return response

    async def _send(self, request: web.Request, req: ParsedRequest) -> aiohttp.ClientResponse:
        try:
            return await self.upstream.send(
                "POST", SUBPATHS[req.endpoint], request.headers, orjson.dumps(req.body),
                request.query_string,
            )
        except UpstreamTimeoutError:
            self.metrics.upstream_errors.labels("timeout").inc()
            raise
        except UpstreamUnreachableError:
            self.metrics.upstream_errors.labels("unreachable").inc()
            raise

    async def _write_back(self, lookup: Lookup, body: bytes, upstream_s: float) -> None:
        if len(body) > self.settings.cache.max_entry_bytes:
            self.metrics.writes.labels("too-large").inc()
            return
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.metrics.writes.labels("not-json").inc()
            return
        if not isinstance(parsed, dict) or not parsed.get("choices"):
            self.metrics.writes.labels("not-an-answer").inc()
            return
        await self._ensure_vector(lookup)
        entry = self.make_entry(lookup, body, upstream_s)
        try:
            await self.store.put(entry)
        except StoreError:
            self.metrics.writes.labels("failed").inc()
            return
        self.metrics.writes.labels("stored").inc()

    async def _ensure_vector(self, lookup: Lookup) -> None:
        """Embed the question if the lookup did not (no-cache, or the tier was warming)."""
        text = self._semantic_text(lookup)
        if lookup.vector is not None or text is None:
            return
        if not (self.settings.cache.semantic and self.settings.cache.enabled):
            return
        for _ in range(int(WRITE_WAIT_S * 10)):
            if self.semantic is not None:
                break
            await asyncio.sleep(0.1)
        if self.semantic is None:
            return  # stored exact-only; still served by the exact tier
        try:
            lookup.vector = await self.semantic.embed(text)
        except EmbeddingError:
            self.metrics.writes.labels("no-vector").inc()

    def make_entry(self, lookup: Lookup, body: bytes, upstream_s: float) -> Entry:
        req = lookup.req
        vector = lookup.vector
        return Entry(
            id=lookup.entry_id,
            scope=lookup.scope.id,
            tenant=lookup.scope.tenant,
            namespace=lookup.scope.namespace,
            endpoint=req.endpoint,
            model=req.model,
            query=req.query_text or orjson.dumps(req.query).decode(),
            response=body,
            created=time.time(),
            ttl_s=lookup.directives.ttl_s or self.settings.cache.ttl_s,
            embedding=b"" if vector is None else vector.astype("float32").tobytes(),
            upstream_s=upstream_s,
        )


_NOT_SERVED = object()
"""A checked candidate that the un-adapted decision would not have served either."""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def request_id(request: web.Request) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return "req-" + uuid.uuid4().hex


def fresh(entry: Entry, directives: Directives) -> bool:
    return directives.max_age is None or entry.age() <= directives.max_age


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type")
    if content_type is not None:
        mime = content_type.split(";")[0].strip().lower()
        if mime != "application/json" and not mime.endswith("+json"):
            raise UnsupportedMediaTypeError(
                f"unsupported content type {mime!r}; send application/json",
                code="unsupported_media_type",
            )
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(
            f"request body is {request.content_length} bytes; the limit is {limit}",
            code="body_too_large",
        )
    raw = await request.read()  # bounded by the application's client_max_size
    if not raw:
        raise BadRequestError("request body is empty", code="invalid_json")
    return parse_json_body(raw)
