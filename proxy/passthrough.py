"""Every other /v1/... request: relayed to the upstream untouched, streaming both ways.

Its answer says so: `X-Semcache: bypass` with `X-Semcache-Reason: not-cached-route`."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .errors import UpstreamTimeoutError, UpstreamUnreachableError
from .upstream import Upstream, api_of, raw_subpath, response_headers

REASON = "not-cached-route"


async def relay(request: web.Request, upstream: Upstream) -> web.StreamResponse:
    subpath = raw_subpath(request)
    body = request.content if request.body_exists else None
    # an upstream that cannot be reached says so in its own reason (errors.py)
    resp = await upstream.send(request.method, subpath, request.headers, body,
                               request.rel_url.raw_query_string, api=api_of(subpath))
    try:
        out = web.StreamResponse(status=resp.status, reason=resp.reason,
                                 headers=response_headers(resp.headers))
        out.headers["X-Semcache"] = "bypass"
        out.headers["X-Semcache-Reason"] = REASON
        if resp.content_length is not None and "Content-Encoding" not in resp.headers:
            out.content_length = resp.content_length
        await out.prepare(request)
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
        except ConnectionResetError:
            resp.close()  # the client left
        except (TimeoutError, aiohttp.ClientError):
            resp.close()
            if request.transport is not None:
                request.transport.close()
        return out
    except (TimeoutError, aiohttp.ServerTimeoutError) as e:
        raise UpstreamTimeoutError("the upstream did not answer in time") from e
    except aiohttp.ClientError as e:
        raise UpstreamUnreachableError("the upstream connection broke") from e
    finally:
        resp.release()
