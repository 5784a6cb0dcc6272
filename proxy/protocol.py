"""The OpenAI request bodies the proxy caches: parsing and validation.

Only what the cache depends on is validated strictly (model, messages or prompt, stream and
the types of the common sampling parameters); everything else is passed to the upstream as
the client sent it, and still fingerprinted into the scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from .errors import BadRequestError

Endpoint = Literal["chat", "completions", "responses", "messages"]
"""The wire formats of the cached routes (proxy/apis/ has one module each)."""

# Parameters that do not change the answer: they are left out of the scope fingerprint.
# Everything else, known or not, is in it (fail closed on unknown parameters).
NON_ANSWER_KEYS = frozenset(
    {"model", "messages", "prompt", "stream", "stream_options", "user", "metadata", "store"}
)

_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_PARAMS = ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs", "best_of")


@dataclass(frozen=True, kw_only=True)
class ParsedRequest:
    """A validated request of any cached format (proxy/apis/), split the way the cache
    needs it."""

    endpoint: Endpoint
    body: dict[str, Any]
    """The body as the client sent it (forwarded unchanged)."""
    model: str
    stream: bool
    include_usage: bool
    """`stream_options.include_usage`: a replayed stream ends with a usage chunk."""
    query: Any
    """The last message (chat) or the prompt (completions), canonicalised, for the exact key."""
    query_text: str | None
    """The text to embed for the semantic tier: the last user message's text, else None."""
    context: list[Any]
    """Every message before the last one (chat); empty for completions."""
    params: dict[str, Any]
    """Every answer-changing parameter, canonicalised."""
    scope_endpoint: str = ""
    """The endpoint the scope hashes where it is not `endpoint`: a Responses request that
    says what a chat request says is scoped as that chat request (apis/responses.py)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The messages before the last as chat messages, aligned with `context` (what the
    context chains read, pipeline/chains.py); empty where there are none."""
    bypass_reason: str | None = None
    """Why the cache may not answer this request at all (e.g. `server-state`)."""


CANONICAL_BUDGET = 10_000
"""Arrays, objects and floats that canonical() rewrites per request; the rest is kept as
sent. The canonical form only lets equal requests meet (0 and 0.0); a value kept as sent
can make a request more distinct (a missed hit), never equal to another, and the budget
bounds the event-loop time canonicalising takes for one request."""

_PLAIN = frozenset({str, int, bool, type(None)})
"""JSON value types that are already canonical (orjson makes no subclasses)."""


def quick_values(raw: bytes) -> int:
    """An upper bound on `json_values(raw)` at the speed of memchr: every '[', '{' and ','
    counts, inside strings too."""
    return raw.count(b"[") + raw.count(b"{") + raw.count(b",")


def json_values(raw: bytes) -> int:
    """Arrays, objects and commas outside strings: about the number of values a parse of
    `raw` creates, which is what its time grows with. Vectorised (numpy releases the GIL),
    so a large body can be measured in a worker thread without stalling the event loop."""
    # Escapes go first, so that every quote left opens or closes a string: "\\" pairs,
    # then escaped quotes (valid JSON has backslashes only inside strings).
    clean = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    chars = np.frombuffer(clean, dtype=np.uint8)
    outside = (np.cumsum(chars == 34, dtype=np.uint8) & 1) == 0  # parity of quotes so far
    marks = (chars == 91) | (chars == 123) | (chars == 44)  # [ { ,
    return int(np.count_nonzero(marks & outside))


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The body as an object. Nesting is bounded here, once: orjson parses at most 1,024
    levels and writes at most 254, and the scope and the upstream request are written with
    it, so a body it cannot write back is refused now rather than failing later."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequestError(f"request body is not valid JSON: {e}", code="invalid_json") from e
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object", code="invalid_json")
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as e:
        raise too_deep() from e
    return body


def too_deep() -> BadRequestError:
    return BadRequestError("request body is nested too deeply (the limit is about 250 levels)",
                           code="nested_too_deeply")


