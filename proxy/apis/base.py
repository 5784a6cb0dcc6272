"""What every cached wire format provides to the pipeline, and what they share.

The pipeline (proxy/pipeline/) knows one internal representation of a request, a
`ParsedRequest`: the question (the last user input, canonical, for the exact key), the text
the semantic tier embeds, the scope's material (the conversation before the question, every
answer-changing parameter) and the body to forward. Each wire format (one module of this
package) maps its requests to it, and maps a cached answer back to its own JSON and to its
own event stream. An entry stores the upstream's answer as the non-streaming JSON of the
format that wrote it; `answer_of` turns a stored answer into this format's, where the
content allows (chat and Responses share text answers, apis/answers.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import orjson

from ..errors import BadRequestError
from ..protocol import Endpoint, ParsedRequest
from ..upstream import Api


class Assembler(Protocol):
    """Rebuilds the non-streaming answer from the `data:` payloads of a streamed one;
    `result()` is None unless the stream ended properly (a cut stream is never stored)."""

    def feed(self, payload: str) -> None: ...

    def result(self) -> dict[str, Any] | None: ...


class WireApi(ABC):
    endpoint: Endpoint
    subpath: str
    """The path under the upstream's base URL."""
    upstream: Api = "openai"
    """Which upstream base URL serves it (upstream.py)."""

    @abstractmethod
    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        """Validate a body (400 on what the cache depends on) and split it for the cache."""

    @abstractmethod
    def assembler(self) -> Assembler: ...

    @abstractmethod
    def is_answer(self, body: Any) -> bool:
        """Whether a parsed 200 body is a complete answer that may be stored and replayed."""

    @abstractmethod
    def answer_of(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        """A stored answer as this format's JSON with a fresh id and time; None where its
        content cannot be said in this format (the lookup is then a miss)."""

    @abstractmethod
    def events(self, body: dict[str, Any], req: ParsedRequest) -> list[bytes]:
        """The SSE events of a stream that delivers `body` (from `answer_of`)."""


def sse_event(data: dict[str, Any], name: str | None = None) -> bytes:
    """One server-sent event; `name`: its `event:` line (Responses, Anthropic)."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


REPLAY_CHARS = 24
"""Characters of text per replayed delta (as pipeline/sse.py replays chat)."""


def pieces(text: str) -> list[str]:
    return [text[i : i + REPLAY_CHARS] for i in range(0, len(text), REPLAY_CHARS)]


def str_or_none(body: dict[str, Any], key: str, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequestError(f"'{key}' must be a string", param=param or key)
    return value


def stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean", param="stream")
    return stream


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' is required and must be a non-empty string", param="model")
    return model


def check_numbers(body: dict[str, Any], numbers: tuple[str, ...], ints: tuple[str, ...]) -> None:
    for key in numbers:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequestError(f"'{key}' must be a number", param=key)
    for key in ints:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequestError(f"'{key}' must be an integer", param=key)
