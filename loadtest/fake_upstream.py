"""A fake OpenAI-compatible upstream: a real aiohttp app on a real port.

Used by the tests (served on port 0) and by the load tests, which measure the proxy's own
cost against it. Answers are deterministic ("answer to: <question>") so a caller can tell
which question an answer belongs to. Behaviour is switched through attributes (status,
delay, cutting a stream midway).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeUpstream:
    base_url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    """Status of chat/completions answers; non-200 answers carry an OpenAI error body."""
    delay_s: float = 0.0
    """Wait before answering (timeouts, in-flight requests)."""
    fail_calls: int = 0
    """The next this many chat/completions calls answer 500 (after `delay_s`), whatever
    `status` says: an upstream that fails once."""
    chunk_delay_s: float = 0.0
    """Wait between streamed chunks."""
    cut_stream_after: int | None = None
    """Stop a stream after this many chunks, without [DONE], closing the connection."""
    words_per_answer: int = 0
    """Extra filler words in each answer (long streams)."""
    tag_answers_with_key: bool = False
    """Append the request's credential to each answer (`[for Bearer k]` for Authorization,
    `[for api-key=k]` for another header or query parameter, `[for nobody]`), so a test can
    tell whose answer a client got (tenant isolation with identical prompts)."""
    answer_with_history: bool = False
    """Answer every user turn of the conversation ("answer to: first / second"), as a real
    model's answer depends on the history: two conversations that end alike get different
    answers."""
    short_embeddings: bool = False
    """Answer embeddings with one vector fewer than inputs (a broken upstream)."""
    streams_finished: int = 0
    streams_cancelled: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # the proxy's limit is the test
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_route("*", "/v1/echo/{tail:.*}", self.echo)
        app.router.add_get("/v1/sse", self.sse)
        return app

    # helpers ---------------------------------------------------------------------------

    def answer_for(self, question: str) -> str:
        filler = " ".join(f"w{i}" for i in range(self.words_per_answer))
        return f"answer to: {question}" + (f" {filler}" if filler else "")

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.calls.append(body)
        self.headers_seen.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return body

    def _tag(self, text: str, request: web.Request) -> str:
        if not self.tag_answers_with_key:
            return text
        return f"{text} [for {credential_of(request)}]"

    def _error(self, status: int | None = None) -> web.Response:
        return web.json_response(
            {"error": {"message": "upstream failure", "type": "server_error", "param": None,
                       "code": None}},
            status=status or self.status,
        )

    # routes ----------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        failing = self.fail_calls > 0
        self.fail_calls -= failing
        body = await self._record(request)
        if failing:
            return self._error(500)
        if self.status != 200:
            return self._error()
        turns = [m for m in body["messages"] if m.get("role") == "user"] if self.answer_with_history \
            else body["messages"][-1:]
        content = " / ".join(_text(m.get("content")) for m in turns)
        text = self._tag(self.answer_for(str(content)), request)
        usage = {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                 "total_tokens": 10 + len(text.split())}
        n = body.get("n") or 1  # null is valid (the default), as in the OpenAI API
        if body.get("stream"):
            return await self._stream_chat(request, body, text, usage, n)
        return web.json_response({
            "id": "chatcmpl-upstream", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": "stop"} for i in range(n)],
            "usage": usage,
        })

    async def _stream_chat(
        self, request: web.Request, body: dict[str, Any], text: str, usage: dict[str, int], n: int
    ) -> web.StreamResponse:
        head = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}
        chunks: list[dict[str, Any]] = []
        for i in range(n):
            chunks.append({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None}]})
            for word in text.split(" "):
                chunks.append({**head, "choices": [{"index": i, "delta": {"content": word + " "},
                                                    "finish_reason": None}]})
            chunks.append({**head, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
        # The trailing space of the last word is removed so the text matches the JSON answer.
        last_word = chunks[-2]["choices"][0]["delta"]
        last_word["content"] = last_word["content"].rstrip(" ")
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": usage})
        return await self._send_sse(request, chunks)

    async def _send_sse(self, request: web.Request, chunks: list[dict[str, Any]],
                        named: bool = False) -> web.StreamResponse:
        """`named`: each event with an `event:` line of its type and no `[DONE]`, as the
        Responses and Anthropic APIs stream."""
        import json

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i, chunk in enumerate(chunks):
                if self.cut_stream_after is not None and i >= self.cut_stream_after:
                    assert request.transport is not None
                    request.transport.close()  # an upstream dying mid-answer
                    return response
                name = f"event: {chunk['type']}\n" if named else ""
                await response.write(f"{name}data: {json.dumps(chunk)}\n\n".encode())
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            if not named:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            self.streams_finished += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.streams_cancelled += 1
            raise
        return response

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.status != 200:
            return self._error()
        prompt = body["prompt"]
        text = self._tag(self.answer_for(prompt if isinstance(prompt, str) else str(prompt)), request)
        usage = {"prompt_tokens": 5, "completion_tokens": len(text.split()),
                 "total_tokens": 5 + len(text.split())}
        head = {"id": "cmpl-upstream", "object": "text_completion", "created": int(time.time()),
                "model": body["model"]}
        if body.get("stream"):
            chunks = [{**head, "choices": [{"index": 0, "text": w + " ", "logprobs": None,
                                            "finish_reason": None}]} for w in text.split(" ")]
            chunks[-1]["choices"][0]["text"] = chunks[-1]["choices"][0]["text"].rstrip(" ")
            chunks.append({**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                "finish_reason": "stop"}]})
            return await self._send_sse(request, chunks)
        return web.json_response({**head, "choices": [{"index": 0, "text": text, "logprobs": None,
                                                       "finish_reason": "stop"}], "usage": usage})

    def _failing(self) -> bool:
        failing = self.fail_calls > 0
        self.fail_calls -= failing
        return failing or self.status != 200

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API: "answer to: <the last input's text>"."""
        failing = self._failing()
        body = await self._record(request)
        if failing:
            return self._error(500 if self.status == 200 else self.status)
        items = body["input"]
        last = items if isinstance(items, str) else _text(items[-1].get("content"))
        text = self._tag(self.answer_for(last), request)
        words = len(text.split())
        message = {"type": "message", "id": "msg_upstream", "status": "completed",
                   "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [],
                                "logprobs": []}]}
        response: dict[str, Any] = {
            "id": "resp_upstream", "object": "response", "created_at": int(time.time()),
            "status": "completed", "completed_at": int(time.time()), "error": None,
            "incomplete_details": None, "instructions": body.get("instructions"),
            "metadata": {}, "model": body["model"], "output": [message],
            "parallel_tool_calls": True, "temperature": body.get("temperature"),
            "tool_choice": "auto", "tools": [], "top_p": body.get("top_p"),
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": words, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 10 + words},
        }
        if not body.get("stream"):
            return web.json_response(response)
        shell = {**response, "status": "in_progress", "output": [], "usage": None}
        at = {"item_id": "msg_upstream", "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": shell},
            {"type": "response.in_progress", "response": shell},
            {"type": "response.output_item.added", "output_index": 0,
             "item": {**message, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **at,
             "part": {"type": "output_text", "text": "", "annotations": []}},
            *({"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
              for piece in _word_pieces(text)),
            {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": message["content"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": response},
        ]
        for i, event in enumerate(events):
            event["sequence_number"] = i
        return await self._send_sse(request, events, named=True)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """The Anthropic Messages API: "answer to: <the last message's text>"."""
        failing = self._failing()
        body = await self._record(request)
        if failing:
            status = 500 if self.status == 200 else self.status
            return web.json_response({"type": "error", "error": {"type": "api_error",
                                                                 "message": "upstream failure"}},
                                     status=status)
        text = self._tag(self.answer_for(_text(body["messages"][-1].get("content"))), request)
        words = len(text.split())
        message = {"id": "msg_upstream", "type": "message", "role": "assistant",
                   "model": body["model"], "content": [{"type": "text", "text": text}],
                   "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 10, "output_tokens": words}}
        if not body.get("stream"):
            return web.json_response(message)
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                  "usage": {"input_tokens": 10,
                                                            "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
            *({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": piece}} for piece in _word_pieces(text)),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": words}},
            {"type": "message_stop"},
        ]
        return await self._send_sse(request, events, named=True)

    async def embeddings(self, request: web.Request) -> web.Response:
        """Deterministic vectors: each input's from a hash of its text (or its token ids),
        `dimensions` long (default 8), as floats or base64 float32."""
        failing = self._failing()
        body = await self._record(request)
        if failing:
            return self._error(500 if self.status == 200 else self.status)
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            vector = fake_vector(str(item), int(body.get("dimensions") or 8))
            tokens += len(item) if isinstance(item, list) else len(str(item).split())
            data.append({"object": "embedding", "index": i,
                         "embedding": vector_b64(vector)
                         if body.get("encoding_format") == "base64" else vector})
        if self.short_embeddings:
            data = data[:-1]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]},
                                 headers={"X-Upstream": "yes"})

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"method": request.method, "path": request.path, "query": request.query_string,
             "headers": dict(request.headers), "body": body.decode(errors="replace")},
            status=int(request.query.get("status", "200")),
        )

    async def sse(self, request: web.Request) -> web.StreamResponse:
        return await self._send_sse(request, [{"n": i} for i in range(5)])


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if p.get("type") in ("text", "input_text"))
    return str(content)