def parse_request(endpoint: Literal["chat", "completions"], body: dict[str, Any]) -> ParsedRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' is required and must be a non-empty string", param="model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean", param="stream")
    include_usage = _include_usage(body.get("stream_options"))
    _check_params(body)
    canonical = Canonical(CANONICAL_BUDGET)
    history: list[dict[str, Any]] = []
    if endpoint == "chat":
        query, query_text, context = _split_messages(body.get("messages"), canonical)
        history = context
    else:
        query, query_text, context = _split_prompt(body.get("prompt"), canonical), None, []
        if isinstance(query, str):
            query_text = query
    params = {k: canonical(v) for k, v in body.items() if k not in NON_ANSWER_KEYS}
    return ParsedRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        stream=stream,
        include_usage=include_usage,
        query=query,
        query_text=query_text if query_text and query_text.strip() else None,
        context=[canonical(m) for m in context],
        params=params,
        history=history,
    )


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise BadRequestError("'stream_options' must be an object", param="stream_options")
    value = options.get("include_usage", False)
    if not isinstance(value, bool):
        raise BadRequestError(
            "'stream_options.include_usage' must be a boolean", param="stream_options"
        )
    return value


def _check_params(body: dict[str, Any]) -> None:
    for key in _NUMBER_PARAMS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequestError(f"'{key}' must be a number", param=key)
    for key in _INT_PARAMS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequestError(f"'{key}' must be an integer", param=key)
    n = body.get("n")
    if n is not None and n < 1:
        raise BadRequestError("'n' must be at least 1", param="n")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequestError("'stop' must be a string or a list of strings", param="stop")


def _split_messages(messages: Any, canonical: Canonical) -> tuple[Any, str | None, list[Any]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequestError(f"'messages[{i}]' must be an object", param="messages")
        if not isinstance(message.get("role"), str):
            raise BadRequestError(f"'messages[{i}].role' must be a string", param="messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequestError(
                f"'messages[{i}].content' must be a string, an array or null", param="messages"
            )
        if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
            raise BadRequestError(
                f"'messages[{i}].content' parts must be objects", param="messages"
            )
    last = messages[-1]
    text = message_text(last) if last["role"] == "user" and _text_only(last) else None
    query = canonical({**last, "content": _canonical_content(last.get("content"), canonical)})
    return query, text, messages[:-1]


def _split_prompt(prompt: Any, canonical: Canonical) -> Any:
    if isinstance(prompt, str):
        return normalise_text(prompt)
    if isinstance(prompt, list) and prompt:
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return normalise_text(prompt[0])
        if all(isinstance(p, str) for p in prompt) or all(
            isinstance(p, int) and not isinstance(p, bool) for p in prompt
        ):
            return canonical(prompt)
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return canonical(prompt)
    raise BadRequestError(
        "'prompt' is required: a string, an array of strings or an array of token ids",
        param="prompt",
    )


def _text_only(message: dict[str, Any]) -> bool:
    """Whether the message is its text and nothing else: no image, audio or file part and
    no other field. Only such a message may be matched by meaning; "What is in this
    picture?" with another picture is another question, and the encoder sees only text
    (the exact tier still serves the identical message)."""
    content = message.get("content")
    if set(message) - {"role", "content"}:
        return False
    return not isinstance(content, list) or all(p.get("type") == "text" for p in content)


def message_text(message: dict[str, Any]) -> str | None:
    """The text of a message: its string content, or its text parts joined; None if none."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        texts = [t for t in texts if isinstance(t, str)]
        return "\n".join(texts) if texts else None
    return None


def _canonical_content(content: Any, canonical: Canonical) -> Any:
    # A string and a list holding only that text part are the same question.
    if isinstance(content, list) and content and all(p.get("type") == "text" for p in content):
        return normalise_text("\n".join(str(p.get("text", "")) for p in content))
    if isinstance(content, str):
        return normalise_text(content)
    return canonical(content)


def normalise_text(text: str) -> str:
    """Whitespace-insensitive form of a question for the exact tier."""
    return " ".join(text.split())


class Canonical:
    """JSON values in one canonical form: 0.0 and 0 are the same temperature. Only floats
    that are exact integers (|x| <= 2**53) become ints: 1e80 as an int is too large for
    JSON. Rewrites at most `budget` arrays, objects and floats (CANONICAL_BUDGET) over all
    the values of one request, and skips runs of plain values at C speed."""

    def __init__(self, budget: int) -> None:
        self.left = budget

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN or self.left <= 0:
            return value
        self.left -= 1
        if kind is float:
            return int(value) if value.is_integer() and abs(value) <= 2**53 else value
        if kind is dict:
            if set(map(type, value.values())) <= _PLAIN:
                return value
            return {k: self(v) for k, v in value.items()}
        if kind is list:
            if set(map(type, value)) <= _PLAIN:
                return value
            out = []
            for i, item in enumerate(value):
                if self.left <= 0:
                    out.extend(value[i:])
                    break
                out.append(self(item))
            return out
        return value
