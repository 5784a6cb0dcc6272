"""Who may use the admin API and read /metrics.

With `server.admin_token` set, every API call needs `Authorization: Bearer <token>`
(compared in constant time), from any address. With no token, the API answers only clients
on the loopback interface, and refuses the rest with 403.

/metrics needs a bearer token once `server.admin_token` or `server.metrics_token` is set
(either one is accepted); with neither it is open, so that a plain Prometheus scrape works.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from semcache.index.connect import REDIS_ERRORS
from semcache.index.store import StoreError

from ..errors import ProxyError, UnauthorizedError
from ..resources import SETTINGS


class AdminForbiddenError(ProxyError):
    status = 403
    type = "permission_error"


class AdminUnavailableError(ProxyError):
    status = 503
    type = "server_error"


def is_loopback(remote: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (also written as an IPv4-mapped IPv6 address)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _bearer(authorization: str | None) -> str | None:
    scheme, _, given = (authorization or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def _matches(given: str, tokens: tuple[str, ...]) -> bool:
    # Every token is compared, in constant time, so the answer's timing tells nothing.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


def authorize(token: str, authorization: str | None, remote: str | None) -> None:
    """Raise unless the caller may use the admin API (see the module docstring)."""
    if token:
        given = _bearer(authorization)
        if given is None:
            raise UnauthorizedError("the admin API needs 'Authorization: Bearer <admin token>'",
                                    code="missing_admin_token")
        if not _matches(given, (token,)):
            raise UnauthorizedError("invalid admin token", code="invalid_admin_token")
        return
    if not is_loopback(remote):
        raise AdminForbiddenError(
            "the admin API answers only loopback clients while server.admin_token is not set",
            code="admin_loopback_only",
        )


def authorize_metrics(admin_token: str, metrics_token: str, authorization: str | None) -> None:
    """Raise unless the caller may read /metrics (see the module docstring)."""
    tokens = tuple(t for t in (metrics_token, admin_token) if t)
    if not tokens:
        return
    given = _bearer(authorization)
    if given is None:
        raise UnauthorizedError("/metrics needs 'Authorization: Bearer <metrics or admin token>'",
                                code="missing_metrics_token")
    if not _matches(given, tokens):
        raise UnauthorizedError("invalid metrics token", code="invalid_metrics_token")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_api(handler: Handler) -> Handler:
    """Checks auth, and turns a Redis failure into a 503 instead of an internal error."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        authorize(request.app[SETTINGS].server.admin_token,
                  request.headers.get("Authorization"), request.remote)
        try:
            return await handler(request)
        except (*REDIS_ERRORS, StoreError) as e:
            raise AdminUnavailableError("redis is unavailable; try again shortly",
                                        code="redis_unavailable") from e

    return wrapped
