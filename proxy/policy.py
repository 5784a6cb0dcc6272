"""Cache policy: what may be looked up or stored, and the scope an answer belongs to.

The scope is the structural isolation boundary. Two requests can share an entry only if they
agree on all of: tenant (proxy/tenants.py), namespace, endpoint, model, every
answer-changing parameter and the conversation before the question. The entry id hashes the
scope with the question, so a lookup can only ever address entries of its own scope.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
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


BODY_CONTROLS = "cache"
"""The body's cache controls, as LiteLLM's users write them (the SDKs' `extra_body`):
`"cache": {"no-cache": true, "no-store": true, "ttl": N, "s-maxage": N, "namespace": "..."}`."""


def split_controls(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The body without its cache controls (what goes upstream and into the key), and the
    controls (None: none given). Anything but an object is refused, not forwarded."""
    if BODY_CONTROLS not in body:
        return body, None
    controls = body[BODY_CONTROLS]
    if not isinstance(controls, dict):
        raise BadRequestError("'cache' must be an object of cache controls (no-cache, "
                              "no-store, ttl, s-maxage, namespace)", param="cache")
    return {k: v for k, v in body.items() if k != BODY_CONTROLS}, controls


def parse_directives(headers: CIMultiDictProxy[str], settings: CacheSettings,
                     controls: dict[str, Any] | None = None) -> Directives:
    """The request's directives from its headers and its body's cache controls
    (`split_controls`), which say the same things: a flag set in either holds; a value
    (ttl, max-age, namespace) given in both must agree."""
    directives = _header_directives(headers, settings)
    return directives if controls is None else _with_controls(directives, controls, settings)


def _with_controls(d: Directives, controls: dict[str, Any], settings: CacheSettings) -> Directives:
    unknown = sorted(set(controls) - {"no-cache", "no-store", "ttl", "s-maxage", "namespace"})
    if unknown:
        raise BadRequestError(f"unknown cache control 'cache.{unknown[0]}' (known: no-cache, "
                              "no-store, ttl, s-maxage, namespace)", param="cache")
    for flag in ("no-cache", "no-store"):
        if not isinstance(controls.get(flag, False), bool):
            raise BadRequestError(f"'cache.{flag}' must be a boolean", param="cache")
    ttl = _int_control(controls, "ttl", 1, settings.max_ttl_s)
    max_age = _int_control(controls, "s-maxage", 0, None)
    namespace = controls.get("namespace")
    if namespace is not None and not (isinstance(namespace, str)
                                      and _NAMESPACE_RE.match(namespace)):
        raise BadRequestError("'cache.namespace' must be 1-128 characters of letters, digits "
                              "and ._:/-", param="cache")
    return replace(
        d,
        no_cache=d.no_cache or controls.get("no-cache", False),
        no_store=d.no_store or controls.get("no-store", False),
        ttl_s=_agree("ttl", "X-Semcache-TTL", d.ttl_s, ttl),
        max_age=_agree("s-maxage", "Cache-Control max-age", d.max_age, max_age),
        namespace=_agree("namespace", "X-Semcache-Namespace", d.namespace or None, namespace)
        or "",
    )


def _int_control(controls: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = controls.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequestError(f"'cache.{name}' must be an integer {bound}", param="cache")
    return value


def _agree(name: str, header: str, from_header: Any, from_body: Any) -> Any:
    if from_header is not None and from_body is not None and from_header != from_body:
        raise BadRequestError(f"'cache.{name}' and the {header} header disagree", param="cache")
    return from_body if from_body is not None else from_header


def _header_directives(headers: CIMultiDictProxy[str], settings: CacheSettings) -> Directives:
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
    material = _dumps([tenant, namespace, req.scope_endpoint or req.endpoint, req.model, req.params,
                       req.context if context is None else context])
    return Scope(id=_hash(b"scope\0" + material)[:32], tenant=tenant, namespace=namespace)


def embedding_scope(tenant: str, namespace: str, model: str, params: dict[str, Any]) -> Scope:
    """The scope of an embeddings request's items: tenant, namespace, model and every other
    parameter (dimensions, encoding_format, ...)."""
    material = _dumps([tenant, namespace, "embeddings", model, params])
    return Scope(id=_hash(b"scope\0" + material)[:32], tenant=tenant, namespace=namespace)


def item_id(scope: Scope, text: str) -> str:
    """The entry of one embeddings input: its text exactly (a space changes a vector)."""
    return _hash(b"item\0" + _dumps([scope.id, text]))[:32]


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
