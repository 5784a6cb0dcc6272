"""Server-sent events in the OpenAI streaming format: parse, assemble, replay.

A streamed miss is relayed byte for byte while `StreamAssembler` rebuilds the answer as the
non-streaming JSON the upstream would have returned; that is what the cache stores. A hit for
a streaming request is replayed from it by `replay_chunks`. So either form of request can be
served from an entry written by the other.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..protocol import Endpoint

DONE = "[DONE]"
REPLAY_CHARS = 24
"""Characters of content per replayed chunk: small enough to look like a live stream to a
client that renders progressively, few enough chunks to keep a replay cheap."""


class SSEParser:
    """Splits a byte stream into the `data:` payloads of its events."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        payloads: list[str] = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            data = [
                line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
            ]
            if data:
                payloads.append(b"\n".join(data).decode("utf-8", errors="replace"))
        return payloads


class StreamAssembler:
    """Rebuilds the complete response from the chunks of a streamed one.

    `result()` is None unless the stream ended properly: `[DONE]` seen and every choice
    finished. A stream cut off by the upstream or the client is never stored.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.done = False
        self.failed = False
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def feed(self, payload: str) -> None:
        if payload.strip() == DONE:
            self.done = True
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self.failed = True
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk and key not in self._head:
                self._head[key] = chunk[key]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index", 0))
        acc = self._choices.setdefault(
            index, {"content": [], "tool_calls": {}, "role": None, "finish_reason": None,
                    "refusal": [], "logprobs": None}
        )
        if choice.get("finish_reason"):
            acc["finish_reason"] = choice["finish_reason"]
        if self.endpoint == "completions":
            acc["content"].append(choice.get("text") or "")
            return
        delta = choice.get("delta") or {}
        if delta.get("role"):
            acc["role"] = delta["role"]
        if delta.get("content"):
            acc["content"].append(delta["content"])
        if delta.get("refusal"):
            acc["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            slot = acc["tool_calls"].setdefault(
                int(call.get("index", 0)), {"id": None, "type": "function", "name": [], "args": []}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            if function.get("name"):
                slot["name"].append(function["name"])
            if function.get("arguments"):
                slot["args"].append(function["arguments"])

    def result(self) -> dict[str, Any] | None:
        if not self.done or self.failed or not self._choices:
            return None
        if any(c["finish_reason"] is None for c in self._choices.values()):
            return None
        choices = [self._choice(i, c) for i, c in sorted(self._choices.items())]
        response: dict[str, Any] = {
            "id": self._head.get("id", ""),
            "object": "chat.completion" if self.endpoint == "chat" else "text_completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": choices,
        }
        if "system_fingerprint" in self._head:
            response["system_fingerprint"] = self._head["system_fingerprint"]
        if self._usage is not None:
            response["usage"] = self._usage
        return response

    def _choice(self, index: int, acc: dict[str, Any]) -> dict[str, Any]:
        if self.endpoint == "completions":
            return {"index": index, "text": "".join(acc["content"]), "logprobs": None,
                    "finish_reason": acc["finish_reason"]}
        message: dict[str, Any] = {
            "role": acc["role"] or "assistant",
            "content": "".join(acc["content"]) if acc["content"] or not acc["tool_calls"] else None,
        }
        if acc["refusal"]:
            message["refusal"] = "".join(acc["refusal"])
        if acc["tool_calls"]:
            message["tool_calls"] = [
                {"id": s["id"], "type": s["type"],
                 "function": {"name": "".join(s["name"]), "arguments": "".join(s["args"])}}
                for _, s in sorted(acc["tool_calls"].items())
            ]
        return {"index": index, "message": message, "logprobs": None,
                "finish_reason": acc["finish_reason"]}


def encode_event(data: dict[str, Any] | str) -> bytes:
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


def replay_chunks(
    response: dict[str, Any], endpoint: Endpoint, *, include_usage: bool
) -> list[bytes]:
    """The SSE events of a stream that delivers `response`, ending with `data: [DONE]`."""
    head: dict[str, Any] = {k: response[k] for k in ("id", "created", "model") if k in response}
    if "system_fingerprint" in response:
        head["system_fingerprint"] = response["system_fingerprint"]
    obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
    events: list[bytes] = []

    def emit(choices: list[dict[str, Any]], **extra: Any) -> None:
        chunk = {**head, "object": obj, "choices": choices, **extra}
        if include_usage and endpoint == "chat":
            chunk.setdefault("usage", None)
        events.append(encode_event(chunk))

    for choice in response.get("choices", []):
        index = choice.get("index", 0)
        if endpoint == "chat":
            _replay_chat_choice(choice, index, emit)
        else:
            for piece in _pieces(choice.get("text") or ""):
                emit([{"index": index, "text": piece, "logprobs": None, "finish_reason": None}])
            emit([{"index": index, "text": "", "logprobs": None,
                   "finish_reason": choice.get("finish_reason")}])
    if include_usage and response.get("usage") is not None:
        events.append(encode_event({**head, "object": obj, "choices": [],
                                    "usage": response["usage"]}))
    events.append(encode_event(DONE))
    return events


def _replay_chat_choice(choice: dict[str, Any], index: int, emit: Any) -> None:
    message = choice.get("message") or {}
    emit([{"index": index, "delta": {"role": message.get("role", "assistant"), "content": ""},
           "logprobs": None, "finish_reason": None}])
    for piece in _pieces(message.get("content") or ""):
        emit([{"index": index, "delta": {"content": piece}, "logprobs": None,
               "finish_reason": None}])
    if message.get("refusal"):
        emit([{"index": index, "delta": {"refusal": message["refusal"]}, "logprobs": None,
               "finish_reason": None}])
    for i, call in enumerate(message.get("tool_calls") or []):
        emit([{"index": index, "delta": {"tool_calls": [{**call, "index": i}]},
               "logprobs": None, "finish_reason": None}])
    emit([{"index": index, "delta": {}, "logprobs": None,
           "finish_reason": choice.get("finish_reason")}])


def _pieces(text: str) -> list[str]:
    return [text[i : i + REPLAY_CHARS] for i in range(0, len(text), REPLAY_CHARS)]
