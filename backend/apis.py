"""The OpenAI Responses API (`POST /v1/responses`) and the Anthropic Messages API
(`POST /v1/messages`) over the chat engine.

Each request becomes a chat request (`protocol.CompletionRequest`): Responses `instructions`
and Anthropic `system` as the system message, the input items or messages as the turns,
`max_output_tokens` / `max_tokens` as the token limit. The answer is rendered in the
request's own format, whole or as its own event stream, token by token as the chat route
streams. A Responses answer is rendered by the proxy's own Responses format from the chat
answer it is (semcache.proxy.apis.responses `answer_of`), and a Messages answer has the
shape the proxy stores and replays; the streams carry the events of the proxy's replays
(`replay_events`), in their order, each delta written as its tokens are decoded.

What the backend cannot honour is refused with a 400 naming the parameter (as the chat route
refuses, protocol.py): tools, images and files, reasoning and thinking, structured output,
and server-side state (`previous_response_id`, `conversation`, `background`: the backend
keeps nothing between requests). `store` is accepted and changes nothing: no response is
kept, so a later request naming one is refused as said.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from semcache.proxy.apis.base import sse_event
from semcache.proxy.apis.responses import Responses

from . import protocol
from .engine import Stream
from .errors import InvalidRequest, UnsupportedParameter
from .protocol import Unhonoured, _integer, _number, _off
from .serving import ChoiceResult, Completer

Opened = tuple[list[int], list[Stream]]

# ---- Responses ------------------------------------------------------------------------------

RESPONSES_HONOURED = frozenset({"model", "input", "instructions", "max_output_tokens",
                                "temperature", "top_p", "stream", "stream_options", "store"})
RESPONSES_HARMLESS = protocol.HARMLESS | {"prompt_cache_retention"}
_TOOLS = "tool calling is not supported by this backend"
_STATE = ("this backend keeps no state between requests: send the whole conversation "
          "in 'input'")
RESPONSES_UNHONOURED: Unhonoured = {
    "tools": (lambda v: v is None or v == [], _TOOLS),
    "tool_choice": (_off("none", "auto"), _TOOLS + " (only tool_choice 'none' or 'auto')"),
    "parallel_tool_calls": (lambda v: v is None or isinstance(v, bool),
                            "'parallel_tool_calls' must be a boolean"),
    "max_tool_calls": (_off(), _TOOLS),
    "text": (lambda v: v is None or v in ({}, {"format": {"type": "text"}}),
             "only text output is supported by this backend (text.format 'text', no "
             "verbosity)"),
    "reasoning": (lambda v: v is None or v == {} or v == {"effort": None},
                  "this backend's model does not reason: no reasoning"),
    "include": (lambda v: v is None or v == [], "this backend has nothing to include"),
    "top_logprobs": (_off(0), "logprobs are not supported by this backend"),
    "truncation": (_off("disabled"), "this backend does not truncate the input "
                                     "(only truncation 'disabled')"),
    "previous_response_id": (_off(), _STATE + " (no previous_response_id)"),
    "conversation": (_off(), _STATE + " (no conversation)"),
    "prompt": (_off(), "this backend has no stored prompt templates"),
    "background": (_off(False), "this backend does not run responses in the background"),
}
_INPUT_ROLES = {"user": "user", "assistant": "assistant", "system": "system",
                "developer": "system"}
_INPUT_PARTS = frozenset({"input_text", "output_text", "text"})


def parse_responses(body: Any) -> protocol.CompletionRequest:
    """Validate a Responses body into the chat request that says the same."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", "stream")
    protocol.refuse(body, RESPONSES_HONOURED, RESPONSES_HARMLESS, RESPONSES_UNHONOURED)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", "instructions")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    messages += _input_messages(body.get("input"))
    return _chat_request(body, messages, _integer(body, "max_output_tokens", 1), stream,
                         temperature=_number(body, "temperature", 1.0, 0.0, 2.0), stop=[])


def _input_messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty array of items", "input")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"'input[{i}]' must be an object", f"input[{i}]")
        if item.get("type", "message") != "message":  # function calls, reasoning, ...
            raise UnsupportedParameter(f"input items of type {item.get('type')!r} are not "
                                       "supported by this backend (only messages)",
                                       f"input[{i}]")
        role = _INPUT_ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise InvalidRequest(f"'input[{i}].role' must be one of {sorted(_INPUT_ROLES)}",
                                 f"input[{i}].role")
        content = item.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"'input[{i}].content' must be a string or an array of "
                                 "content parts", f"input[{i}].content")
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in _INPUT_PARTS \
                    or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else None
                raise UnsupportedParameter(f"content parts of type {kind!r} are not "
                                           "supported by this backend (only text)",
                                           f"input[{i}].content[{j}]")
            texts.append(part["text"])
        out.append({"role": role, "content": "\n".join(texts)})
    return out


