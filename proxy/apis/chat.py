"""`POST /v1/chat/completions` and `POST /v1/completions`: the OpenAI formats the
pipeline was first written for (parsing in protocol.py, streams in pipeline/sse.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..pipeline.sse import StreamAssembler, replay_chunks
from ..protocol import ParsedRequest, parse_request
from .answers import shape, text_answer
from .base import Assembler, WireApi


class Chat(WireApi):
    endpoint = "chat"
    subpath = "chat/completions"

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        return parse_request("chat", body)

    def assembler(self) -> Assembler:
        return StreamAssembler("chat")

    def is_answer(self, body: Any) -> bool:
        return shape(body) == "chat"

    def answer_of(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        fresh = {"id": "chatcmpl-" + uuid.uuid4().hex, "created": int(time.time())}
        if shape(stored) == "chat":
            return {**stored, **fresh}
        answer = text_answer(stored)  # a Responses answer of a request scoped as this one
        if answer is None:
            return None
        body: dict[str, Any] = {
            **fresh, "object": "chat.completion", "model": answer.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text,
                                                 "refusal": None, "annotations": []},
                         "logprobs": None,
                         "finish_reason": "length" if answer.truncated else "stop"}],
        }
        if answer.input_tokens is not None and answer.output_tokens is not None:
            body["usage"] = {"prompt_tokens": answer.input_tokens,
                             "completion_tokens": answer.output_tokens,
                             "total_tokens": answer.input_tokens + answer.output_tokens}
        return body

    def events(self, body: dict[str, Any], req: ParsedRequest) -> list[bytes]:
        return replay_chunks(body, "chat", include_usage=req.include_usage)


class Completions(WireApi):
    endpoint = "completions"
    subpath = "completions"

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        return parse_request("completions", body)

    def assembler(self) -> Assembler:
        return StreamAssembler("completions")

    def is_answer(self, body: Any) -> bool:
        return shape(body) == "completions"

    def answer_of(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        if shape(stored) != "completions":
            return None
        return {**stored, "id": "cmpl-" + uuid.uuid4().hex, "created": int(time.time())}

    def events(self, body: dict[str, Any], req: ParsedRequest) -> list[bytes]:
        return replay_chunks(body, "completions", include_usage=req.include_usage)
