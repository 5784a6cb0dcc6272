"""`POST /v1/responses`: the OpenAI Responses API.

The question is the last input item, a user message; the scope holds `instructions`, every
input item before it, tools and every answer-changing parameter. A request that says only
what a chat request can say (instructions, text messages, temperature, top_p,
max_output_tokens, no tools, plain text output) is scoped exactly as that chat request
(`instructions` as its system message, `max_output_tokens` as `max_completion_tokens`), so
the two share entries and either answer is served to the other in its own format
(apis/answers.py: `text_answer`). Anything else is scoped as a Responses request only.

Server-side state: a request with `previous_response_id`, `conversation`, a stored `prompt`
template or `background` depends on state that only the upstream holds, so it is never
served from the cache nor stored (`X-Semcache-Reason: server-state`), unless the id is one
the cache gave: then the request is first rewritten into the turns it names
(apis/response_ids.py). `store` is not in the scope (it does not change the answer) and is
forwarded as sent; it decides whether a response the cache serves is kept for a later turn
to name (docs/apis.md).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ..errors import BadRequestError
from ..protocol import CANONICAL_BUDGET, Canonical, ParsedRequest, normalise_text
from .answers import shape, text_answer
from .base import (
    Assembler,
    WireApi,
    check_numbers,
    model_of,
    pieces,
    sse_event,
    str_or_none,
    stream_flag,
)
from .response_ids import mint

SERVER_STATE = ("previous_response_id", "conversation", "prompt", "background")
"""Parameters naming state that only the upstream holds."""
NON_ANSWER_KEYS = frozenset({"model", "input", "instructions", "stream", "stream_options",
                             "store", "metadata", "user", "safety_identifier",
                             "prompt_cache_key", "prompt_cache_retention"})
"""Parameters that do not change the answer (kept out of the scope)."""
AS_CHAT = {"temperature": "temperature", "top_p": "top_p",
           "max_output_tokens": "max_completion_tokens"}
"""Parameters with the same meaning in a chat request, and their chat names."""
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_ROLES = frozenset({"user", "assistant", "system", "developer"})


class Responses(WireApi):
    endpoint = "responses"
    subpath = "responses"

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        model = model_of(body)
        stream = stream_flag(body)
        instructions = str_or_none(body, "instructions")
        check_numbers(body, ("temperature", "top_p"), ("max_output_tokens", "top_logprobs"))
        items = _input_items(body.get("input"))
        canonical = Canonical(CANONICAL_BUDGET)
        last = items[-1]
        text = _message_text(last) if last.get("role") == "user" else None
        query = ({"role": "user", "content": normalise_text(text)} if text is not None
                 else canonical(last))
        bypass = "server-state" if any(body.get(k) is not None for k in SERVER_STATE) else None
        common: dict[str, Any] = dict(
            endpoint="responses", body=body, model=model, stream=stream, include_usage=True,
            query=query, query_text=text if text and text.strip() else None,
            bypass_reason=bypass)
        as_chat = _as_chat(body, items[:-1], instructions, text, canonical)
        if as_chat is not None:
            context, params = as_chat
            return ParsedRequest(**common, context=context, params=params,
                                 scope_endpoint="chat", history=context)
        context = [["instructions", instructions], *(canonical(i) for i in items[:-1])]
        params = {k: canonical(v) for k, v in body.items() if k not in NON_ANSWER_KEYS}
        return ParsedRequest(**common, context=context, params=params)

    def assembler(self) -> Assembler:
        return ResponsesAssembler()

    def is_answer(self, body: Any) -> bool:
        """Completed, or cut only by `max_output_tokens` (as chat stores `length`)."""
        if shape(body) != "responses":
            return False
        if body.get("status") == "incomplete":
            details = body.get("incomplete_details")
            return isinstance(details, dict) and details.get("reason") == "max_output_tokens"
        return body.get("status") == "completed"

    def answer_of(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        fresh = {"id": mint(), "created_at": int(time.time())}
        if shape(stored) == "responses":
            return {**stored, **fresh}
        answer = text_answer(stored)  # a chat answer of a request scoped as this one
        if answer is None:
            return None
        usage = None
        if answer.input_tokens is not None and answer.output_tokens is not None:
            usage = {"input_tokens": answer.input_tokens,
                     "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": answer.output_tokens,
                     "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": answer.input_tokens + answer.output_tokens}
        return {
            **fresh, "object": "response",
            "status": "incomplete" if answer.truncated else "completed",
            "completed_at": fresh["created_at"], "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if answer.truncated else None,
            "instructions": None, "metadata": {}, "model": answer.model,
            "output": [{"type": "message", "id": "msg_" + uuid.uuid4().hex,
                        "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": answer.text,
                                     "annotations": [], "logprobs": []}]}],
            "parallel_tool_calls": True, "temperature": None, "tool_choice": "auto",
            "tools": [], "top_p": None, "usage": usage,
        }

    def events(self, body: dict[str, Any], req: ParsedRequest) -> list[bytes]:
        return replay_events(body)


def _input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequestError("'input' is required: a string or a non-empty array of items",
                              param="input")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadRequestError(f"'input[{i}]' must be an object", param="input")
        content = item.get("content")
        if "role" in item and not (isinstance(content, str) or (
                isinstance(content, list) and all(isinstance(p, dict) for p in content))):
            raise BadRequestError(f"'input[{i}].content' must be a string or an array of "
                                  "content parts", param="input")
    return value


def _message_text(item: dict[str, Any]) -> str | None:
    """The text of a message item that is its text and nothing else (no image, file or
    audio part, no other field); None otherwise: only such a message is matched by
    meaning, and only such messages are said as chat messages."""
    if item.get("type", "message") != "message" or item.get("role") not in _ROLES:
        return None
    if set(item) - {"type", "role", "content"}:
        return None
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            p.get("type") in _TEXT_PARTS and isinstance(p.get("text"), str)
            and not set(p) - {"type", "text", "annotations"} and not p.get("annotations")
            for p in content):
        return "\n".join(p["text"] for p in content)
    return None


def _as_chat(body: dict[str, Any], earlier: list[dict[str, Any]], instructions: str | None,
             text: str | None, canonical: Canonical) -> tuple[list[Any], dict[str, Any]] | None:
    """The context and parameters of the chat request that says what this one says, or
    None where this one says more."""
    if text is None:
        return None
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key in NON_ANSWER_KEYS or value is None:
            continue
        if key in AS_CHAT:
            params[AS_CHAT[key]] = canonical(value)
        elif key == "text" and value in ({"format": {"type": "text"}}, {}):
            continue  # plain text output: the default of both
        elif key in ("tools", "include") and value == []:
            continue
        else:
            return None
    context: list[Any] = [{"role": "system", "content": instructions}] if instructions else []
    for item in earlier:
        said = _message_text(item)
        if said is None:
            return None
        context.append({"role": item["role"], "content": said})
    return [canonical(m) for m in context], params


class ResponsesAssembler:
    """The answer of a Responses stream is the `response` of its `response.completed` (or
    `response.incomplete`, at the output token limit) event; an error, a failed response or
    a stream without that event is nothing to store."""

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None
        self.failed = False

    def feed(self, payload: str) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind in ("error", "response.failed"):
            self.failed = True
        elif kind in ("response.completed", "response.incomplete") \
                and isinstance(event.get("response"), dict):
            self.response = event["response"]

    def result(self) -> dict[str, Any] | None:
        if self.failed or self.response is None:
            return None
        return self.response if Responses().is_answer(self.response) else None


def replay_events(body: dict[str, Any]) -> list[bytes]:
    """The event stream of a Responses answer, as the API streams one: the response
    created and in progress, each output item added, its parts and text deltas, done,
    and the response completed (or incomplete) with every item."""
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(sse_event({"type": kind, **fields, "sequence_number": len(events)}, kind))

    shell = {**body, "status": "in_progress", "output": [], "usage": None,
             "incomplete_details": None, "completed_at": None}
    emit("response.created", response=shell)
    emit("response.in_progress", response=shell)
    for oi, item in enumerate(body.get("output") or []):
        if item.get("type") != "message":  # a whole item: added, then done
            emit("response.output_item.added", output_index=oi, item=item)
            emit("response.output_item.done", output_index=oi, item=item)
            continue
        item_id = item.get("id", "")
        emit("response.output_item.added", output_index=oi,
             item={**item, "status": "in_progress", "content": []})
        for ci, part in enumerate(item.get("content") or []):
            at = {"item_id": item_id, "output_index": oi, "content_index": ci}
            if part.get("type") == "refusal":
                emit("response.content_part.added", **at, part={"type": "refusal",
                                                               "refusal": ""})
                emit("response.refusal.delta", **at, delta=part.get("refusal", ""))
                emit("response.refusal.done", **at, refusal=part.get("refusal", ""))
            else:
                text = part.get("text", "")
                emit("response.content_part.added", **at,
                     part={"type": "output_text", "text": "", "annotations": [],
                           "logprobs": []})
                for piece in pieces(text):
                    emit("response.output_text.delta", **at, delta=piece, logprobs=[])
                emit("response.output_text.done", **at, text=text, logprobs=[])
            emit("response.content_part.done", **at, part=part)
        emit("response.output_item.done", output_index=oi, item=item)
    final = "response.incomplete" if body.get("status") == "incomplete" else "response.completed"
    emit(final, response=body)
    return events