def responses_body(req: protocol.CompletionRequest, prompt_tokens: int,
                   result: ChoiceResult, model: str, ids: tuple[str, str, int],
                   body: dict[str, Any]) -> dict[str, Any]:
    """The `response` object of a finished answer, rendered by the proxy's Responses
    format from the chat answer it is (so the cache stores exactly what it would have)."""
    chat = protocol.response(True, "", model,
                             [protocol.choice(True, 0, result.text, result.finish_reason)],
                             protocol.usage(prompt_tokens, result.tokens))
    answer = Responses().answer_of(chat)
    assert answer is not None  # one text choice, ended by stop or length: always sayable
    rid, item_id, created = ids
    answer["output"][0]["id"] = item_id
    return {**answer, "id": rid, "created_at": created, "completed_at": int(time.time()),
            "instructions": body.get("instructions"), "temperature": req.temperature,
            "top_p": req.top_p, "max_output_tokens": req.max_tokens,
            "store": False, "text": {"format": {"type": "text"}}, "tool_choice": "none"}


async def responses_whole(completer: Completer, req: protocol.CompletionRequest,
                          body: dict[str, Any]) -> dict[str, Any]:
    lengths, results = await completer.run(req)
    return responses_body(req, lengths[0], results[0], completer.model_name, _response_ids(),
                          body)


