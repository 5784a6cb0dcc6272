"""Forward: a miss or a bypass goes to the upstream, and its answer is relayed as it arrives.

The upstream call runs in a task of its own and reads into a `Relay`, which any number of
clients follow: the request that made the call, and with single-flight (flight.py) the
identical requests that arrived while it ran. So a client that leaves does not stop the
answer for the others, and when the last one has left a stream is cut off upstream (closing
the connection stops generation on servers that watch for it).

A complete 200 answer becomes the relay's `answer` (the write-back and the sampled checks
read it there); an error, an upstream that ignored `stream`, and a stream cut off by either
side are relayed to the client that made the call but never become an answer, so they are
never stored and never shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from ..apis import APIS
from ..errors import ProxyError, UpstreamTimeoutError, UpstreamUnreachableError
from ..metrics import Metrics
from ..protocol import Endpoint, ParsedRequest
from ..upstream import Upstream, response_headers
from .sse import SSEParser

TAIL_BUFFER_BYTES = 256 * 1024
"""Bytes of a stream kept so that a client joining late can follow it from the start. Past
it, chunks every follower has read are dropped (memory stays at what the slowest follower
has not read yet) and later arrivals wait for the complete answer instead, replayed."""


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """What goes to the upstream, taken from the request that makes the call, so that the
    call can outlive that request's handler."""

    endpoint: Endpoint
    headers: CIMultiDict[str]
    body: bytes
    query: str
    stream: bool
    include_usage: bool

    @classmethod
    def of(cls, request: web.Request, req: ParsedRequest) -> Outgoing:
        return cls(endpoint=req.endpoint, headers=json_headers(request.headers),
                   body=orjson.dumps(req.body), query=request.rel_url.raw_query_string,
                   stream=req.stream, include_usage=req.include_usage)


def json_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """The client's headers for a body the proxy wrote itself: UTF-8 JSON, whatever
    charset the client's Content-Type named for the bytes it sent."""
    out = CIMultiDict(headers)
    out["Content-Type"] = "application/json"
    return out


@dataclass(frozen=True, kw_only=True)
class Head:
    """The upstream's status line and headers."""

    status: int
    headers: CIMultiDict[str]
    streamed: bool
    """A 200 event stream to a streaming request: followed chunk by chunk."""


@dataclass(frozen=True, kw_only=True)
class Result:
    """How the call ended."""

    body: bytes | None = None
    """The whole body of a response that is not followed as a stream (relayed as is)."""
    answer: bytes | None = None
    """A complete 200 answer as the non-streaming JSON (assembled from a stream): what may
    be stored and shared. None for errors, cut or unparseable streams."""
    upstream_s: float = 0.0
    error: ProxyError | None = None
    """The upstream could not be reached, timed out, or broke before a stream began."""
    cut: bool = False
    """A stream that ended without its end: its followers' connections are cut too."""


