"""Forward: a miss or a bypass goes to the upstream, relayed as it arrives (streaming or not).

A complete 200 answer is handed to `on_answer` (the write-back and the sampled checks);
an error, an upstream that ignored `stream`, and a stream cut off by either side are relayed
but never handed on, so they are never stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from ..errors import UpstreamTimeoutError, UpstreamUnreachableError
from ..metrics import Metrics
from ..protocol import Endpoint, ParsedRequest
from ..upstream import Upstream, response_headers
from .sse import SSEParser, StreamAssembler

SUBPATHS: dict[Endpoint, str] = {"chat": "chat/completions", "completions": "completions"}

OnAnswer = Callable[[bytes, float], None]
"""Called with a complete 200 answer (non-streaming JSON) and the upstream's seconds."""


def json_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """The client's headers for a body the proxy wrote itself: UTF-8 JSON, whatever
    charset the client's Content-Type named for the bytes it sent."""
    out = CIMultiDict(headers)
    out["Content-Type"] = "application/json"
    return out


class Forwarder:
    def __init__(self, upstream: Upstream, metrics: Metrics) -> None:
        self.upstream = upstream
        self.metrics = metrics

    async def forward(self, request: web.Request, req: ParsedRequest, headers: dict[str, str],
                      on_answer: OnAnswer | None) -> web.StreamResponse:
        if req.stream:
            return await self._stream(request, req, headers, on_answer)
        return await self._plain(request, req, headers, on_answer)

    async def _plain(self, request: web.Request, req: ParsedRequest, headers: dict[str, str],
                     on_answer: OnAnswer | None) -> web.Response:
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
        elif on_answer is not None:
            on_answer(body, elapsed)
        out_headers = response_headers(upstream.headers)
        out_headers.update(headers)
        return web.Response(status=upstream.status, body=body, headers=out_headers)

    async def _stream(self, request: web.Request, req: ParsedRequest, headers: dict[str, str],
                      on_answer: OnAnswer | None) -> web.StreamResponse:
        sent = time.perf_counter()
        upstream = await self._send(request, req)
        if upstream.status != 200 or upstream.content_type != "text/event-stream":
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
        if result is None:
            if on_answer is not None:
                self.metrics.writes.labels("incomplete-stream").inc()
        elif on_answer is not None:
            on_answer(orjson.dumps(result), elapsed)
        return response

    async def _send(self, request: web.Request, req: ParsedRequest) -> aiohttp.ClientResponse:
        try:
            return await self.upstream.send(
                "POST", SUBPATHS[req.endpoint], json_headers(request.headers), orjson.dumps(req.body),
                request.rel_url.raw_query_string,
            )
        except UpstreamTimeoutError:
            self.metrics.upstream_errors.labels("timeout").inc()
            raise
        except UpstreamUnreachableError:
            self.metrics.upstream_errors.labels("unreachable").inc()
            raise
