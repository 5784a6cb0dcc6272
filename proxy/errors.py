"""The proxy's errors, mapped to HTTP once, in one middleware, in the OpenAI error shape.

Clients of an OpenAI-compatible API parse `{"error": {"message", "type", "param", "code"}}`,
so every error the proxy itself produces has that shape. Unexpected exceptions are logged
with their traceback and answered with a generic message: their text never reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProxyError(Exception):
    """Base of the proxy's errors; each carries the HTTP status and OpenAI error type."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class BadRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaTypeError(ProxyError):
    status = 415
    type = "invalid_request_error"


class NotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"


class UnauthorizedError(ProxyError):
    status = 401
    type = "authentication_error"


class UpstreamUnreachableError(ProxyError):
    status = 502
    type = "upstream_error"


class UpstreamTimeoutError(ProxyError):
    status = 504
    type = "upstream_error"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(err: ProxyError, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=err.status,
        body=error_body(err.message, err.type, err.param, err.code),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProxyError as e:
        return error_response(e)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLargeError("request body too large", code="body_too_large"))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # aiohttp's own 404/405 and friends, re-rendered in the OpenAI shape.
        return web.Response(
            status=e.status,
            body=error_body(e.reason, "invalid_request_error"),
            content_type="application/json",
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.Response(
            status=500,
            body=error_body("internal error in the caching proxy", "server_error"),
            content_type="application/json",
        )
