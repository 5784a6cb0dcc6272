"""Stored answers of every format: their text, their token counts, and the plain text
answer that chat and Responses can both say.

An entry keeps the upstream's answer as the JSON of the format that wrote it: a chat
completion (`choices[].message`), a text completion (`choices[].text`), a Responses
`response` object, or an Anthropic `message`. Which one it is can be read off the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


def shape(body: Any) -> str | None:
    """`chat`, `completions`, `responses`, `messages`, or None for anything else."""
    if not isinstance(body, dict):
        return None
    if body.get("object") == "response":
        return "responses"
    if body.get("type") == "message":
        return "messages"
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return "completions" if isinstance(choices[0].get("text"), str) else "chat"
    return None


def answer_text(body: Any) -> str:
    """The text of an answer of any format (tool calls as JSON), "" if there is none."""
    kind = shape(body)
    if kind == "responses":
        return "".join(_response_texts(body) or [])
    if kind == "messages":
        return "".join(b.get("text", "") for b in body.get("content") or []
                       if isinstance(b, dict) and b.get("type") == "text")
    if kind is None:
        return ""
    choice = body["choices"][0]
    if isinstance(choice.get("text"), str):
        return str(choice["text"])
    message = choice.get("message")
    if not isinstance(message, dict):
        return ""
    text = message.get("content")
    if isinstance(text, str) and text:
        return text
    calls = message.get("tool_calls")
    return orjson.dumps(calls, option=orjson.OPT_SORT_KEYS).decode() if calls else ""


def usage_of(body: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) an answer reports; 0 where it reports none."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    if "input_tokens" in usage:  # Responses and Anthropic
        return _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


@dataclass(frozen=True, kw_only=True)
class TextAnswer:
    """An answer that is one assistant text and nothing else: what a chat completion and a
    Responses `response` can both say, so either can serve a request of the other."""

    text: str
    truncated: bool
    """Ended by the output token limit (chat `length`, Responses `incomplete`)."""
    model: str
    input_tokens: int | None
    output_tokens: int | None


def text_answer(body: Any) -> TextAnswer | None:
    """The answer as one text, or None where it is more (tool calls, several choices,
    reasoning items, a refusal) or another format."""
    kind = shape(body)
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage_of(body) if isinstance(usage, dict) else (None, None)
    if kind == "chat":
        choices = body["choices"]
        message = choices[0].get("message")
        finish = choices[0].get("finish_reason")
        if (len(choices) != 1 or not isinstance(message, dict) or finish not in ("stop", "length")
                or set(message) - {"role", "content", "refusal", "annotations", "audio",
                                   "function_call", "tool_calls"}
                or message.get("tool_calls") or message.get("refusal")
                or message.get("audio") or message.get("function_call")
                or not isinstance(message.get("content"), str)):
            return None
        return TextAnswer(text=message["content"], truncated=finish == "length",
                          model=str(body.get("model", "")), input_tokens=tokens[0],
                          output_tokens=tokens[1])
    if kind == "responses":
        texts = _response_texts(body)
        incomplete = body.get("status") == "incomplete"
        if texts is None or len(texts) != 1 or body.get("status") not in ("completed",
                                                                         "incomplete"):
            return None
        return TextAnswer(text=texts[0], truncated=incomplete, model=str(body.get("model", "")),
                          input_tokens=tokens[0], output_tokens=tokens[1])
    return None


def _response_texts(body: dict[str, Any]) -> list[str] | None:
    """The output_text of each message of a Responses answer; None if it holds anything
    else (function calls, reasoning, refusals)."""
    texts: list[str] = []
    for item in body.get("output") or []:
        if not isinstance(item, dict) or item.get("type") != "message":
            return None
        for part in item.get("content") or []:
            if not isinstance(part, dict) or part.get("type") != "output_text" \
                    or not isinstance(part.get("text"), str):
                return None
            texts.append(part["text"])
    return texts


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
