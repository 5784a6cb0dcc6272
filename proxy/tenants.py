"""Tenants: who a request belongs to, from whatever credential it carries.

The tenant is a keyed hash (HMAC-SHA256 under a per-deployment secret) of every credential
the request carries: the headers in `cache.credential_headers` (`Authorization`, Azure's
`api-key`, Anthropic's `x-api-key`, Google's `x-goog-api-key`) and the query parameters in
`cache.credential_params` (`api-key`, `key`), each with its name, so the same key in another
header is another tenant. More credentials can only split tenants, never merge them: a key
in any of these places never crosses to another key. With `cache.tenant_header` set (a header
a trusted app in front of the proxy sets, e.g. one per end user), its value is hashed in as
well, and a request without it counts as anonymous, so that a code path that forgets it
cannot share one API key's cache among the app's users.

A request with no credential is anonymous: by default it bypasses the cache
(`X-Semcache-Reason: anonymous`); `cache.anonymous = "shared"` gives all anonymous requests
one tenant of their own, which no keyed tenant can reach. `cache.shared_across_keys` makes
every request one tenant (a single-owner deployment).

The secret keeps tenant hashes, which entries, the admin API and the dashboard show, from
being tested against guessed keys or header values. `cache.tenant_secret` sets it; otherwise
the first replica to start generates one and keeps it in Redis beside the entries it
protects (`{prefix}tenant-secret`, set only if absent), so every replica on that Redis, and
every restart, agrees. Until it has been read (Redis down at start) requests bypass the
cache, as they would for the outage itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import NamedTuple

import orjson
from multidict import CIMultiDictProxy, MultiDictProxy

from semcache.index.store import Store, StoreError

from .config import CacheSettings

SHARED = "shared"
"""The one tenant of `cache.shared_across_keys`."""
ANONYMOUS = "anonymous"
"""The tenant of requests without a credential under `cache.anonymous = "shared"` (hashes
are hex, so no keyed tenant is ever called this)."""

_SCHEMES = frozenset({"bearer", "basic", "token", "apikey", "key"})
"""Authorization schemes that, alone, carry no credential (`Authorization: Bearer`)."""


class Resolved(NamedTuple):
    tenant: str
    bypass_reason: str | None
    """Why the request may not use the cache at all (`anonymous`, `redis-unavailable`)."""


class Tenancy:
    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self.secret: bytes | None = settings.tenant_secret.encode() or None
        """The HMAC key; None until read from Redis."""
        self._headers = tuple(h.lower() for h in settings.credential_headers)
        self._params = frozenset(p.lower() for p in settings.credential_params)

    async def load_secret(self, store: Store) -> None:
        """Read (or create, once for the whole deployment) the secret kept in Redis; a
        Redis failure leaves it unread for the next try."""
        if self.secret is not None:
            return
        try:
            self.secret = await store.shared_secret(secrets.token_hex(32).encode())
        except StoreError:
            pass

    def resolve(self, headers: CIMultiDictProxy[str], query: MultiDictProxy[str]) -> Resolved:
        if self.settings.shared_across_keys:
            return Resolved(SHARED, None)
        material = credentials(headers, query, self._headers, self._params)
        if self.settings.tenant_header:
            named = [v.strip() for v in headers.getall(self.settings.tenant_header, [])]
            named = [v for v in named if v]
            # Without the header the request is anonymous, whatever key it carries.
            material = material + [["tenant-header", v] for v in named] if named else []
        if not material:
            if self.settings.anonymous == "shared":
                return Resolved(ANONYMOUS, None)
            return Resolved(ANONYMOUS, "anonymous")
        if self.secret is None:
            return Resolved("unknown", "redis-unavailable")
        digest = hmac.new(self.secret, b"tenant\0" + orjson.dumps(material), hashlib.sha256)
        return Resolved(digest.hexdigest()[:32], None)


def credentials(headers: CIMultiDictProxy[str], query: Mapping[str, str] | MultiDictProxy[str],
                header_names: tuple[str, ...], param_names: frozenset[str]) -> list[list[str]]:
    """Every credential of a request as [where, value] pairs, in a fixed order; empty
    values and an Authorization scheme without a token are none."""
    found: list[list[str]] = []
    for name in header_names:
        for value in headers.getall(name, []):
            value = value.strip()
            if value and not (name == "authorization" and value.lower() in _SCHEMES):
                found.append([f"header:{name}", value])
    if param_names:
        params = [[f"param:{k.lower()}", v] for k, v in query.items()
                  if k.lower() in param_names and v.strip()]
        found.extend(sorted(params))
    return found
