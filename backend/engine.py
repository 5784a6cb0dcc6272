"""Continuous batching: the scheduler that owns the model stages in one worker thread.

Each turn of the worker's loop: drop cancelled sequences, admit waiting ones into free slots
(their prompts prefilled together, up to a token budget, after whatever prefix of them the
prefix cache holds), then run one step for every active sequence at once (decoding, or
verifying drafts: decoding.py) and retire the finished ones immediately. A request that
arrives while others are generating therefore waits at most one step to start, never for
the others to finish.

Each step's tokens for a sequence travel as one TokenEvent, and all of a step's events for
one event loop go over in one `call_soon_threadsafe` (a `_Mailbox`); each request reads its
own asyncio queue through a `Stream`. If the worker fails, every open stream gets the error
and the engine reports itself unhealthy rather than leaving requests hanging.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from .decoding import Decoder
from .errors import EngineStopped, InvalidRequest, QueueFull
from .runner import ModelRunner
from .sequence import SamplingParams, Sequence, TokenEvent
from .timing import TtftStats

__all__ = ["Engine", "SamplingParams", "Sequence", "Stream", "TokenEvent"]

log = logging.getLogger(__name__)


class Engine:
    """The scheduler. `submit` is thread-safe; everything else runs on the worker thread."""

    def __init__(
        self,
        decoder: Decoder | ModelRunner,
        *,
        eos_token_ids: set[int],
        max_queue: int = 256,
        max_prefill_tokens: int = 4096,
        threads: int = 0,
        tokenizer: Any = None,
        model_name: str = "model",
    ) -> None:
        # A bare runner gets a decoder with no prefix cache and no speculation.
        self.decoder = decoder if isinstance(decoder, Decoder) else Decoder(decoder)
        runner = self.decoder.runner
        # The tokenizer and name travel with the engine for the HTTP layer; the scheduler
        # itself only ever sees token ids.
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_batch = runner.slots
        self.max_seq_len = runner.max_seq_len
        self.eos_token_ids = set(eos_token_ids)
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.threads = threads
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []  # running[i] holds slot i
        self.steps = 0
        self.peak_running = 0
        self.tokens_generated = 0
        self.model_s = 0.0
        """Seconds the worker spent in model stages (prefill and steps, sampling included);
        against wall time, how busy the device side is and how much is everything else."""
        self.error: BaseException | None = None
        self.ttft = TtftStats()
        """Where streamed requests' time to first token went (the HTTP layer records)."""
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._stopping = False
        self._paused = False
        self._thread: threading.Thread | None = None
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

    @property
    def runner(self) -> ModelRunner:
        return self.decoder.runner

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="backend-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def pause(self) -> None:
        """Stop taking steps (sequences stay where they are); for drains and tests."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._lock.notify_all()

    @property
    def healthy(self) -> bool:
        return self.error is None and not self._stopping

    def stats(self) -> dict[str, Any]:
        """Counters since start; the decoder's (prefill saved by the prefix cache, drafts
        verified and kept) are read without its cooperation, so they may lag by a step."""
        with self._lock:
            own = {"running": len(self.running), "waiting": len(self.waiting),
                   "steps": self.steps, "peak_running": self.peak_running,
                   "tokens_generated": self.tokens_generated,
                   "model_s": round(self.model_s, 4)}
        return {**own, **self.decoder.stats(), "ttft_breakdown": self.ttft.summary()}

    # ---- requests -----------------------------------------------------------------------

    def submit(self, prompt: list[int], params: SamplingParams,
               sink: Callable[[TokenEvent], None],
               marks: dict[str, float] | None = None, constraint: Any = None) -> Sequence:
        """Queue a sequence; `sink` is called on the worker thread with each TokenEvent.
        `marks` (timing.py) collects the sequence's stamps on the way to its first token;
        `constraint` (json_mode.py) limits which tokens it may take."""
        if not prompt:
            raise InvalidRequest("the prompt is empty", "prompt")
        if len(prompt) >= self.max_seq_len:
            raise InvalidRequest(f"the prompt has {len(prompt)} tokens; this backend holds "
                                 f"at most {self.max_seq_len - 1}", "messages")
        seed = params.seed if params.seed is not None else random.getrandbits(64)
        with self._lock:
            if not self.healthy:
                raise EngineStopped("the inference engine is not running")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting; try again later")
            seq = Sequence(next(self._ids), list(prompt), params, sink, random.Random(seed))
            if marks is not None:
                seq.marks = marks
            seq.constraint = constraint
            seq.marks["submitted"] = time.perf_counter()
            self.waiting.append(seq)
            self._lock.notify_all()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Mark a sequence cancelled; the worker frees its slot before its next step."""
        with self._lock:
            seq.cancelled = True
            self._lock.notify_all()

    # ---- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        try:
            while True:
                with self._lock:
                    while not self._stopping and (
                        self._paused or not (self.waiting or self.running)
                    ):
                        self._lock.wait()
                    if self._stopping:
                        break
                    self._drop_cancelled()
                    admitted = self._take_waiting()
                if admitted:
                    self._prefill(admitted)
                if self.running:
                    self._decode()
        except BaseException as e:  # a dead worker must fail its requests, not strand them
            log.exception("the inference engine failed")
            self.error = e
        self._fail_all(self.error or EngineStopped("the inference engine stopped"))

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
        for seq in [s for s in self.running if s.cancelled]:
            self._retire(seq, "cancelled")

    def _take_waiting(self) -> list[Sequence]:
        taken: list[Sequence] = []
        width = 0
        new_blocks: set[bytes] = set()
        while self.waiting and len(self.running) + len(taken) < self.max_batch:
            seq = self.waiting[0]
            # Prompts are prefilled right-padded to the longest part not in the prefix cache,
            # so the cost of a prefill is rows * longest, not the sum of the lengths: bound
            # that (the first prompt is always taken, or a long one could never start).
            left = self.decoder.match_prefix(seq)
            cost = (len(taken) + 1) * max(width, left)
            if taken and cost > self.max_prefill_tokens:
                break
            # A burst of prompts sharing an uncached prefix (one system prompt) computes it
            # once: the others wait a step and find it cached.
            block = self.decoder.first_new_block(seq)
            if block is not None and block in new_blocks:
                break
            if block is not None:
                new_blocks.add(block)
            width = max(width, left)
            taken.append(self.waiting.popleft())
            seq.marks["admitted"] = time.perf_counter()
        return taken

    def _prefill(self, seqs: list[Sequence]) -> None:
        first = len(self.running)
        for i, seq in enumerate(seqs):
            seq.slot, seq.admitted_step = first + i, self.steps
        self.running.extend(seqs)
        t0 = time.perf_counter()
        gained = self.decoder.prefill(seqs, first)
        self.model_s += time.perf_counter() - t0
        self._accept(seqs, gained)
        self.decoder.index_prompts([s for s in seqs if s.slot >= 0])

    def _decode(self) -> None:
        seqs = list(self.running)
        t0 = time.perf_counter()
        gained = self.decoder.step(seqs)
        self.model_s += time.perf_counter() - t0
        self._accept(seqs, gained)

    def _accept(self, seqs: list[Sequence], gained: list[list[int]]) -> None:
        """Append each sequence's new tokens up to the first that finishes it, hand them to
        its sink as one event and retire finished sequences."""
        events: list[tuple[Sequence, TokenEvent]] = []
        for seq, tokens in zip(seqs, gained, strict=True):
            reason = None
            for n, token in enumerate(tokens, 1):
                seq.generated.append(token)
                reason = self._finish_reason(seq, token)
                if reason is not None:
                    tokens = tokens[:n]  # drafts past a stop token or the length are dropped
                    break
            events.append((seq, TokenEvent(tuple(tokens), reason)))
        with self._lock:
            self.steps += 1
            self.tokens_generated += sum(len(e.tokens) for _, e in events)
            self.peak_running = max(self.peak_running, len(self.running))
            for seq, event in events:
                if event.finish_reason is not None:
                    self._retire(seq, event.finish_reason)
        now = time.perf_counter()
        for seq, event in events:
            seq.marks.setdefault("posted", now)
            seq.sink(event)

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        if token in self.eos_token_ids and not seq.params.ignore_eos:
            return "stop"
        if seq.constraint is not None and seq.constraint.done:
            return "stop"  # the JSON object is complete
        if len(seq.generated) >= seq.params.max_tokens:
            return "length"
        if seq.next_position + 1 >= self.max_seq_len:
            return "length"
        return None

    def _retire(self, seq: Sequence, reason: str) -> None:
        """Free the sequence's slot; the last running sequence moves into the hole so that
        the active slots stay 0..B-1. Caller holds the lock."""
        seq.finish_reason, seq.finished_step = reason, self.steps
        self.decoder.release(seq)
        slot = self.running.index(seq)
        last = self.running.pop()
        if last is not seq:
            self.decoder.move_slot(last.slot, slot, last.next_position + 1)
            last.slot = slot
            self.running[slot] = last
        seq.slot = -1
        if reason == "cancelled":
            seq.sink(TokenEvent((), "cancelled"))

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            self._stopping = True
            dead = list(self.running) + list(self.waiting)
            self.running.clear()
            self.waiting.clear()
        for seq in dead:
            seq.sink(TokenEvent((), "error", error))

    # ---- the asyncio side ---------------------------------------------------------------

    def open_stream(self, prompt: list[int], params: SamplingParams,
                    marks: dict[str, float] | None = None, constraint: Any = None) -> Stream:
        """Submit from the event loop; the returned Stream yields this sequence's events."""
        loop = asyncio.get_running_loop()
        with self._lock:
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                # Loops come and go in tests; forget the closed ones rather than hold them.
                for old in [x for x in self._mailboxes if x.is_closed()]:
                    del self._mailboxes[old]
                mailbox = self._mailboxes[loop] = _Mailbox(loop)
        return Stream(self, prompt, params, mailbox, marks, constraint)


