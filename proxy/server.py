"""The HTTP server: aiohttp's AppRunner with the errors of its HTTP parser in the OpenAI shape.

A malformed request line, header or chunk, or a request-smuggling attempt, is found by
aiohttp's parser before any middleware runs, and aiohttp answers it in plain text. Clients
of the proxy expect every error in the OpenAI shape, with `X-Semcache` and `X-Request-Id`,
so the runner's protocol handler renders these the same way as `errors.error_middleware`.
aiohttp offers no hook for it: the runner's server and its connection handler are given
subclasses that change only that method (`__slots__ = ()`, so the layout is aiohttp's own).
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from .errors import error_response, new_request_id


class _ErrorShapedHandler(RequestHandler):
    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own logs the error, and refuses once a response has begun.
        super().handle_error(request, status, exc, message)
        client_error = 400 <= status < 500
        if client_error:
            # the first line: aiohttp adds the offending bytes and a caret below it
            text = (message or "").split("\n", 1)[0].rstrip(": ")[:200] or HTTPStatus(status).phrase
        else:
            text = "internal error in the caching proxy"  # never a traceback or its text
        response = error_response(
            status, text, "invalid_request_error" if client_error else "server_error",
            rid=new_request_id(), reason="invalid-request" if client_error else "internal-error",
            code="malformed_http" if client_error else None)
        response.force_close()  # the connection's framing can no longer be trusted
        return response


class _ErrorShapedServer(Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = _ErrorShapedHandler
        return handler


class ProxyRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer HTTP parser errors in the OpenAI shape."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _ErrorShapedServer
        return server
