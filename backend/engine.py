"""Continuous batching: the scheduler that owns the model runner in one worker thread.

Each turn of the worker's loop: drop cancelled sequences, admit waiting ones into free slots
(their prompts prefilled together, up to a token budget), then run one decoding step for
every active sequence at once and retire the finished ones immediately. A request that
arrives while others are generating therefore waits at most one step to start, never for
the others to finish.

Tokens flow back to the event loop with one `call_soon_threadsafe` per step; each request
reads its own asyncio queue through a `Stream`. If the worker fails, every open stream gets
the error and the engine reports itself unhealthy rather than leaving requests hanging.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import EngineStopped, InvalidRequest, QueueFull
from .runner import ModelRunner
from .sampling import sample

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """What one sequence asks of the decoder."""

    max_tokens: int
    """Most tokens to generate (clipped to the slot's room)."""
    temperature: float = 1.0
    """0 is greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    seed: int | None = None
    """Fixes the sequence's own random stream, independent of its batch neighbours."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks want fixed lengths)."""


@dataclass(frozen=True)
class TokenEvent:
    """One step's news for a sequence: a new token, and/or why it finished."""

    token: int | None
    finish_reason: str | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class Sequence:
    """A prompt being completed; lives in `waiting`, then in a slot, then is retired."""

    id: int
    prompt: list[int]
    params: SamplingParams
    sink: Callable[[TokenEvent], None]
    rng: random.Random
    generated: list[int] = field(default_factory=list)
    slot: int = -1
    finish_reason: str | None = None
    cancelled: bool = False
    admitted_step: int = -1
    finished_step: int = -1

    @property
    def next_position(self) -> int:
        """Cache position of the newest token, the one the next step feeds."""
        return len(self.prompt) + len(self.generated) - 1


class Engine:
    """The scheduler. `submit` is thread-safe; everything else runs on the worker thread."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        eos_token_ids: set[int],
        max_queue: int = 256,
        max_prefill_tokens: int = 4096,
        threads: int = 0,
        tokenizer: Any = None,
        model_name: str = "model",
    ) -> None:
        self.runner = runner
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
        self.error: BaseException | None = None
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._stopping = False
        self._paused = False
        self._thread: threading.Thread | None = None

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

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": len(self.running), "waiting": len(self.waiting),
                    "steps": self.steps, "peak_running": self.peak_running,
                    "tokens_generated": self.tokens_generated}

    # ---- requests -----------------------------------------------------------------------

    def submit(self, prompt: list[int], params: SamplingParams,
               sink: Callable[[TokenEvent], None]) -> Sequence:
        """Queue a sequence; `sink` is called on the worker thread with each TokenEvent."""
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
        while self.waiting and len(self.running) + len(taken) < self.max_batch:
            seq = self.waiting[0]
            # Prompts are prefilled right-padded to the longest, so the cost of a prefill
            # is rows * longest, not the sum of the lengths: bound that (the first prompt is
            # always taken, or a long one could never start).
            cost = (len(taken) + 1) * max(width, len(seq.prompt))
            if taken and cost > self.max_prefill_tokens:
                break
            width = max(width, len(seq.prompt))
            taken.append(self.waiting.popleft())
        return taken

    def _prefill(self, seqs: list[Sequence]) -> None:
        first = len(self.running)
        for i, seq in enumerate(seqs):
            seq.slot, seq.admitted_step = first + i, self.steps
        self.running.extend(seqs)
        logits = self.runner.prefill(first, [s.prompt for s in seqs])
        self._accept(seqs, logits)

    def _decode(self) -> None:
        seqs = list(self.running)
        logits = self.runner.decode([s.generated[-1] for s in seqs],
                                    [s.next_position for s in seqs])
        self._accept(seqs, logits)

    def _accept(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        """Sample one token per sequence, hand it to its sink and retire finished ones."""
        tokens = sample(logits, [s.params.temperature for s in seqs],
                        [s.params.top_p for s in seqs], [s.rng.random() for s in seqs])
        events: list[tuple[Sequence, TokenEvent]] = []
        for seq, token in zip(seqs, tokens, strict=True):
            seq.generated.append(token)
            reason = self._finish_reason(seq, token)
            events.append((seq, TokenEvent(token, reason)))
        with self._lock:
            self.steps += 1
            self.tokens_generated += len(seqs)
            self.peak_running = max(self.peak_running, len(self.running))
            for seq, event in events:
                if event.finish_reason is not None:
                    self._retire(seq, event.finish_reason)
        for seq, event in events:
            seq.sink(event)

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        if token in self.eos_token_ids and not seq.params.ignore_eos:
            return "stop"
        if len(seq.generated) >= seq.params.max_tokens:
            return "length"
        if seq.next_position + 1 >= self.max_seq_len:
            return "length"
        return None

    def _retire(self, seq: Sequence, reason: str) -> None:
        """Free the sequence's slot; the last running sequence moves into the hole so that
        the active slots stay 0..B-1. Caller holds the lock."""
        seq.finish_reason, seq.finished_step = reason, self.steps
        slot = self.running.index(seq)
        last = self.running.pop()
        if last is not seq:
            self.runner.move_slot(last.slot, slot, last.next_position + 1)
            last.slot = slot
            self.running[slot] = last
        seq.slot = -1
        if reason == "cancelled":
            seq.sink(TokenEvent(None, "cancelled"))

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            self._stopping = True
            dead = list(self.running) + list(self.waiting)
            self.running.clear()
            self.waiting.clear()
        for seq in dead:
            seq.sink(TokenEvent(None, "error", error))

    # ---- the asyncio side ---------------------------------------------------------------

    def open_stream(self, prompt: list[int], params: SamplingParams) -> Stream:
        """Submit from the event loop; the returned Stream yields this sequence's events."""
        return Stream(self, prompt, params, asyncio.get_running_loop())


class Stream:
    """The event-loop end of one sequence: an async iterator of TokenEvents.

    Leaving it early (client gone, stop string found) cancels the sequence, so its slot is
    freed at the next step instead of generating for nobody."""

    def __init__(self, engine: Engine, prompt: list[int], params: SamplingParams,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._loop = loop
        self.done = False
        self.seq = engine.submit(prompt, params, self._from_worker)

    def _from_worker(self, event: TokenEvent) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self.done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event.finish_reason is not None:
            self.done = True
        if event.error is not None:
            raise EngineStopped("the inference engine failed") from event.error
        return event

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._engine.cancel(self.seq)
