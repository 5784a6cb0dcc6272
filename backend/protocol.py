"""The OpenAI wire format: request validation and response/chunk shapes, as plain JSON."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest, UnsupportedParameter

MAX_N = 16
MAX_STOP = 4
MAX_EMBEDDING_INPUTS = 2048
"""OpenAI's own bound on the inputs of one /v1/embeddings request."""

HONOURED = frozenset({"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
                      "stream", "stream_options", "ignore_eos"})
"""Parameters both completion routes serve as OpenAI does (`ignore_eos` is vLLM's)."""
HONOURED_CHAT = HONOURED | {"messages", "max_completion_tokens"}
HONOURED_TEXT = HONOURED | {"prompt"}
HARMLESS = frozenset({"user", "metadata", "service_tier", "safety_identifier",
                      "prompt_cache_key"})
"""Parameters that change nothing in an answer (who asks, labels, billing and routing
hints), accepted and ignored as OpenAI's own answer would not differ for them."""


def _off(*neutral: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or any(value == n and type(value) is type(n)
                                              for n in neutral)


def _text_format(value: Any) -> bool:
    return value is None or value in ({"type": "text"}, {"type": "json_object"})


# Parameters the backend cannot honour, each with the values that ask for nothing (which
# are fine) and what a client is told otherwise. An answer that ignored any of them would
# look like one that honoured it, and the proxy would cache it as such.
Unhonoured = dict[str, tuple[Callable[[Any], bool], str]]
"""Parameter -> (whether its value asks for nothing, the refusal's message)."""
UNHONOURED_CHAT: Unhonoured = {
    "tools": (lambda v: v is None or v == [], "tool calling is not supported by this backend"),
    "tool_choice": (_off("none"), "tool calling is not supported by this backend "
                                  "(only tool_choice 'none')"),
    "parallel_tool_calls": (lambda v: v is None or isinstance(v, bool),
                            "'parallel_tool_calls' must be a boolean"),
    "functions": (lambda v: v is None or v == [], "function calling is not supported by "
                                                  "this backend"),
    "function_call": (_off("none"), "function calling is not supported by this backend"),
    "response_format": (_text_format, "only response_format 'text' and 'json_object' are "
                                      "supported: this backend has no structured outputs "
                                      "(json_schema)"),
    "logprobs": (_off(False), "logprobs are not supported by this backend"),
    "top_logprobs": (_off(0), "logprobs are not supported by this backend"),
    "logit_bias": (lambda v: v is None or v == {}, "logit_bias is not supported by this "
                                                   "backend"),
    "frequency_penalty": (_off(0, 0.0), "frequency_penalty is not supported by this backend "
                                        "(only 0)"),
    "presence_penalty": (_off(0, 0.0), "presence_penalty is not supported by this backend "
                                       "(only 0)"),
    "modalities": (lambda v: v is None or v == ["text"], "this backend answers in text only "
                                                         "(modalities ['text'])"),
    "audio": (_off(), "audio output is not supported by this backend"),
    "prediction": (_off(), "predicted outputs are not supported by this backend"),
    "reasoning_effort": (_off(), "this backend's model does not reason: no reasoning_effort"),
    "verbosity": (_off(), "verbosity is not supported by this backend"),
    "web_search_options": (_off(), "web search is not supported by this backend"),
    "store": (_off(False), "this backend stores no completions (store must be false)"),
}
UNHONOURED_TEXT: Unhonoured = {
    "logprobs": (_off(0), "logprobs are not supported by this backend"),
    "echo": (_off(False), "echo is not supported by this backend"),
    "best_of": (_off(1), "best_of is not supported by this backend (only 1)"),
    "suffix": (_off(""), "suffix (insertion) is not supported by this backend"),
    "logit_bias": UNHONOURED_CHAT["logit_bias"],
    "frequency_penalty": UNHONOURED_CHAT["frequency_penalty"],
    "presence_penalty": UNHONOURED_CHAT["presence_penalty"],
}


def refuse_unhonoured(body: dict, *, chat: bool) -> None:
    """Raise UnsupportedParameter, naming the first parameter the backend would otherwise
    ignore: a known one set to a value that asks for something, or one it does not know."""
    refuse(body, HONOURED_CHAT if chat else HONOURED_TEXT, HARMLESS,
           UNHONOURED_CHAT if chat else UNHONOURED_TEXT)


def refuse(body: dict, honoured: frozenset[str], harmless: frozenset[str],
           unhonoured: Unhonoured) -> None:
    """`refuse_unhonoured` for any API's tables (apis.py: Responses, Messages)."""
    for key, value in body.items():
        if key in honoured or key in harmless:
            continue
        if key not in unhonoured:
            raise UnsupportedParameter(f"unrecognised request argument: {key!r}", key)
        neutral, message = unhonoured[key]
        if not neutral(value):
            raise UnsupportedParameter(message, key)


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
    json_object: bool = False
    """JSON mode: the answer is constrained to one JSON object (json_mode.py)."""


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
        # A transcript with tool calls or tool results would be served with those left out.
        if message["role"] in ("tool", "function") or message.get("tool_calls") or \
                message.get("function_call"):
            raise UnsupportedParameter("tool calls and tool results in messages are not "
                                       "supported by this backend", f"messages[{i}]")
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
    refuse_unhonoured(body, chat=chat)
    model = body.get("model")
    messages = _messages(body) if chat else None
    json_object = chat and body.get("response_format") == {"type": "json_object"}
    # OpenAI's own rule, and a good one: a model not told to answer in JSON fights the
    # constraint and fills the object with whatever it meant to say.
    if json_object and not any("json" in m["content"].lower() for m in messages or []):
        raise InvalidRequest("'messages' must contain the word 'json' to use response_format "
                             "json_object", "messages")
    return CompletionRequest(
        chat=chat,
        messages=messages,
        json_object=json_object,
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


@dataclass(frozen=True, kw_only=True)
class EmbeddingRequest:
    """A validated /v1/embeddings body."""

    inputs: list[str]
    model: str | None
    encoding_format: str
    """`float` (lists of numbers) or `base64` (little-endian float32, as OpenAI sends)."""
    dimensions: int | None
    """Asked-for vector length; only the model's own can be served (checked by the caller,
    which knows the model)."""


EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    """Validate an embeddings body; every problem becomes an InvalidRequest (a 400)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    for key in body:
        if key not in EMBEDDING_KEYS:
            raise UnsupportedParameter(f"unrecognised request argument: {key!r}", key)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if isinstance(inputs, list) and inputs and all(isinstance(t, int) or isinstance(t, list)
                                                   for t in inputs):
        # Token arrays are in the tokenizer of OpenAI's models, which this encoder is not.
        raise UnsupportedParameter("token-array input is not supported by this backend: "
                                   "send text", "input")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t
                                                             for t in inputs):
        raise InvalidRequest("'input' must be a non-empty string or a non-empty list of "
                             "non-empty strings", "input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"'input' takes at most {MAX_EMBEDDING_INPUTS} items", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    model = body.get("model")
    return EmbeddingRequest(inputs=list(inputs), model=model if isinstance(model, str) else None,
                            encoding_format=encoding,
                            dimensions=_integer(body, "dimensions", 1))


def embedding(index: int, row: Any) -> dict[str, Any]:
    """One item of an embeddings answer; `row` is a list of floats or a base64 string."""
    return {"object": "embedding", "index": index, "embedding": row}


def embedding_response(items: list[dict[str, Any]], model: str, tokens: int) -> dict[str, Any]:
    return {"object": "list", "data": items, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


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
