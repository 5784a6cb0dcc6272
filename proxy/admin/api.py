"""The admin JSON API (/admin/api/...), the dashboard (/admin) and their background work.

Who may call it: admin/auth.py. The dashboard page itself holds no data and is served to
anyone; it calls the API with the token the operator gives it.

What this module owns in the application (`admin_ctx`): the shared run-time settings
(`RuntimeState`, under `resources.RUNTIME`), the per-minute series in Redis (a sink subscribed to
the Observer), the cache inventory (entry count, memory) and the scrape-time collector that
exports the embedding service's and the index's figures to /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from semcache.index.connect import REDIS_ERRORS
from semcache.index.keys import SHARDS
from semcache.index.store import Entry, Store

from .. import resources as state
from ..errors import BadRequestError, NotFoundError
from ..events import RequestEvent
from ..judge import Ask
from ..metrics import Inventory, Metrics, StateCollector
from ..pipeline.service import SERVICE
from ..prices import Pricing
from ..runtime import InvalidThresholdError, Periodic, RuntimeState
from ..tenants import Tenancy
from .auth import AdminUnavailableError, admin_api
from .timeseries import RETENTION_MINUTES, TimeSeries, minute_summary, window_summary

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
ENTRY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SUMMARY_FIELDS = ("scope", "tenant", "namespace", "endpoint", "model", "query", "created", "ttl_s",
                  "hits", "last_hit", "upstream_s")
SCAN_BATCH = 500
"""Keys asked of Redis per SCAN step (a hint: Redis may return more or fewer)."""
MAX_SCAN_PER_CALL = 20_000
"""Keys one listing call examines at most; past it the client continues with `cursor`, so
a search never holds Redis or the event loop for long."""
INVENTORY_SCAN_LIMIT = 200_000
"""Entries counted at most per inventory pass; past it the count is reported as a lower bound."""
INVENTORY_REFRESH_S = 30.0
"""How often the inventory is re-measured for /metrics (the dashboard refreshes it on demand)."""
INVENTORY_MAX_AGE_S = 5.0
"""How old an inventory the stats endpoint accepts before measuring again."""
FEEDBACK_LOG = 1000
"""Hit reports kept in `Keys.feedback` for the operator to read."""


def reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


# application state ------------------------------------------------------------------------


class InventoryProbe:
    """Measures what the cache holds in Redis; one measurement at a time, cached."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.latest: Inventory | None = None
        self._lock = asyncio.Lock()

    async def get(self, max_age_s: float) -> Inventory:
        async with self._lock:
            if self.latest is None or time.time() - self.latest.at > max_age_s:
                self.latest = await self._measure()
            return self.latest

    async def _measure(self) -> Inventory:
        client = self.store.client
        count, complete = 0, True
        sample: list[Any] = []
        # On a cluster scan_iter walks every master in turn.
        async for key in client.scan_iter(match=self.store.keys.all_entries_pattern, count=1000):
            count += 1
            if len(sample) < 20:
                sample.append(key)
            if count >= INVENTORY_SCAN_LIMIT:
                complete = False
                break
        pipe = client.pipeline(transaction=False)
        for key in sample:
            pipe.memory_usage(key)
        sizes = [s for s in await pipe.execute() if s] if sample else []
        if self.store.cluster:  # {node: INFO} of each master; DBSIZE is summed over them
            infos = await client.info("memory", target_nodes=client.PRIMARIES)
            used = sum(int(i.get("used_memory", 0)) for i in infos.values())
        else:
            used = int((await client.info("memory")).get("used_memory", 0))
        return Inventory(
            entries=count, entry_bytes=int(sum(sizes) / len(sizes) * count) if sizes else 0,
            used_memory=used, keys=int(await client.dbsize()),
            complete=complete, at=time.time(),
        )

    async def refresh(self) -> None:
        await self.get(INVENTORY_MAX_AGE_S)

    def invalidate(self) -> None:
        """Forget the last measurement (after a deletion), so the next stats call measures."""
        self.latest = None


@dataclass(kw_only=True)
class AdminState:
    series: TimeSeries
    pricing: Pricing
    inventory: InventoryProbe


ADMIN = web.AppKey("admin", AdminState)


