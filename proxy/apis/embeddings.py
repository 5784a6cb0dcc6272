"""`POST /v1/embeddings`: exact caching per input item.

Each input text is its own entry, in a scope of tenant, namespace, model and every other
parameter (`dimensions`, `encoding_format`, ...; not `user`). A batch whose items are all
cached is answered from the cache; one with some cached sends only the others upstream (each
distinct text once) and merges the answers in the request's order, `index` by index. An entry
keeps the vector as the request's `encoding_format` returned it (floats, or the base64
string), and that format is in the scope, so a vector is only ever served in the form it was
stored in. Usage: each item's share of the tokens of the upstream call that computed it (a
single input's count exactly; a batch's total split by text length), summed over the items,
so a hit reports what the inputs cost, as a chat hit reports its answer's usage.

Token-array inputs are passed through uncached (`X-Semcache-Reason: token-input`). There is
no semantic tier here: a paraphrase has another vector. Every answer says what the cache did:
`X-Semcache` (`hit-exact` when every item came from the cache, else `miss`),
`X-Semcache-Items-Cached: k/n`, and `X-Semcache-Reason` on a miss or bypass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from semcache.index.store import Entry, Store, StoreError

from ..config import Settings
from ..errors import (
    REQUEST_ID,
    BadRequestError,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
)
from ..events import Observer, RequestEvent
from ..pipeline.admission import Admission
from ..pipeline.forward import json_headers
from ..pipeline.intake import parse_body, read_body
from ..pipeline.lookup import fresh
from ..policy import Directives, Scope, embedding_scope, item_id, parse_directives, split_controls
from ..protocol import CANONICAL_BUDGET, Canonical
from ..tenants import Tenancy
from ..upstream import Upstream, response_headers
from .base import model_of

SUBPATH = "embeddings"
NON_ANSWER_KEYS = frozenset({"model", "input", "user"})
MAX_ITEMS = 2048
"""Inputs of one request cached item by item (OpenAI's own limit); a larger batch passes
through (`too-many-items`)."""

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class Embeddings:
    def __init__(self, settings: Settings, store: Store, upstream: Upstream, tenancy: Tenancy,
                 observer: Observer, admission: Admission, spawn: Spawn) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.tenancy = tenancy
        self.observer = observer
        self.admission = admission
        self.spawn = spawn

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        raw = await read_body(request, self.settings.server)
        async with self.admission.place():
            body, controls = split_controls(await parse_body(raw, self.settings.server))
            model = model_of(body)
            directives = parse_directives(request.headers, self.settings.cache, controls)
            texts, single = _inputs(body.get("input"))
            _check_params(body)
            tenant, reason = self.tenancy.resolve(request.headers, request.rel_url.query)
            canonical = Canonical(CANONICAL_BUDGET)
            params = {k: canonical(v) for k, v in body.items() if k not in NON_ANSWER_KEYS}
            scope = embedding_scope(tenant, directives.namespace, model, params)
            if reason is None:
                if not self.settings.cache.enabled:
                    reason = "not-cacheable"
                elif texts is None:
                    reason = "token-input"
                elif len(texts) > MAX_ITEMS:
                    reason = "too-many-items"
            cached: dict[str, Entry] = {}
            if reason is None and not directives.no_cache:
                assert texts is not None
                try:
                    cached = await self._cached(scope, texts, directives)
                except StoreError:
                    reason = "redis-unavailable"
        event = dict(request_id=request[REQUEST_ID], endpoint="embeddings", model=model,
                     tenant=scope.tenant, stream=False, started=started)
        if reason is not None or texts is None:
            return await self._pass(request, body, reason or "token-input", event)
        missing = list(dict.fromkeys(t for t in texts if t not in cached))
        if not missing:
            return self._hit(texts, cached, model, request[REQUEST_ID], event)
        sent = {**body, "input": missing[0] if single else missing}
        call_started = time.perf_counter()
        status, headers, answer = await self._call(request, sent)
        upstream_s = time.perf_counter() - call_started
        served = sum(t in cached for t in texts)
        miss = {"X-Semcache": "miss", "X-Request-Id": request[REQUEST_ID],
                "X-Semcache-Reason": "no-cache" if directives.no_cache
                else "partial" if cached else "no-entry",
                "X-Semcache-Items-Cached": f"{served}/{len(texts)}"}
        computed = _computed(answer, missing) if status == 200 else None
        if computed is None:  # an error, or an answer that does not fit the request
            self._emit(event, "miss", miss["X-Semcache-Reason"], status=status)
            if status == 200 and sent["input"] != body["input"]:  # cannot be merged
                raise UpstreamUnreachableError("the upstream's embeddings answer does not match "
                                               "the inputs sent", headers=miss)
            return web.Response(status=status, body=answer, headers={**headers, **miss})
        if not directives.no_store:
            self.spawn(self._store(scope, model, computed, directives, upstream_s))
        merged = {t: (e["embedding"], e["tokens"]) for t, e in computed.items()}
        merged.update({t: _stored(e) for t, e in cached.items()})
        parsed = orjson.loads(answer)
        out = _answer(texts, merged, str(parsed.get("model", model)))
        self._emit(event, "miss", miss["X-Semcache-Reason"])
        return web.Response(body=orjson.dumps(out), content_type="application/json",
                            headers={**{k: v for k, v in headers.items()
                                        if k.lower() != "content-type"}, **miss})

    async def _cached(self, scope: Scope, texts: list[str],
                      directives: Directives) -> dict[str, Entry]:
        unique = list(dict.fromkeys(texts))
        entries = await self.store.get_many([item_id(scope, t) for t in unique])
        return {t: e for t, e in zip(unique, entries, strict=True)
                if e is not None and e.scope == scope.id and fresh(e, directives)}

    def _hit(self, texts: list[str], cached: dict[str, Entry], model: str, rid: str,
             event: dict[str, Any]) -> web.Response:
        merged = {t: _stored(e) for t, e in cached.items()}
        stored_model = orjson.loads(cached[texts[0]].response).get("model", model)
        out = _answer(texts, merged, str(stored_model))
        headers = {"X-Semcache": "hit-exact", "X-Request-Id": rid,
                   "X-Semcache-Items-Cached": f"{len(texts)}/{len(texts)}",
                   "Age": str(int(max(e.age() for e in cached.values())))}
        if len(cached) == 1:
            headers["X-Semcache-Entry"] = next(iter(cached.values())).id
        self._emit(event, "hit-exact", None, similarity=1.0,
                   prompt_tokens_saved=out["usage"]["prompt_tokens"],
                   upstream_s_saved=max(e.upstream_s for e in cached.values()))
        return web.Response(body=orjson.dumps(out), content_type="application/json",
                            headers=headers)

    async def _pass(self, request: web.Request, body: dict[str, Any], reason: str,
                    event: dict[str, Any]) -> web.Response:
        """Uncached: the body (without its cache controls) to the upstream, its answer back."""
        status, headers, answer = await self._call(request, body)
        self._emit(event, "bypass", reason, status=status)
        return web.Response(status=status, body=answer, headers={
            **headers, "X-Semcache": "bypass", "X-Semcache-Reason": reason,
            "X-Request-Id": request[REQUEST_ID]})

    async def _call(self, request: web.Request,
                    body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        response = await self.upstream.send("POST", SUBPATH, json_headers(request.headers),
                                            orjson.dumps(body), request.rel_url.raw_query_string)
        try:
            answer = await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeoutError("the upstream did not answer in time") from e
        except aiohttp.ClientError as e:
            raise UpstreamUnreachableError("the upstream connection broke") from e
        finally:
            response.release()
        return response.status, dict(response_headers(response.headers)), answer

    async def _store(self, scope: Scope, model: str, computed: dict[str, dict[str, Any]],
                     directives: Directives, upstream_s: float) -> None:
        cache = self.settings.cache
        for text, item in computed.items():
            entry = Entry(id=item_id(scope, text), scope=scope.id, tenant=scope.tenant,
                          namespace=scope.namespace, endpoint="embeddings", model=model,
                          query=text, response=orjson.dumps(item), created=time.time(),
                          ttl_s=directives.ttl_s or cache.ttl_s, upstream_s=upstream_s)
            if entry.size_bytes() > cache.max_entry_bytes:
                continue
            try:
                await self.store.put(entry)
            except StoreError:
                return
            await asyncio.sleep(0)  # a large batch does not hold the loop

    def _emit(self, event: dict[str, Any], outcome: str, reason: str | None,
              **fields: Any) -> None:
        fields = {k: v for k, v in event.items() if k != "started"} | fields
        self.observer.emit(RequestEvent(
            outcome=outcome, reason=reason,
            latency_s=time.perf_counter() - event["started"], **fields))


def _inputs(value: Any) -> tuple[list[str] | None, bool]:
    """The input texts and whether the input was one string; None for token arrays."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value), False
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value) or all(
                isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return None, False
    raise BadRequestError("'input' is required: a string, an array of strings, or token ids",
                          param="input")


def _check_params(body: dict[str, Any]) -> None:
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise BadRequestError("'encoding_format' must be 'float' or 'base64'",
                              param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise BadRequestError("'dimensions' must be a positive integer", param="dimensions")


def _computed(answer: bytes, missing: list[str]) -> dict[str, dict[str, Any]] | None:
    """Each text sent and what the upstream computed for it: its vector as returned and its
    share of the call's tokens; None if the answer does not have one vector per text."""
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, list) or len(data) != len(missing):
        return None
    by_index: dict[int, Any] = {}
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(missing) or index in by_index \
                or not isinstance(item.get("embedding"), list | str):
            return None
        by_index[index] = item["embedding"]
    usage = parsed.get("usage") or {}
    total = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    shares = _shares(missing, total if isinstance(total, int) else 0)
    model = parsed.get("model")
    return {text: {"embedding": by_index[i], "tokens": shares[i], "model": model}
            for i, text in enumerate(missing)}


def _shares(texts: list[str], total: int) -> list[int]:
    """`total` tokens split over the texts by length, summing to `total` exactly (the
    largest remainders round up)."""
    weights = [max(1, len(t)) for t in texts]
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(texts)), key=lambda i: -(total * weights[i] % whole))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _stored(entry: Entry) -> tuple[Any, int]:
    item = orjson.loads(entry.response)
    return item["embedding"], int(item.get("tokens") or 0)


def _answer(texts: list[str], merged: dict[str, tuple[Any, int]], model: str) -> dict[str, Any]:
    tokens = sum(merged[t][1] for t in texts)
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": merged[t][0]}
                     for i, t in enumerate(texts)],
            "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