class Relay:
    """One upstream call, read in its own task (`run`), followed by any number of clients."""

    def __init__(self, upstream: Upstream, metrics: Metrics, outgoing: Outgoing) -> None:
        loop = asyncio.get_running_loop()
        self.upstream = upstream
        self.metrics = metrics
        self.outgoing = outgoing
        self.head: asyncio.Future[Head | None] = loop.create_future()
        """Set when the upstream answers; None when it could not be reached."""
        self.result: asyncio.Future[Result] = loop.create_future()
        self._chunks: list[bytes] = []
        self._first = 0
        """Index in the stream of `_chunks[0]` (chunks before it have been dropped)."""
        self._kept = 0
        self._more: asyncio.Future[None] | None = None
        self._tails: set[Tail] = set()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    # followers --------------------------------------------------------------------------

    @property
    def tailable(self) -> bool:
        """Whether a new follower can still read the stream from its first chunk."""
        return self._first == 0 and not self.result.done()

    def tail(self) -> Tail:
        """A follower of the stream from its start (check `tailable` first)."""
        tail = Tail(self)
        self._tails.add(tail)
        return tail

    async def outcome(self) -> Result:
        """Wait for the end of the call, as one of its followers."""
        self._waiting += 1
        try:
            return await asyncio.shield(self.result)
        finally:
            self._waiting -= 1
            self._maybe_abandon()

    def _leave(self, tail: Tail) -> None:
        self._tails.discard(tail)
        self._trim()
        self._maybe_abandon()

    def _maybe_abandon(self) -> None:
        # Nobody follows any more: stop the upstream's work. Only a stream is worth cutting
        # off; a plain answer or an error body still arriving is kept.
        head = self.head.result() if self.head.done() else None
        if (head is not None and head.streamed and not self._tails and not self._waiting
                and self._task is not None and not self._task.done()):
            self._task.cancel()

    async def _wait_more(self) -> None:
        if self._more is None:
            self._more = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._more)

    def _wake(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)
        self._more = None

    def _publish(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._kept += len(chunk)
        self._trim()
        self._wake()

    def _trim(self) -> None:
        if self._kept <= TAIL_BUFFER_BYTES:
            return
        read_by_all = min((t.pos for t in self._tails), default=self._first + len(self._chunks))
        drop = read_by_all - self._first
        if drop > 0:
            self._kept -= sum(len(c) for c in self._chunks[:drop])
            del self._chunks[:drop]
            self._first = read_by_all

    def _finish(self, result: Result) -> None:
        if not self.head.done():
            self.head.set_result(None)
        if not self.result.done():
            self.result.set_result(result)
        self._wake()

    # the call ---------------------------------------------------------------------------

    def start(self) -> None:
        """Make the call in a task of its own; its end is `result`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        sent = time.perf_counter()
        try:
            self._finish(await self._call(sent))
        except asyncio.CancelledError:
            self.metrics.writes.labels("client-disconnected").inc()
            self._finish(Result(cut=True))
            raise
        except ProxyError as e:
            self._finish(Result(error=e))

    async def _call(self, sent: float) -> Result:
        o = self.outgoing
        try:
            api = APIS[o.endpoint]
            response = await self.upstream.send("POST", api.subpath, o.headers, o.body,
                                                o.query, api.upstream)
        except UpstreamTimeoutError:
            self.metrics.upstream_errors.labels("timeout").inc()
            raise
        except UpstreamUnreachableError:
            self.metrics.upstream_errors.labels("unreachable").inc()
            raise
        try:
            streamed = (o.stream and response.status == 200
                        and response.content_type == "text/event-stream")
            self.head.set_result(Head(status=response.status,
                                      headers=response_headers(response.headers),
                                      streamed=streamed))
            if streamed:
                return await self._read_stream(response, sent)
            return await self._read_whole(response, sent)
        except asyncio.CancelledError:
            response.close()  # the last follower left: stop generating upstream
            raise
        finally:
            response.release()

    async def _read_whole(self, response: aiohttp.ClientResponse, sent: float) -> Result:
        try:
            body = await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            self.metrics.upstream_errors.labels("timeout").inc()
            raise UpstreamTimeoutError("the upstream did not answer in time") from e
        except aiohttp.ClientError as e:
            self.metrics.upstream_errors.labels("broken").inc()
            raise UpstreamUnreachableError("the upstream connection broke") from e
        elapsed = time.perf_counter() - sent
        self.metrics.upstream_latency.observe(elapsed)
        ok = response.status == 200 and not self.outgoing.stream
        if response.status != 200 or self.outgoing.stream:
            # an error, or an upstream that ignored `stream`: relayed whole, never an answer
            self.metrics.upstream_errors.labels(str(response.status)).inc()
        return Result(body=body,
                      answer=body if ok and is_answer(self.outgoing.endpoint, body) else None,
                      upstream_s=elapsed)

    async def _read_stream(self, response: aiohttp.ClientResponse, sent: float) -> Result:
        parser, assembler = SSEParser(), APIS[self.outgoing.endpoint].assembler()
        try:
            async for chunk in response.content.iter_any():
                self._publish(chunk)
                for payload in parser.feed(chunk):
                    assembler.feed(payload)
        except (TimeoutError, aiohttp.ClientError):
            self.metrics.upstream_errors.labels("broken-stream").inc()
            return Result(cut=True)
        elapsed = time.perf_counter() - sent
        self.metrics.upstream_latency.observe(elapsed)
        assembled = assembler.result()
        if assembled is None:
            self.metrics.writes.labels("incomplete-stream").inc()
            return Result(upstream_s=elapsed)
        return Result(answer=orjson.dumps(assembled), upstream_s=elapsed)


class Tail:
    """One client's place in a relayed stream: `async for chunk in tail`, then `close()`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.pos = 0

    def __aiter__(self) -> Tail:
        return self

    async def __anext__(self) -> bytes:
        relay = self.relay
        while True:
            if self.pos < relay._first + len(relay._chunks):
                chunk = relay._chunks[self.pos - relay._first]
                self.pos += 1
                return chunk
            if relay.result.done():
                raise StopAsyncIteration
            await relay._wait_more()

    def close(self) -> None:
        self.relay._leave(self)


def is_answer(endpoint: Endpoint, body: bytes) -> bool:
    """A complete answer in the endpoint's format (apis/): what a follower can be replayed
    and the cache can store."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return APIS[endpoint].is_answer(parsed)


async def respond(request: web.Request, relay: Relay, tail: Tail | None,
                  headers: Mapping[str, str]) -> web.StreamResponse:
    """The answer of the call to the client that made it: the upstream's own status,
    headers and body (an error included), `headers` over them; streamed as it arrives."""
    head = await relay.head
    if head is None or not head.streamed or tail is None:
        if tail is not None:
            tail.close()
        result = await relay.outcome()
        if result.error is not None:
            raise result.error
        if head is None:  # pragma: no cover (a call without a head always has an error)
            raise UpstreamUnreachableError("the upstream gave no answer")
        return web.Response(status=head.status, body=result.body or b"",
                            headers={**head.headers, **headers})
    return await stream(request, relay, tail, head, headers)


async def stream(request: web.Request, relay: Relay, tail: Tail, head: Head,
                 headers: Mapping[str, str]) -> web.StreamResponse:
    """Follow a relayed stream to one client; a stream cut upstream is cut here too."""
    response = web.StreamResponse(status=200, headers={**head.headers, **headers})
    try:
        await response.prepare(request)
        async for chunk in tail:
            await response.write(chunk)
    except ConnectionResetError:
        return response  # the client left; `close` lets the relay stop if nobody is left
    finally:
        tail.close()
    if relay.result.result().cut:
        # The status is already sent, so the only way to say "broken" is to cut the
        # connection; the partial answer is not stored.
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