def component(app: web.Application, name: str) -> Any:
    """An optional part of the semantic tier ("embeddings" or "index"), None while absent."""
    semantic = app[state.SEMANTIC]
    return {"embeddings": semantic.embeddings, "index": semantic.index}[name]


def record_event(admin: AdminState, metrics: Metrics, event: RequestEvent) -> None:
    """The Observer sink: prices a hit and queues the event for the per-minute series."""
    cost = 0.0
    if event.outcome.startswith("hit-"):
        cost = admin.pricing.cost(event.model, event.prompt_tokens_saved, event.completion_tokens_saved)
        metrics.cost_saved.inc(cost)
    admin.series.record(event, cost)


async def admin_ctx(app: web.Application) -> AsyncIterator[None]:
    """Opens what the admin API and /metrics need; runs after the Redis context."""
    settings, store, metrics = app[state.SETTINGS], app[state.STORE], app[state.METRICS]
    runtime = RuntimeState(store.client, prefix=settings.redis.key_prefix)
    with contextlib.suppress(*REDIS_ERRORS):
        await runtime.refresh()  # a threshold set before this replica started applies at once
    app[state.RUNTIME] = runtime
    admin = AdminState(
        series=TimeSeries(store.client, prefix=settings.redis.key_prefix),
        pricing=Pricing(settings.costs.price_per_1k_prompt, settings.costs.price_per_1k_completion,
                        # a local model costs nothing per token: no list prices for it
                        builtin=settings.costs.builtin_prices
                        and settings.upstream.base_url != "bundled"),
        inventory=InventoryProbe(store),
    )
    app[ADMIN] = admin
    app[state.OBSERVER].subscribe(functools.partial(record_event, admin, metrics))
    collector = StateCollector(
        embeddings=lambda: component(app, "embeddings"), index=lambda: component(app, "index"),
        inventory=lambda: admin.inventory.latest,
    )
    metrics.registry.register(collector)
    runtime.start()
    admin.series.start()
    inventory = Periodic(INVENTORY_REFRESH_S, admin.inventory.refresh)
    inventory.start()
    try:
        yield
    finally:
        await inventory.stop()
        await runtime.stop()
        await admin.series.stop()
        metrics.registry.unregister(collector)


# request helpers --------------------------------------------------------------------------


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as e:
        raise BadRequestError("request body is not valid JSON", code="invalid_json") from e
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object", code="invalid_json")
    return body


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise BadRequestError(f"{name} must be an integer", param=name) from e
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be between {low} and {high}", param=name)
    return value


def checked_id(entry_id: str, param: str = "id") -> str:
    if not ENTRY_ID.match(entry_id):
        raise BadRequestError("not an entry id", param=param, code="invalid_entry_id")
    return entry_id


def entry_json(entry: Entry, ttl_left_s: float | None, *, full: bool) -> dict[str, Any]:
    now = time.time()
    body: dict[str, Any] = {
        "id": entry.id, "scope": entry.scope, "tenant": entry.tenant, "namespace": entry.namespace,
        "endpoint": entry.endpoint, "model": entry.model, "query": entry.query,
        "created": entry.created, "age_s": entry.age(now), "ttl_s": entry.ttl_s,
        "ttl_left_s": ttl_left_s, "hits": entry.hits, "last_hit": entry.last_hit or None,
        "upstream_s": entry.upstream_s, "embedding_dim": len(entry.embedding) // 4,
    }
    if full:
        try:
            body["response"] = orjson.loads(entry.response)
        except orjson.JSONDecodeError:
            body["response"] = entry.response.decode(errors="replace")
        body["extra"] = entry.extra
    return body


def _float(raw: bytes | None, default: float = 0.0) -> float:
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        return default


def summary_json(entry_id: str, values: list[bytes | None], pttl: int) -> dict[str, Any]:
    f = dict(zip(SUMMARY_FIELDS, values, strict=True))
    text = {k: (f[k] or b"").decode(errors="replace") for k in
            ("scope", "tenant", "namespace", "endpoint", "model", "query")}
    created = _float(f["created"])
    return {
        "id": entry_id, **text, "created": created, "age_s": max(0.0, time.time() - created),
        "ttl_s": int(_float(f["ttl_s"])), "ttl_left_s": pttl / 1000 if pttl >= 0 else None,
        "hits": int(_float(f["hits"])), "last_hit": _float(f["last_hit"]) or None,
        "upstream_s": _float(f["upstream_s"]),
    }


