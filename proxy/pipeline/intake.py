"""Intake: the request body read, bounded and parsed, before any cache work.

What a body may cost the event loop is bounded here. Its size is bounded by
`server.max_body_bytes`; the number of values a parse creates (which is what orjson's time
grows with: one 4 MB body of small nested lists stalls the loop for seconds) by
`server.max_json_values`; its nesting by the parser (protocol.py); and canonicalising it by
`protocol.CANONICAL_BUDGET`. Counting values exactly takes a vectorised pass, done only when
the memchr-speed upper bound is over the limit, and in a worker thread for large bodies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..config import ServerSettings
from ..errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from ..protocol import json_values, parse_json_body, quick_values

COUNT_IN_THREAD_BYTES = 64 * 1024
"""Bodies at least this large are counted in a worker thread (numpy releases the GIL);
smaller ones inline, where a thread's round trip costs about as much as the count."""


async def read_body(request: web.Request, settings: ServerSettings) -> bytes:
    """The body's bytes, refused if it is not JSON by its type, or too large."""
    content_type = request.headers.get("Content-Type")
    if content_type is not None:
        mime = content_type.split(";")[0].strip().lower()
        if mime != "application/json" and not mime.endswith("+json"):
            raise UnsupportedMediaTypeError(
                f"unsupported content type {mime!r}; send application/json",
                code="unsupported_media_type",
            )
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(
            f"request body is {request.content_length} bytes; the limit is {limit}",
            code="body_too_large",
        )
    raw = await request.read()  # bounded by the application's client_max_size
    if not raw:
        raise BadRequestError("request body is empty", code="invalid_json")
    return raw


async def parse_body(raw: bytes, settings: ServerSettings) -> dict[str, Any]:
    await check_values(raw, settings.max_json_values)
    return parse_json_body(raw)


async def check_values(raw: bytes, limit: int) -> None:
    """Refuse a body whose parse would create more than `limit` values."""
    if quick_values(raw) <= limit:
        return
    if len(raw) >= COUNT_IN_THREAD_BYTES:
        count = await asyncio.to_thread(json_values, raw)
    else:
        count = json_values(raw)
    if count > limit:
        raise BadRequestError(
            f"request body has more than {limit} JSON values (arrays, objects and their "
            "elements); the limit is server.max_json_values", code="too_many_values")