class _Mailbox:
    """Events from the worker to one event loop, handed over in batches.

    A step produces an event for every running sequence; one `call_soon_threadsafe` each
    would wake the loop (a write to its self-pipe) 64 times per step at 64 sequences. The
    first event posted schedules one delivery; events posted before it runs ride along."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue[TokenEvent], TokenEvent]] = []

    def post(self, queue: asyncio.Queue[TokenEvent], event: TokenEvent) -> None:
        with self._lock:
            self._items.append((queue, event))
            if len(self._items) > 1:
                return  # a delivery is already scheduled and has not run yet
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, event in items:
            queue.put_nowait(event)


class Stream:
    """The event-loop end of one sequence: an async iterator of TokenEvents.

    Leaving it early (client gone, stop string found) cancels the sequence, so its slot is
    freed at the next step instead of generating for nobody."""

    def __init__(self, engine: Engine, prompt: list[int], params: SamplingParams,
                 mailbox: _Mailbox, marks: dict[str, float] | None = None,
                 constraint: Any = None) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._mailbox = mailbox
        self.done = False
        self.seq = engine.submit(prompt, params, self._from_worker, marks, constraint)

    def _from_worker(self, event: TokenEvent) -> None:
        self._mailbox.post(self._queue, event)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self.done:
            raise StopAsyncIteration
        event = await self._queue.get()
        self.seq.marks.setdefault("delivered", time.perf_counter())
        if event.finish_reason is not None:
            self.done = True
        if event.error is not None:
            raise EngineStopped("the inference engine failed") from event.error
        return event

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._engine.cancel(self.seq)
