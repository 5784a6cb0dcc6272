"""The proxy's errors, mapped to HTTP once, in one middleware, in the OpenAI error shape.

Clients of an OpenAI-compatible API parse `{"error": {"message", "type", "param", "code"}}`,
so every error the proxy itself produces has that shape (on /v1/messages, Anthropic's:
`{"type": "error", "error": {"type", "message"}}`), and the headers every answer of the
proxy carries: `X-Semcache` (`bypass` where the cache was not reached; the pipeline's own
outcome where it was), `X-Semcache-Reason` and `X-Request-Id`. Unexpected exceptions are
logged with their traceback and answered with a generic message: their text never reaches a
client. Errors that aiohttp's HTTP parser finds before any middleware runs are rendered the
same way by `proxy/server.py`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = web.RequestKey("request_id", str)
"""The request's id (the client's X-Request-Id when sane), set by the middleware."""


class ProxyError(Exception):
    """Base of the proxy's errors; each carries the HTTP status, the OpenAI error type and
    the `X-Semcache-Reason` it is reported with."""

    status = 500
    type = "server_error"
    reason = "internal-error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})
        """Headers of the error response, over the defaults (the pipeline adds its own
        X-Semcache outcome to an upstream failure after a lookup)."""


class BadRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"
    reason = "invalid-request"


class PayloadTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"
    reason = "invalid-request"


class UnsupportedMediaTypeError(ProxyError):
    status = 415
    type = "invalid_request_error"
    reason = "invalid-request"


class NotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    reason = "not-found"


class UnauthorizedError(ProxyError):
    status = 401
    type = "authentication_error"
    reason = "unauthorized"


class SaturatedError(ProxyError):
    """The proxy has as many requests in its cache stages as it may hold, and this one
    waited for a place as long as it may: try again shortly (`Retry-After`)."""

    status = 503
    type = "server_error"
    reason = "saturated"


class UpstreamUnreachableError(ProxyError):
    status = 502
    type = "upstream_error"
    reason = "upstream-unreachable"


class UpstreamTimeoutError(ProxyError):
    status = 504
    type = "upstream_error"
    reason = "upstream-timeout"


def request_id(request: web.BaseRequest) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return new_request_id()


def new_request_id() -> str:
    return "req-" + uuid.uuid4().hex


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   415: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error"}
"""The Anthropic error type of each status the proxy answers with (others: `api_error`)."""


def anthropic_error_body(status: int, message: str) -> bytes:
    """An error in the Anthropic shape, for /v1/messages (its SDK reads `error.type`)."""
    return orjson.dumps({"type": "error", "error": {
        "type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message}})


def error_response(status: int, message: str, type_: str, *, rid: str, reason: str,
                   param: str | None = None, code: str | None = None,
                   headers: Mapping[str, str] | None = None,
                   anthropic: bool = False) -> web.Response:
    """An error in the OpenAI shape (the Anthropic shape with `anthropic`) with the proxy's
    headers (`headers` win)."""
    return web.Response(
        status=status,
        body=anthropic_error_body(status, message) if anthropic
        else error_body(message, type_, param, code),
        content_type="application/json",
        headers={"X-Semcache": "bypass", "X-Semcache-Reason": reason, "X-Request-Id": rid,
                 **(headers or {})},
    )


def proxy_error_response(err: ProxyError, rid: str, anthropic: bool = False) -> web.Response:
    return error_response(err.status, err.message, err.type, rid=rid, reason=err.reason,
                          param=err.param, code=err.code, headers=err.headers,
                          anthropic=anthropic)


def speaks_anthropic(request: web.Request) -> bool:
    """Whether the client speaks the Anthropic Messages API (errors in its shape)."""
    return request.path == "/v1/messages" or request.path.startswith("/v1/messages/")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request)
    request[REQUEST_ID] = rid
    try:
        return await handler(request)
    except ProxyError as e:
        return proxy_error_response(e, rid, speaks_anthropic(request))
    except web.HTTPRequestEntityTooLarge:
        return proxy_error_response(
            PayloadTooLargeError("request body too large", code="body_too_large"), rid)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # aiohttp's own 404/405 and friends, re-rendered in the OpenAI shape.
        return error_response(e.status, e.reason, "invalid_request_error", rid=rid,
                              reason="not-found" if e.status == 404 else "invalid-request",
                              headers={h: v for h, v in e.headers.items() if h == "Allow"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error in the caching proxy", "server_error",
                              rid=rid, reason="internal-error")