# stats, series, recent --------------------------------------------------------------------


@admin_api
async def get_stats(request: web.Request) -> web.Response:
    app = request.app
    admin, store = app[ADMIN], app[state.STORE]
    minutes = int_param(request, "minutes", 60, 1, RETENTION_MINUTES)
    points = await admin.series.read(minutes)
    inventory = await admin.inventory.get(INVENTORY_MAX_AGE_S)
    index = component(app, "index")
    embeddings = component(app, "embeddings")
    runtime = app[state.RUNTIME]
    return reply({
        "window": window_summary(points),
        "totals": await admin.series.totals(),
        "inventory": {
            "entries": inventory.entries, "entries_complete": inventory.complete,
            "entry_bytes": inventory.entry_bytes, "redis_used_memory": inventory.used_memory,
            "redis_keys": inventory.keys, "measured_at": inventory.at,
            "index": index.stats() if index is not None and hasattr(index, "stats") else None,
        },
        "top_entries": await top_entries(store, admin.series, int_param(request, "top", 10, 1, 100)),
        "threshold": {
            "runtime": runtime.threshold,
            **threshold_json(request.app),
            "updated_at": runtime.updated_at or None,
        },
        "redis_up": store.available,
        "semantic": embeddings is not None and index is not None,
        "embeddings": embeddings.describe() if hasattr(embeddings, "describe") else None,
        "prices_configured": admin.pricing.configured,
        "now": time.time(),
    })


async def top_entries(store: Store, series: TimeSeries, n: int) -> list[dict[str, Any]]:
    """The most-hit entries still in the cache; ranks of entries that are gone are dropped."""
    ranked = await series.top(n * 2)
    pipe = store.client.pipeline(transaction=False)
    for entry_id, _ in ranked:
        pipe.hmget(store.entry_key(entry_id), *SUMMARY_FIELDS)
        pipe.pttl(store.entry_key(entry_id))
    results = await pipe.execute() if ranked else []
    found: list[Any] = []
    gone: list[Any] = []
    for i, (entry_id, score) in enumerate(ranked):
        values, pttl = results[2 * i], results[2 * i + 1]
        if values[0] is None:
            gone.append(entry_id)
        elif len(found) < n:
            found.append({**summary_json(entry_id, values, pttl), "ranked_hits": int(score)})
    await series.forget(gone)
    return found


@admin_api
async def get_timeseries(request: web.Request) -> web.Response:
    minutes = int_param(request, "minutes", 60, 1, RETENTION_MINUTES)
    points = await request.app[ADMIN].series.read(minutes)
    return reply({"minutes": minutes, "points": [minute_summary(p) for p in points],
                  "window": window_summary(points)})


@admin_api
async def get_recent(request: web.Request) -> web.Response:
    """This replica's latest lookups, newest first (the time series covers all replicas)."""
    limit = int_param(request, "limit", 50, 1, 500)
    recent = list(request.app[state.OBSERVER].recent)[-limit:]
    return reply({"events": [e.to_json() for e in reversed(recent)]})


# entries ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EntryFilter:
    text: str = ""
    tenant: str = ""
    model: str = ""
    namespace: str | None = None

    def matches(self, entry: dict[str, Any]) -> bool:
        return (
            (not self.text or self.text in entry["query"].lower())
            and (not self.tenant or entry["tenant"] == self.tenant)
            and (not self.model or entry["model"] == self.model)
            and (self.namespace is None or entry["namespace"] == self.namespace)
        )


