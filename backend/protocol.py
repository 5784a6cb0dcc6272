"""The OpenAI wire format: request validation and response/chunk shapes, as plain JSON."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest

MAX_N = 16
MAX_STOP = 4


@dataclass(frozen=True, kw_only=True)
class CompletionRequest:
    """A validated /v1/chat/completions or /v1/completions body."""

    chat: bool
    messages: list[dict[str, str]] | None
    prompts: list[str | list[int]]
    max_tokens: int | None
    temperature: float
    top_p: float
    n: int
    stop: list[str]
    seed: int | None
    stream: bool
    include_usage: bool
    ignore_eos: bool
    model: str | None


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{key}' must be a number", key)
    if not low <= value <= high:
        raise InvalidRequest(f"'{key}' must be between {low} and {high}", key)
    return float(value)


def _integer(body: dict, key: str, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{key}' must be an integer", key)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"'{key}' must be {bound}", key)
    return value


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text can be served by this model
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequest("only text content parts are supported",
                                     f"messages[{index}].content")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    if content is None:
        return ""
    raise InvalidRequest("message content must be a string or a list of parts",
                         f"messages[{index}].content")


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest("each message needs a string 'role'", f"messages[{i}]")
        out.append({"role": message["role"], "content": _content_text(message.get("content"), i)})
    return out


def _prompts(body: dict) -> list[str | list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise InvalidRequest("'prompt' must be a string, a list of strings or token lists", "prompt")


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest("'stop' must be a non-empty string or a list of them", "stop")
    if len(stop) > MAX_STOP:
        raise InvalidRequest(f"'stop' takes at most {MAX_STOP} sequences", "stop")
    return stop


def parse_request(body: Any, *, chat: bool) -> CompletionRequest:
    """Validate a request body; every problem becomes an InvalidRequest (a 400)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    max_tokens = _integer(body, "max_completion_tokens", 1) if chat else None
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise InvalidRequest("'stream' must be a boolean and 'stream_options' an object", "stream")
    if body.get("logprobs") or body.get("echo") or body.get("tools"):
        raise InvalidRequest("logprobs, echo and tools are not supported by this backend")
    model = body.get("model")
    return CompletionRequest(
        chat=chat,
        messages=_messages(body) if chat else None,
        prompts=[] if chat else _prompts(body),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        n=_integer(body, "n", 1, MAX_N) or 1,
        stop=_stop(body),
        seed=_integer(body, "seed", -(2**63)),
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        ignore_eos=bool(body.get("ignore_eos", False)),
        model=model if isinstance(model, str) else None,
    )


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def choice(chat: bool, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    if chat:
        return {"index": index, "message": {"role": "assistant", "content": text},
                "logprobs": None, "finish_reason": finish_reason}
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def response(chat: bool, rid: str, model: str, choices: list[dict], use: dict) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices, "usage": use,
            "system_fingerprint": None}


def chunk(chat: bool, rid: str, model: str, created: int, index: int, text: str | None,
          finish_reason: str | None, *, first: bool = False) -> dict[str, Any]:
    """One streamed choice delta; `first` adds the assistant role, as OpenAI does."""
    if chat:
        delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if first else (
            {"content": text} if text else {})
        body: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None,
                                "finish_reason": finish_reason}
    else:
        body = {"index": index, "text": text or "", "logprobs": None,
                "finish_reason": finish_reason}
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": model, "choices": [body], "system_fingerprint": None}


def usage_chunk(chat: bool, rid: str, model: str, created: int, use: dict) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": model, "choices": [], "usage": use,
            "system_fingerprint": None}


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
