"""Serving one completion request on the engine: prompts, choices, text, usage, SSE events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from . import protocol
from .engine import Engine, SamplingParams, Stream
from .errors import InvalidRequest
from .json_mode import JsonConstraint, token_texts
from .text import TextStream


@dataclass
class ChoiceResult:
    index: int
    text: str
    finish_reason: str
    tokens: int
    stop_sequence: str | None = None
    """The stop string that ended the choice (finish_reason "stop"); None for an end of
    sequence token or the token limit."""


class Completer:
    """Turns validated requests into engine sequences and their results into OpenAI JSON."""

    def __init__(self, engine: Engine, tokenizer: Any, model_name: str,
                 default_max_tokens: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self._json_texts: asyncio.Future[list[str | None]] | None = None

    # ---- prompts ------------------------------------------------------------------------

    def prompt_ids(self, req: protocol.CompletionRequest) -> list[list[int]]:
        if req.chat:
            assert req.messages is not None
            return [self._chat_ids(req.messages)]
        vocab = self.engine.runner.vocab_size
        out = []
        for prompt in req.prompts:
            if isinstance(prompt, str):
                out.append(self.tokenizer.encode(prompt, add_special_tokens=False))
            elif all(0 <= t < vocab for t in prompt):
                out.append(prompt)
            else:
                raise InvalidRequest("prompt token ids must lie in the vocabulary", "prompt")
        return out

    def _chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            try:
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False)
            except Exception as e:  # a template may reject e.g. an unknown role
                raise InvalidRequest(f"the chat template rejected the messages: {e}",
                                     "messages") from e
        else:  # a base model: a plain transcript is the best prompt there is
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _params(self, req: protocol.CompletionRequest, prompt: list[int], k: int) -> SamplingParams:
        room = self.engine.max_seq_len - len(prompt)
        max_tokens = req.max_tokens if req.max_tokens is not None else self.default_max_tokens
        seed = None if req.seed is None else req.seed + k  # n choices must differ
        return SamplingParams(max_tokens=max(1, min(max_tokens, room)),
                              temperature=req.temperature, top_p=req.top_p, seed=seed,
                              ignore_eos=req.ignore_eos)

    async def open(self, req: protocol.CompletionRequest,
                   marks: dict[str, float] | None = None) -> tuple[list[int], list[Stream]]:
        """Submit every choice (n per prompt) at once, so that a full queue refuses the
        whole request before any response has started. Returns prompt lengths and streams.

        The chat template and the tokenizer run in a worker thread: their cost grows with
        the prompt (a long system prompt is milliseconds), and on the event loop it would
        stall every other request's stream.

        `marks` (timing.py) goes with the first choice, whose first token it times."""
        prompts = await asyncio.to_thread(self.prompt_ids, req)
        if marks is not None:
            marks["tokenised"] = time.perf_counter()
        texts = await self._token_texts() if req.json_object else None
        streams: list[Stream] = []
        try:
            for prompt in prompts:
                for k in range(req.n):
                    constraint = JsonConstraint(texts) if texts is not None else None
                    streams.append(self.engine.open_stream(
                        prompt, self._params(req, prompt, k), marks if not streams else None,
                        constraint))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return [len(p) for p in prompts], streams

    async def _token_texts(self) -> list[str | None]:
        """Every token's text for JSON mode: decoded once (about a second for a 49k
        vocabulary), in a worker thread, by the first JSON request."""
        if self._json_texts is None:
            self._json_texts = asyncio.ensure_future(asyncio.to_thread(
                token_texts, self.tokenizer, self.engine.runner.vocab_size))
        return await asyncio.shield(self._json_texts)

    # ---- running choices ----------------------------------------------------------------

    async def _run_choice(self, index: int, stream: Stream, stop: list[str],
                          out: asyncio.Queue | None) -> ChoiceResult:
        text = TextStream(self.tokenizer, stop)
        reason = "length"
        try:
            async for event in stream:
                if event.tokens:
                    delta = text.extend(event.tokens)
                    if delta and out is not None:
                        out.put_nowait((index, delta, None))
                    if text.stopped:
                        stream.cancel()  # free the slot now: the rest would be discarded
                        reason = "stop"
                        break
                if event.finish_reason is not None:
                    reason = "stop" if event.finish_reason == "stop" else "length"
            delta = text.finish()
            reason = "stop" if text.stopped else reason
            if out is not None:
                out.put_nowait((index, delta, reason))
            return ChoiceResult(index, text.text, reason, text.tokens, text.matched)
        except Exception as e:  # tell the SSE writer, or it would wait for this choice forever
            if out is not None:
                out.put_nowait((index, None, e))
            raise
        finally:
            stream.cancel()

    async def run(self, req: protocol.CompletionRequest) -> tuple[list[int], list[ChoiceResult]]:
        """Every choice of a request to its end: the prompt lengths and the results."""
        lengths, streams = await self.open(req)
        tasks = [self._run_choice(i, s, req.stop, None) for i, s in enumerate(streams)]
        try:
            return lengths, list(await asyncio.gather(*tasks))
        finally:
            for stream in streams:
                stream.cancel()

    async def complete(self, req: protocol.CompletionRequest) -> dict[str, Any]:
        lengths, results = await self.run(req)
        choices = [protocol.choice(req.chat, r.index, r.text, r.finish_reason) for r in results]
        use = protocol.usage(sum(lengths), sum(r.tokens for r in results))
        return protocol.response(req.chat, protocol.new_id(req.chat), self.model_name,
                                 choices, use)

    async def stream_events(self, req: protocol.CompletionRequest,
                            opened: tuple[list[int], list[Stream]],
                            finished: list[ChoiceResult] | None = None) -> AsyncIterator[dict]:
        """The SSE payloads of a streamed request, in order (without the final [DONE]).

        `finished` receives every choice's result once all have ended, before the usage
        chunk: what the other wire formats (apis.py) say at a stream's end."""
        lengths, streams = opened
        rid, created = protocol.new_id(req.chat), int(time.time())
        out: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._run_choice(i, s, req.stop, out))
                 for i, s in enumerate(streams)]
        started: set[int] = set()
        pending = len(tasks)
        try:
            if req.chat:  # OpenAI opens each choice with a role-only delta
                for i in range(len(streams)):
                    started.add(i)
                    yield protocol.chunk(True, rid, self.model_name, created, i, "", None,
                                         first=True)
            while pending:
                index, delta, reason = await out.get()
                if isinstance(reason, BaseException):
                    raise reason
                if reason is not None:
                    pending -= 1
                if delta:
                    if index == 0:
                        streams[0].seq.marks.setdefault("text", time.perf_counter())
                    yield protocol.chunk(req.chat, rid, self.model_name, created, index,
                                         delta, None)
                if reason is not None:
                    yield protocol.chunk(req.chat, rid, self.model_name, created, index,
                                         None, reason)
            results = [t.result() for t in tasks]
            if finished is not None:
                finished.extend(results)
            if req.include_usage:
                use = protocol.usage(sum(lengths), sum(r.tokens for r in results))
                yield protocol.usage_chunk(req.chat, rid, self.model_name, created, use)
        finally:
            for task in tasks:
                task.cancel()
            for stream in streams:
                stream.cancel()