def _word_pieces(text: str) -> list[str]:
    """The text in word-sized deltas whose concatenation is exactly the text."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def fake_vector(text: str, dimensions: int) -> list[float]:
    """The fake upstream's embedding of a text: float32-exact values from its hash."""
    import hashlib

    seed = hashlib.sha256(text.encode()).digest()
    return [float(seed[i % len(seed)] - 128) / 128 for i in range(dimensions)]


def vector_b64(vector: list[float]) -> str:
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


CREDENTIAL_HEADERS = ("api-key", "x-api-key", "x-goog-api-key")
CREDENTIAL_PARAMS = ("api-key", "key")


def credential_of(request: web.Request) -> str:
    """The credential a request carries, as `_tag` writes it."""
    if request.headers.get("Authorization"):
        return request.headers["Authorization"]
    for name in CREDENTIAL_HEADERS:
        if request.headers.get(name):
            return f"{name}={request.headers[name]}"
    for name in CREDENTIAL_PARAMS:
        if request.query.get(name):
            return f"?{name}={request.query[name]}"
    return "nobody"


def main(argv: list[str] | None = None) -> int:
    """`python -m semcache.loadtest.fake_upstream --port N`: the fake in its own process, so
    a benchmark's load generator does not share its event loop (or its core)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m semcache.loadtest.fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    fake = FakeUpstream(delay_s=args.delay)
    # The calls are not recorded in a long-running process: they would grow without bound.
    fake.calls = _Discard()
    fake.headers_seen = _Discard()
    web.run_app(fake.app(), host=args.host, port=args.port, access_log=None, print=None)
    return 0


class _Discard(list):  # type: ignore[type-arg]
    """A list that keeps nothing (`FakeUpstream` appends every call to one)."""

    def append(self, item: object) -> None:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
