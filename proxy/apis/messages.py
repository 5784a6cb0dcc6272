"""`POST /v1/messages`: the Anthropic Messages API (its `x-api-key` and
`anthropic-version` headers are forwarded as sent; the tenant is the hash of whichever
credential the request carries, proxy/tenants.py).

The question is the last message, a user message; the scope holds `system`, every message
before it, tools and every answer-changing parameter. Only text is cached: a request with
an image, document, tool use or tool result block anywhere in its messages is passed through
(`X-Semcache-Reason: non-text-content`), as the encoder reads only text and a tool
exchange's answer depends on what the tool returned. Answers of text and tool use blocks are
stored and replayed; streams are replayed as Anthropic's event stream (`message_start`,
`content_block_start`, `ping`, `content_block_delta`, `content_block_stop`,
`message_delta`, `message_stop`, each with its `event:` line, which the SDK reads).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ..errors import BadRequestError
from ..protocol import CANONICAL_BUDGET, Canonical, ParsedRequest, normalise_text
from .answers import shape
from .base import Assembler, WireApi, check_numbers, model_of, pieces, sse_event, stream_flag

NON_ANSWER_KEYS = frozenset({"model", "messages", "stream", "metadata", "service_tier"})
"""Parameters that do not change the answer (kept out of the scope)."""
STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})
"""Answers that ended as answers (not paused, not refused mid-way)."""
_TEXT_BLOCK_KEYS = frozenset({"type", "text", "cache_control"})
"""A text block with nothing the answer depends on besides its text (`cache_control` is a
prompt-caching marker)."""


class Messages(WireApi):
    endpoint = "messages"
    subpath = "messages"
    upstream = "anthropic"

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        model = model_of(body)
        stream = stream_flag(body)
        check_numbers(body, ("temperature", "top_p"), ("max_tokens", "top_k"))
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            raise BadRequestError("'system' must be a string or an array of text blocks",
                                  param="system")
        messages = _messages(body.get("messages"))
        canonical = Canonical(CANONICAL_BUDGET)
        last = messages[-1]
        text = _text(last) if last["role"] == "user" else None
        query = ({"role": "user", "content": normalise_text(text)} if text is not None
                 else canonical(last))
        bypass = None
        if any(_text(m) is None for m in messages):
            bypass = "non-text-content"
        params = {k: canonical(v) for k, v in body.items() if k not in NON_ANSWER_KEYS}
        return ParsedRequest(
            endpoint="messages", body=body, model=model, stream=stream, include_usage=True,
            query=query, query_text=text if text and text.strip() else None,
            context=[canonical(m) for m in messages[:-1]], params=params,
            history=messages[:-1], bypass_reason=bypass)

    def assembler(self) -> Assembler:
        return MessagesAssembler()

    def is_answer(self, body: Any) -> bool:
        return (shape(body) == "messages" and body.get("role") == "assistant"
                and body.get("stop_reason") in STOP_REASONS
                and all(isinstance(b, dict) and b.get("type") in ("text", "tool_use")
                        for b in body.get("content") or []))

    def answer_of(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        if not self.is_answer(stored):
            return None
        return {**stored, "id": "msg_" + uuid.uuid4().hex}

    def events(self, body: dict[str, Any], req: ParsedRequest) -> list[bytes]:
        return replay_events(body)


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BadRequestError("'messages' is required and must be a non-empty array",
                              param="messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequestError(f"'messages[{i}]' must be an object with role 'user' or "
                                  "'assistant'", param="messages")
        content = message.get("content")
        if not (isinstance(content, str) or (
                isinstance(content, list) and all(isinstance(b, dict) for b in content))):
            raise BadRequestError(f"'messages[{i}].content' must be a string or an array of "
                                  "content blocks", param="messages")
    return value


def _text(message: dict[str, Any]) -> str | None:
    """The text of a message that is text and nothing else, else None."""
    if set(message) - {"role", "content"}:
        return None
    content = message["content"]
    if isinstance(content, str):
        return content
    if content and all(b.get("type") == "text" and isinstance(b.get("text"), str)
                       and not set(b) - _TEXT_BLOCK_KEYS for b in content):
        return "\n".join(b["text"] for b in content)
    return None


class MessagesAssembler:
    """Rebuilds the `message` of a stream from its events; None unless `message_stop`
    arrived, nothing failed and every block is text or a tool use with JSON input."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json: dict[int, list[str]] = {}
        self.done = False
        self.failed = False

    def feed(self, payload: str) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(event, dict):
            self.failed = True
            return
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self.message = dict(event["message"])
        elif kind == "content_block_start":
            block = dict(event.get("content_block") or {})
            if block.get("type") not in ("text", "tool_use"):
                self.failed = True  # thinking, server tools: not what is stored
            self.blocks[int(event.get("index", 0))] = block
        elif kind == "content_block_delta":
            self._delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "message_delta" and self.message is not None:
            self.message.update({k: v for k, v in (event.get("delta") or {}).items()})
            usage = {**(self.message.get("usage") or {}), **(event.get("usage") or {})}
            self.message["usage"] = {k: v for k, v in usage.items() if v is not None}
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.failed = True

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.blocks.get(index)
        if block is None:
            self.failed = True
        elif delta.get("type") == "text_delta" and block.get("type") == "text":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif delta.get("type") == "input_json_delta" and block.get("type") == "tool_use":
            self.json.setdefault(index, []).append(str(delta.get("partial_json", "")))
        else:
            self.failed = True

    def result(self) -> dict[str, Any] | None:
        if not self.done or self.failed or self.message is None:
            return None
        content = []
        for index, block in sorted(self.blocks.items()):
            if block.get("type") == "tool_use" and index in self.json:
                try:
                    block = {**block, "input": orjson.loads("".join(self.json[index]) or "{}")}
                except orjson.JSONDecodeError:
                    return None
            content.append(block)
        message = {**self.message, "content": content}
        return message if Messages().is_answer(message) else None


def replay_events(body: dict[str, Any]) -> list[bytes]:
    """The event stream of an Anthropic answer, as the API streams one."""
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(sse_event({"type": kind, **fields}, kind))

    usage = body.get("usage") or {}
    start_usage = {**usage, "output_tokens": 0}
    emit("message_start", message={**body, "content": [], "stop_reason": None,
                                   "stop_sequence": None, "usage": start_usage})
    for index, block in enumerate(body.get("content") or []):
        if block.get("type") == "text":
            emit("content_block_start", index=index, content_block={**block, "text": ""})
        else:
            emit("content_block_start", index=index, content_block={**block, "input": {}})
        if index == 0:
            emit("ping")
        if block.get("type") == "text":
            for piece in pieces(block.get("text", "")):
                emit("content_block_delta", index=index,
                     delta={"type": "text_delta", "text": piece})
        else:
            emit("content_block_delta", index=index,
                 delta={"type": "input_json_delta",
                        "partial_json": orjson.dumps(block.get("input", {})).decode()})
        emit("content_block_stop", index=index)
    emit("message_delta", delta={"stop_reason": body.get("stop_reason"),
                                 "stop_sequence": body.get("stop_sequence")},
         usage={"output_tokens": usage.get("output_tokens", 0)})
    emit("message_stop")
    return events
