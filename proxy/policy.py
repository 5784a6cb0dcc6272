"""Cache policy: what may be looked up or stored, and the scope an answer belongs to.

The scope is the structural isolation boundary. Two requests can share an entry only if they
agree on all of: tenant (proxy/tenants.py), namespace, endpoint, model, every
answer-changing parameter and the conversation before the question. The entry id hashes the
scope with the question, so a lookup can only ever address entries of its own scope.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from .config import CacheSettings
from .errors import BadRequestError
from .protocol import ParsedRequest, too_deep

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


@dataclass(frozen=True, kw_only=True)
class Directives:
    """What the client asked of the cache in its request headers."""

    no_cache: bool = False
    """`Cache-Control: no-cache`: skip the lookup, still store the answer."""
    no_store: bool = False
    """`Cache-Control: no-store`: never store the answer."""
    max_age: int | None = None
    """`Cache-Control: max-age=N`: accept only entries younger than N seconds."""
    ttl_s: int | None = None
    """`X-Semcache-TTL`: lifetime of the entry this request writes."""
    threshold: float | None = None
    """`X-Semcache-Threshold`: the similarity bar for a semantic hit (the checks and the
    pair model still decide above it)."""
    similarity_only: bool = False
    """`X-Semcache-Judge: similarity`: the similarity alone decides (no checks, no model)."""
    namespace: str = ""
    """`X-Semcache-Namespace`: narrows the scope within the tenant."""


@dataclass(frozen=True, kw_only=True)
class Scope:
    id: str
    tenant: str
    namespace: str


def parse_directives(headers: CIMultiDictProxy[str], settings: CacheSettings) -> Directives:
    no_cache = no_store = False
    max_age: int | None = None
    for directive in ",".join(headers.getall("Cache-Control", [])).split(","):
        name, _, value = directive.strip().lower().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            max_age = _int_header("Cache-Control max-age", value.strip('" '), 0, None)
    ttl = headers.get("X-Semcache-TTL")
    threshold = headers.get("X-Semcache-Threshold")
    namespace = headers.get("X-Semcache-Namespace", "").strip()
    judge = headers.get("X-Semcache-Judge", "").strip().lower()
    if judge not in ("", "model", "similarity"):
        raise BadRequestError("X-Semcache-Judge must be 'model' or 'similarity'",
                              code="invalid_header")
    if namespace and not _NAMESPACE_RE.match(namespace):
        raise BadRequestError(
            "X-Semcache-Namespace must be 1-128 characters of letters, digits and ._:/-",
            code="invalid_header",
        )
    return Directives(
        no_cache=no_cache,
        no_store=no_store,
        max_age=max_age,
        ttl_s=None if ttl is None else _int_header("X-Semcache-TTL", ttl, 1, settings.max_ttl_s),
        threshold=None if threshold is None else _threshold(threshold),
        similarity_only=judge == "similarity",
        namespace=namespace,
    )


def _int_header(name: str, value: str, low: int, high: int | None) -> int:
    try:
        number = int(value.strip())
    except ValueError as e:
        raise BadRequestError(f"{name} must be an integer", code="invalid_header") from e
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequestError(f"{name} must be {bound}", code="invalid_header")
    return number


def _threshold(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError as e:
        raise BadRequestError("X-Semcache-Threshold must be a number", code="invalid_header") from e
    if not 0.0 <= number <= 1.0:
        raise BadRequestError("X-Semcache-Threshold must be between 0 and 1", code="invalid_header")
    return number


def cacheable(req: ParsedRequest, settings: CacheSettings) -> bool:
    if not settings.enabled:
        return False
    if not settings.cache_nondeterministic:
        # OpenAI's default temperature is 1: only an explicit 0 is deterministic.
        return req.params.get("temperature") == 0
    return True


def scope_of(req: ParsedRequest, tenant: str, namespace: str,
             context: list[Any] | None = None) -> Scope:
    """The scope of a request; `context`: its history's fingerprint (pipeline/chains.py),
    by default the history word for word."""
    material = _dumps([tenant, namespace, req.endpoint, req.model, req.params,
                       req.context if context is None else context])
    return Scope(id=_hash(b"scope\0" + material)[:32], tenant=tenant, namespace=namespace)


def entry_id(scope: Scope, req: ParsedRequest) -> str:
    """The entry's id starts with its scope's first hex digit, which names the Redis shard
    (index/keys.py): every entry of a scope, and the scope's pool, share one hash slot."""
    return scope.id[:1] + _hash(b"entry\0" + _dumps([scope.id, req.query]))[1:32]


def _dumps(material: list[object]) -> bytes:
    # The body passed orjson's nesting limit on its own (protocol.parse_json_body); wrapped
    # in this list, a value at the very limit is one level deeper.
    try:
        return orjson.dumps(material, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as e:
        raise too_deep() from e


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