async def scan_entries(
    store: Store, cursor: int, want: int, keep: Callable[[dict[str, Any], bytes | None], bool],
    *, with_embedding: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """Walk the entries shard by shard (ZSCAN of each shard's LRU set, which every entry
    written is in: no SCAN across a cluster's nodes) from `cursor` until `want` entries are
    kept or the per-call budget is spent; returns them and the cursor to continue from (0:
    done). The cursor is the shard's ZSCAN cursor times SHARDS, plus the shard."""
    client = store.client
    fields = (*SUMMARY_FIELDS, "embedding") if with_embedding else SUMMARY_FIELDS
    kept: list[dict[str, Any]] = []
    examined = 0
    shard, zcursor = cursor % SHARDS, cursor // SHARDS
    while True:
        zcursor, members = await client.zscan(store.keys.lru(shard), cursor=zcursor,
                                              count=SCAN_BATCH)
        ids = [m.decode() for m, _ in members]
        examined += len(ids)
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hmget(store.entry_key(entry_id), *fields)
            pipe.pttl(store.entry_key(entry_id))
        results = await pipe.execute() if ids else []
        for i, entry_id in enumerate(ids):
            values, pttl = results[2 * i], results[2 * i + 1]
            if values[0] is None:
                continue  # expired: its id lingers in the LRU set until evicted
            entry = summary_json(entry_id, values[: len(SUMMARY_FIELDS)], pttl)
            if keep(entry, values[-1] if with_embedding else None):
                kept.append(entry)
        if zcursor == 0:
            shard += 1
            if shard == SHARDS:
                return kept, 0
        if len(kept) >= want or examined >= MAX_SCAN_PER_CALL:
            return kept, zcursor * SHARDS + shard


@dataclass(frozen=True)
class PageCursor:
    """Where a listing resumes: just after the entry at (score, id) of the LRU index.

    Entries are listed in the order of the shards' LRU sets (by last use, oldest first, ties by id),
    a total order that survives between calls, so a page ends exactly where its last entry
    is and the next one starts right after it: none is skipped. An entry hit meanwhile moves
    to the end, so it can show up again on a later page, never go missing; SCAN, whose
    batches cannot be resumed half-way, dropped whatever a full page left of its batch.
    """

    score: float
    entry_id: str

    def encode(self) -> str:
        return f"{self.score!r}:{self.entry_id}"

    @classmethod
    def decode(cls, raw: str | None) -> PageCursor | None:
        if not raw:
            return None
        score, _, entry_id = raw.partition(":")
        try:
            value = float(score)
        except ValueError:
            value = float("nan")
        if value != value or not ENTRY_ID.match(entry_id):  # NaN: not a number at all
            raise BadRequestError("not a cursor from this API", param="cursor", code="invalid_cursor")
        return cls(value, entry_id)


async def _lru_after(store: Store, shard: int, after: PageCursor | None, size: int
                     ) -> tuple[list[tuple[float, str]], bool]:
    """The next ids of one shard's LRU set after `after`, as (score, id), and whether the
    set has no more."""
    low, offset = (repr(after.score) if after is not None else "-inf"), 0
    while True:
        batch = await store.client.zrange(store.keys.lru(shard), low, "+inf", byscore=True,
                                          offset=offset, num=size, withscores=True)
        fresh = [(float(sc), m.decode()) for m, sc in batch]
        if after is not None:  # ids at the cursor's own score, up to its id, came before
            fresh = [(sc, m) for sc, m in fresh if (sc, m) > (after.score, after.entry_id)]
        if fresh or len(batch) < size:
            return fresh, len(batch) < size
        offset += len(batch)  # a whole batch of ties at one score: step over it


async def page_entries(
    store: Store, after: PageCursor | None, want: int, keep: Callable[[dict[str, Any]], bool],
) -> tuple[list[dict[str, Any]], PageCursor | None]:
    """Up to `want` kept entries after `after`, and the cursor of the last one examined (None:
    the end). Examines at most MAX_SCAN_PER_CALL ids per call, so a search that keeps few
    entries still answers quickly and goes on from its cursor.

    The LRU sets are per shard (index/keys.py): each round reads the next ids of every shard
    and takes, of their union, as many as the shortest unfinished shard's read: the union of
    each shard's first n holds the first n of all shards, so the order stays global."""
    client = store.client
    size = min(SCAN_BATCH, max(want, 100))
    kept: list[dict[str, Any]] = []
    examined, last = 0, after
    while examined < MAX_SCAN_PER_CALL:
        # Each round starts from the last id examined, the way the next call will, so that a
        # deletion meanwhile cannot shift what comes next.
        reads = await asyncio.gather(*(_lru_after(store, s, last, size) for s in range(SHARDS)))
        union = sorted(item for fresh, _ in reads for item in fresh)
        if not union:
            return kept, None
        unfinished = [len(fresh) for fresh, done in reads if not done]
        take = union[: min(unfinished)] if unfinished else union
        pipe = client.pipeline(transaction=False)
        for _, entry_id in take:
            pipe.hmget(store.entry_key(entry_id), *SUMMARY_FIELDS)
            pipe.pttl(store.entry_key(entry_id))
        results = await pipe.execute()
        for i, (score, entry_id) in enumerate(take):
            examined += 1
            last = PageCursor(score, entry_id)
            values, pttl = results[2 * i], results[2 * i + 1]
            if values[0] is not None:  # else expired: its id lingers in the index until evicted
                entry = summary_json(entry_id, values, pttl)
                if keep(entry):
                    kept.append(entry)
            if len(kept) >= want:
                return kept, last
        if not unfinished and len(take) == len(union):
            return kept, None
    return kept, last


@admin_api
async def list_entries(request: web.Request) -> web.Response:
    q = request.query
    limit = int_param(request, "limit", 50, 1, 500)
    flt = EntryFilter(text=q.get("q", "").lower(), tenant=q.get("tenant", ""), model=q.get("model", ""),
                      namespace=q.get("namespace"))
    store = request.app[state.STORE]
    similar_to = q.get("similar_to", "").strip()
    embeddings = component(request.app, "embeddings")
    if similar_to and embeddings is not None:
        cursor = int_param(request, "cursor", 0, 0, 2**63)
        return reply(await similar_entries(store, embeddings, similar_to, flt, limit, cursor))
    entries, after = await page_entries(store, PageCursor.decode(q.get("cursor")), limit, flt.matches)
    body: dict[str, Any] = {"entries": entries, "cursor": after.encode() if after else None}
    if similar_to:
        body["similar_to_ignored"] = "the embedding service is not running"
    return reply(body)


async def similar_entries(
    store: Store, embeddings: Any, text: str, flt: EntryFilter, limit: int, cursor: int
) -> dict[str, Any]:
    """Entries ranked by cosine similarity of their query to `text` (over one scan budget)."""
    query = np.asarray(await embeddings.embed(text), dtype=np.float32)
    scored: dict[str, float] = {}

    def keep(entry: dict[str, Any], raw: bytes | None) -> bool:
        if not flt.matches(entry) or not raw or len(raw) != query.nbytes:
            return False
        scored[entry["id"]] = float(np.frombuffer(raw, dtype=np.float32) @ query)
        return True

    entries, next_cursor = await scan_entries(store, cursor, MAX_SCAN_PER_CALL, keep, with_embedding=True)
    for entry in entries:
        entry["similarity"] = scored[entry["id"]]
    entries.sort(key=lambda e: e["similarity"], reverse=True)
    return {"entries": entries[:limit], "cursor": str(next_cursor) if next_cursor else None}


@admin_api
async def get_entry(request: web.Request) -> web.Response:
    entry_id = checked_id(request.match_info["id"])
    store = request.app[state.STORE]
    entry = await store.get(entry_id)
    if entry is None:
        raise NotFoundError(f"no entry {entry_id}", code="entry_not_found")
    pttl = await store.client.pttl(store.entry_key(entry_id))
    body = entry_json(entry, pttl / 1000 if pttl >= 0 else None, full=True)
    if SERVICE in request.app:  # its observations and the threshold it must reach now
        service = request.app[SERVICE]
        body["adaptive"] = service.observations.explain(entry, service.judge.base_threshold(
            Ask(text=entry.query, scope=entry.scope)))
    return reply(body)


@admin_api
async def delete_entry(request: web.Request) -> web.Response:
    entry_id = checked_id(request.match_info["id"])
    app = request.app
    if not await remove_entry(app, entry_id):
        raise NotFoundError(f"no entry {entry_id}", code="entry_not_found")
    return reply({"deleted": entry_id})


async def remove_entry(app: web.Application, entry_id: str, scope: str | None = None) -> bool:
    """Delete an entry from Redis and, through the stream, from every replica's index."""
    store = app[state.STORE]
    if scope is None:
        entry = await store.get(entry_id)
        scope = entry.scope if entry is not None else ""
    # The delete event on the stream takes the vector out of every replica's index, this
    # one included; until then a vector whose entry is gone is a miss anyway.
    deleted = await store.delete(entry_id, scope)
    await app[ADMIN].series.forget([entry_id])
    app[ADMIN].inventory.invalidate()
    return deleted


def tenant_for_api_key(api_key: str, tenancy: Tenancy) -> str:
    """The tenant of requests that send `Authorization: Bearer <api_key>`: the proxy's own
    hash (tenants.py), so an operator names the key and never computes the hash."""
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {api_key}"}))
    tenant, unusable = tenancy.resolve(headers, MultiDictProxy(MultiDict()))
    if unusable:
        raise AdminUnavailableError("the tenant secret is not read yet; try again shortly",
                                    code="redis_unavailable")
    return tenant


@admin_api
async def flush(request: web.Request) -> web.Response:
    body = await json_body(request)
    tenant, namespace, api_key = body.get("tenant"), body.get("namespace"), body.get("api_key")
    for name, value in (("tenant", tenant), ("namespace", namespace), ("api_key", api_key)):
        if value is not None and (not isinstance(value, str) or not value):
            raise BadRequestError(f"{name} must be a non-empty string", param=name)
    if tenant is not None and api_key is not None:
        raise BadRequestError("name the tenant or its api_key, not both", param="api_key")
    if api_key is not None:
        tenant = tenant_for_api_key(api_key, request.app[SERVICE].tenancy)
    if tenant is None and namespace is None:
        raise BadRequestError("name a tenant (or its api_key), a namespace, or both",
                              code="nothing_to_flush")
    flt = EntryFilter(tenant=tenant or "", namespace=namespace)
    deleted, cursor = 0, 0
    while True:
        matches, cursor = await scan_entries(request.app[state.STORE], cursor, MAX_SCAN_PER_CALL,
                                             lambda e, _: flt.matches(e))
        for entry in matches:
            deleted += await remove_entry(request.app, entry["id"], entry["scope"])
        if cursor == 0:
            return reply({"deleted": deleted, "tenant": tenant, "namespace": namespace})


# threshold and feedback -------------------------------------------------------------------


@admin_api
async def get_threshold(request: web.Request) -> web.Response:
    return reply(threshold_json(request.app))


@admin_api
async def put_threshold(request: web.Request) -> web.Response:
    body = await json_body(request)
    if "threshold" not in body:
        raise BadRequestError("send {\"threshold\": 0.0-1.0 or null}", param="threshold")
    runtime = request.app[state.RUNTIME]
    try:
        await runtime.set_threshold(body["threshold"], time.time())
    except InvalidThresholdError as e:
        raise BadRequestError(str(e), param="threshold", code="invalid_threshold") from e
    return reply(threshold_json(request.app))


def threshold_json(app: web.Application) -> dict[str, Any]:
    """The run-time threshold, the configured ones, and the bar a request without its own
    X-Semcache-Threshold starts from right now (`applied`: before adaptive evidence)."""
    settings, service = app[state.SETTINGS], app[SERVICE]
    return {**app[state.RUNTIME].to_json(), "configured": settings.judge.threshold,
            "model_floor": settings.judge.model_floor,
            "model_loaded": service.pair_model is not None,
            "applied": service.judge.base_threshold(Ask(text="", scope=""))}


async def resolve_request(app: web.Application, request_id: str) -> tuple[str, float | None] | None:
    """The entry that answered a hit, and at what similarity: this replica's recent events
    first, then Redis."""
    for event in reversed(app[state.OBSERVER].recent):
        if event.request_id == request_id and event.entry_id:
            return event.entry_id, event.similarity
    return await app[ADMIN].series.hit_for_request(request_id)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"{name} must be true or false", param=name)
    return value