async def responses_events(completer: Completer, req: protocol.CompletionRequest,
                           opened: Opened, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """The Responses event stream, in the order and shapes of the proxy's replay
    (apis/responses.py `replay_events`), each text delta as the tokens arrive."""
    ids = _response_ids()
    item_id = ids[1]
    sequence = 0

    def emit(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return sse_event({"type": kind, **fields, "sequence_number": sequence - 1}, kind)

    finished: list[ChoiceResult] = []
    deltas = _deltas(completer, req, opened, finished)
    try:
        empty = ChoiceResult(0, "", "stop", 0)
        shell = {**responses_body(req, opened[0][0], empty, completer.model_name, ids, body),
                 "status": "in_progress", "output": [], "usage": None,
                 "incomplete_details": None, "completed_at": None}
        yield emit("response.created", response=shell)
        yield emit("response.in_progress", response=shell)
        item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant",
                "content": []}
        yield emit("response.output_item.added", output_index=0, item=item)
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield emit("response.content_part.added", **at,
                   part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        async for text in deltas:
            yield emit("response.output_text.delta", **at, delta=text, logprobs=[])
        final = responses_body(req, opened[0][0], finished[0], completer.model_name, ids, body)
        done = final["output"][0]
        yield emit("response.output_text.done", **at, text=finished[0].text, logprobs=[])
        yield emit("response.content_part.done", **at, part=done["content"][0])
        yield emit("response.output_item.done", output_index=0, item=done)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield emit(kind, response=final)
    finally:
        await deltas.aclose()
        _cancel(opened)


def _response_ids() -> tuple[str, str, int]:
    return "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex, int(time.time())


# ---- Anthropic Messages -----------------------------------------------------------------

MESSAGES_HONOURED = frozenset({"model", "messages", "system", "max_tokens", "temperature",
                               "top_p", "stop_sequences", "stream"})
MESSAGES_HARMLESS = frozenset({"metadata", "service_tier", "cache_control", "inference_geo",
                               "speed", "user_profile_id", "workspace_id"})
"""Labels, routing and billing hints, and prompt-caching markers: nothing in the answer."""
MESSAGES_UNHONOURED: Unhonoured = {
    "tools": (lambda v: v is None or v == [], _TOOLS),
    "tool_choice": (lambda v: v is None or v in ({"type": "none"}, {"type": "auto"}),
                    _TOOLS + " (only tool_choice none or auto)"),
    "thinking": (lambda v: v is None or v == {"type": "disabled"},
                 "this backend's model does not think: no extended thinking"),
    "top_k": (_off(), "top_k sampling is not supported by this backend"),
    "output_config": (lambda v: v is None or v == {}, "output formats and effort are not "
                                                     "supported by this backend"),
    "container": (_off(), "this backend has no containers"),
    "diagnostics": (_off(), "this backend reports no diagnostics"),
}
_TEXT_BLOCK_KEYS = frozenset({"type", "text", "cache_control"})
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}
"""Anthropic's error types by status; any other status is an `api_error`."""


def parse_messages(body: Any) -> protocol.CompletionRequest:
    """Validate an Anthropic Messages body into the chat request that says the same."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean", "stream")
    protocol.refuse(body, MESSAGES_HONOURED, MESSAGES_HARMLESS, MESSAGES_UNHONOURED)
    max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required", "max_tokens")
    system = body.get("system")
    messages = []
    if system is not None:
        text = system if isinstance(system, str) else _blocks_text(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise InvalidRequest("messages: must be a non-empty array", "messages")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{i}: must be an object with role 'user' or "
                                 "'assistant'", f"messages.{i}")
        content = turn.get("content")
        text = content if isinstance(content, str) else _blocks_text(content,
                                                                     f"messages.{i}.content")
        messages.append({"role": turn["role"], "content": text})
    if turns[-1]["role"] != "user":  # the chat template would start a new turn instead
        raise UnsupportedParameter("a final assistant message (prefill) is not supported by "
                                   "this backend", f"messages.{len(turns) - 1}")
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) \
            or len(stop) > protocol.MAX_STOP:
        raise InvalidRequest(f"stop_sequences: must be at most {protocol.MAX_STOP} non-empty "
                             "strings", "stop_sequences")
    return _chat_request(body, messages, max_tokens, stream,
                         temperature=_number(body, "temperature", 1.0, 0.0, 1.0), stop=stop)


def _blocks_text(blocks: Any, where: str) -> str:
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where}: must be a string or an array of content blocks", where)
    texts = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text" \
                or not isinstance(block.get("text"), str) or set(block) - _TEXT_BLOCK_KEYS:
            kind = block.get("type") if isinstance(block, dict) else None
            raise UnsupportedParameter(f"content blocks of type {kind!r} are not supported by "
                                       "this backend (only text)", f"{where}.{j}")
        texts.append(block["text"])
    return "\n".join(texts)


def message_body(prompt_tokens: int, result: ChoiceResult, model: str,
                 mid: str) -> dict[str, Any]:
    """The `message` of a finished answer, in the shape the proxy stores (apis/messages.py)."""
    if result.finish_reason == "length":
        reason = "max_tokens"
    else:
        reason = "stop_sequence" if result.stop_sequence is not None else "end_turn"
    return {"id": mid, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": result.text}],
            "stop_reason": reason, "stop_sequence": result.stop_sequence,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": result.tokens}}


async def messages_whole(completer: Completer, req: protocol.CompletionRequest,
                         body: dict[str, Any]) -> dict[str, Any]:
    lengths, results = await completer.run(req)
    return message_body(lengths[0], results[0], completer.model_name, _message_id())


async def messages_events(completer: Completer, req: protocol.CompletionRequest,
                          opened: Opened, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """Anthropic's event stream, in the order and shapes of the proxy's replay
    (apis/messages.py `replay_events`), each text delta as the tokens arrive."""

    def emit(kind: str, **fields: Any) -> bytes:
        return sse_event({"type": kind, **fields}, kind)

    finished: list[ChoiceResult] = []
    deltas = _deltas(completer, req, opened, finished)
    try:
        mid = _message_id()
        start = message_body(opened[0][0], ChoiceResult(0, "", "stop", 0), completer.model_name,
                             mid)
        yield emit("message_start", message={**start, "content": [], "stop_reason": None,
                                             "stop_sequence": None})
        yield emit("content_block_start", index=0, content_block={"type": "text", "text": ""})
        yield emit("ping")
        async for text in deltas:
            yield emit("content_block_delta", index=0, delta={"type": "text_delta", "text": text})
        yield emit("content_block_stop", index=0)
        final = message_body(opened[0][0], finished[0], completer.model_name, mid)
        yield emit("message_delta", delta={"stop_reason": final["stop_reason"],
                                           "stop_sequence": final["stop_sequence"]},
                   usage={"output_tokens": final["usage"]["output_tokens"]})
        yield emit("message_stop")
    finally:
        await deltas.aclose()
        _cancel(opened)


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ANTHROPIC_ERRORS.get(status, "api_error"),
                                       "message": message}}


def _message_id() -> str:
    return "msg_" + uuid.uuid4().hex


# ---- shared -------------------------------------------------------------------------------


def _chat_request(body: dict, messages: list[dict[str, str]], max_tokens: int | None,
                  stream: bool, *, temperature: float, stop: list[str]
                  ) -> protocol.CompletionRequest:
    model = body.get("model")
    return protocol.CompletionRequest(
        chat=True, messages=messages, prompts=[], max_tokens=max_tokens,
        temperature=temperature, top_p=_number(body, "top_p", 1.0, 0.0, 1.0), n=1, stop=stop,
        seed=None, stream=stream, include_usage=False, ignore_eos=False,
        model=model if isinstance(model, str) else None)


def _cancel(opened: Opened) -> None:
    """A stream left early (the client gone) frees its sequence at once, also before the
    chat events (which cancel it) were started."""
    for stream in opened[1]:
        stream.cancel()


async def _deltas(completer: Completer, req: protocol.CompletionRequest, opened: Opened,
                  finished: list[ChoiceResult]) -> AsyncGenerator[str, None]:
    """The text of the one choice as it is decoded; `finished` then holds its result."""
    events = completer.stream_events(req, opened, finished)
    try:
        async for chunk in events:
            text = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if text:
                yield text
    finally:
        await events.aclose()  # type: ignore[attr-defined]