@admin_api
async def feedback(request: web.Request) -> web.Response:
    """A client's verdict on a hit: `{"request_id" | "entry_id", "reason", "similarity",
    "correct", "remove"}`.

    A wrong semantic hit (its similarity known from the request id, or given) is recorded as
    an observation: the entry's threshold rises past that similarity, so the near miss is no
    longer served while closer questions still are (unless enough confirmed hits above it
    keep the entry's wrong-hit rate within cache.max_wrong_rate). A wrong exact hit
    (similarity 1), one whose similarity is unknown, or `"remove": true` deletes the entry.
    `"correct": true` records a confirmed hit, evidence that can lower a threshold.
    """
    app = request.app
    body = await json_body(request)
    entry_id, request_id = body.get("entry_id"), body.get("request_id")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequestError("reason must be a string", param="reason")
    correct, remove = _flag(body, "correct"), _flag(body, "remove")
    if correct and remove:
        raise BadRequestError("a hit reported correct is not removed", param="remove")
    similarity = body.get("similarity")
    if similarity is not None and (isinstance(similarity, bool) or not isinstance(similarity, int | float)
                                   or not 0.0 <= similarity <= 1.0):
        raise BadRequestError("similarity must be a number between 0 and 1", param="similarity")
    similarity = float(similarity) if similarity is not None else None
    if isinstance(request_id, str) and request_id and not entry_id:
        found = await resolve_request(app, request_id)
        if found is None:
            raise NotFoundError(f"no hit is known for request {request_id}", code="request_not_found")
        entry_id, known = found
        similarity = known if similarity is None else similarity
    if not isinstance(entry_id, str):
        raise BadRequestError("send entry_id or request_id", code="missing_id")
    checked_id(entry_id, "entry_id")
    if correct and similarity is None:
        raise BadRequestError("a confirmed hit needs its similarity: send its request_id, or "
                              "similarity", param="similarity")
    service = app[SERVICE]
    entry = await app[state.STORE].get(entry_id)
    removed, threshold = False, None
    if correct or not (remove or similarity is None or similarity >= 1.0):
        assert similarity is not None
        updated = await service.observations.observe(entry, similarity, correct) if entry else None
        if updated is None:
            result = "already-gone"
        else:
            threshold = service.observations.explain(updated, service.judge.base_threshold(
                Ask(text=updated.query, scope=updated.scope)))["threshold"]
            result = "confirmed" if correct else ("raised" if threshold > similarity else "recorded")
    else:
        removed = await remove_entry(app, entry_id, entry.scope if entry is not None else "")
        result = "removed" if removed else "already-gone"
    now = time.time()
    app[state.METRICS].feedback.labels(result).inc()
    series = app[ADMIN].series
    if not correct:
        series.record_feedback(now)  # the dashboard counts wrong-hit reports
    report = {"entry_id": entry_id, "request_id": request_id, "reason": reason[:500], "at": now,
              "query": entry.query[:500] if entry is not None else None, "correct": correct,
              "similarity": similarity, "result": result, "threshold": threshold}
    log_key = app[state.STORE].keys.feedback
    pipe = series.client.pipeline(transaction=False)
    pipe.lpush(log_key, orjson.dumps(report))
    pipe.ltrim(log_key, 0, FEEDBACK_LOG - 1)
    await pipe.execute()
    return reply({"entry_id": entry_id, "request_id": request_id, "result": result,
                  "removed": removed, "similarity": similarity, "threshold": threshold})


@admin_api
async def list_feedback(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 50, 1, FEEDBACK_LOG)
    key = request.app[state.STORE].keys.feedback
    raw = await request.app[state.STORE].client.lrange(key, 0, limit - 1)
    return reply({"reports": [orjson.loads(r) for r in raw]})


# the dashboard ----------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "dashboard.html",
                            headers={"Content-Type": "text/html; charset=utf-8",
                                     "Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise NotFoundError(f"no static file {name}")
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": STATIC_FILES[name],
                                                        "Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin", dashboard)
    r.add_get("/admin/", dashboard)
    r.add_get("/admin/static/{name}", static_file)
    r.add_get("/admin/api/stats", get_stats)
    r.add_get("/admin/api/timeseries", get_timeseries)
    r.add_get("/admin/api/recent", get_recent)
    r.add_get("/admin/api/entries", list_entries)
    r.add_get("/admin/api/entries/{id}", get_entry)
    r.add_delete("/admin/api/entries/{id}", delete_entry)
    r.add_post("/admin/api/flush", flush)
    r.add_get("/admin/api/threshold", get_threshold)
    r.add_put("/admin/api/threshold", put_threshold)
    r.add_post("/admin/api/feedback", feedback)
    r.add_get("/admin/api/feedback", list_feedback)
