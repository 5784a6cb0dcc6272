"""The embedding service: an LRU, a bounded queue and a micro-batcher in front of an encoder.

Concurrency lives here and only here. One asyncio worker task gathers queued texts into a
batch, tokenises it on a tokenizer thread and hands it to the single model thread, then goes
straight back to gathering and tokenising the next batch while the model runs: on a GPU the
device is kept busy while the CPU prepares its next input. At most two batches are in flight
(one running, one tokenised and waiting), which bounds memory and keeps latency honest.

Imports only numpy (and, through encoder.py, onnxruntime and tokenizers): no torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encoder import Batch, Encoder, open_onnx_encoder
from .errors import EmbeddingError, EncoderUnavailableError, QueueFullError
from .settings import EmbeddingSettings

__all__ = ["EmbeddingError", "EmbeddingService", "EmbeddingStats", "EncoderUnavailableError",
           "QueueFullError"]

log = logging.getLogger(__name__)

_PIPELINE_DEPTH = 2  # batches handed to the model thread and not yet finished


@dataclass
class EmbeddingStats:
    """Plain counters for the metrics module (read them; never reset them)."""

    texts: int = 0
    """Texts encoded by the model (LRU hits excluded)."""
    batches: int = 0
    """Model runs, successful or not."""
    batch_size_sum: int = 0
    """Sum of batch sizes; batch_size_sum / batches is the mean batch size."""
    truncated: int = 0
    """Texts cut at the model's token limit."""
    lru_hits: int = 0
    """embed() calls answered from the LRU without running the model."""
    failures: int = 0
    """Failed batches (each failed all of its texts)."""
    queue_depth: int = 0
    """Texts waiting in the queue right now (a gauge)."""


@dataclass(slots=True)
class _Item:
    text: str
    future: asyncio.Future[np.ndarray]


class EmbeddingService:
    """Turns texts into L2-normalised float32 vectors, micro-batched, never blocking the loop."""

    def __init__(self, encoder: Encoder, settings: EmbeddingSettings) -> None:
        self._encoder = encoder
        self._settings = settings
        self.dim: int = encoder.dim
        self.healthy: bool = True
        self.stats = EmbeddingStats()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=settings.max_queue)
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._tok_pool = ThreadPoolExecutor(1, thread_name_prefix="semcache-tokenize")
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="semcache-encode")
        self._inflight: set[asyncio.Future[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="embed-batcher")

    # ---------------------------------------------------------------- construction
    @classmethod
    async def open(cls, settings: EmbeddingSettings, data_dir: Path) -> EmbeddingService:
        """Export the model if needed (in a thread, progress logged), load it, start batching."""
        from .export import ensure_exported

        def load() -> Encoder:
            out_dir = ensure_exported(Path(data_dir), settings.model, settings.export_variants)
            return open_onnx_encoder(out_dir, settings)

        try:
            encoder = await asyncio.to_thread(load)
        except EmbeddingError:
            raise
        except Exception as e:  # onnxruntime raises plain RuntimeErrors on a bad file
            raise EncoderUnavailableError(f"could not load the encoder: {e}") from e
        service = cls(encoder, settings)
        log.info("embedding service ready: %s", service.describe())
        return service

    @classmethod
    def from_encoder(cls, encoder: Encoder, settings: EmbeddingSettings) -> EmbeddingService:
        """Wrap any pre/core/post encoder (e.g. fake.HashEncoder); must run inside a loop."""
        return cls(encoder, settings)

    def describe(self) -> dict[str, Any]:
        return dict(self._encoder.describe())

    def fits(self, text: str) -> bool:
        """Whether the encoder reads `text` whole (an encoder that cannot tell: yes)."""
        fits = getattr(self._encoder, "fits", None)
        return True if fits is None else bool(fits(text))

    # ---------------------------------------------------------------- public calls
    async def embed(self, text: str) -> np.ndarray:
        """The unit vector of `text` (shape (dim,), float32, read-only)."""
        cached = self._lru_get(text)
        if cached is not None:
            return cached
        return await self._enqueue(text)

    async def embed_many(self, texts: list[str]) -> np.ndarray:
        """Vectors of `texts` as one (n, dim) array; all are queued or none (QueueFullError)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[np.ndarray | asyncio.Future[np.ndarray]] = []
        missing = [t for t in texts if t not in self._lru]
        if len(missing) > self._queue.maxsize - self._queue.qsize():
            raise QueueFullError(f"{len(missing)} texts do not fit in the embedding queue")
        for text in texts:
            cached = self._lru_get(text)
            rows.append(cached if cached is not None else self._put(text))
        done = [r if isinstance(r, np.ndarray) else await r for r in rows]
        return np.stack(done)

    async def close(self) -> None:
        """Stop the batcher; texts still queued fail with EncoderUnavailableError."""
        if self._closed:
            return
        self._closed = True
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        if self._inflight:
            await asyncio.wait(self._inflight)
        self._fail_queued(EncoderUnavailableError("the embedding service is closed"))
        self._tok_pool.shutdown(wait=True)
        self._model_pool.shutdown(wait=True)
        self._encoder.close()

    # ---------------------------------------------------------------- queue and LRU
    def _lru_get(self, text: str) -> np.ndarray | None:
        vec = self._lru.get(text)
        if vec is not None:
            self._lru.move_to_end(text)
            self.stats.lru_hits += 1
        return vec

    def _lru_put(self, text: str, vec: np.ndarray) -> None:
        if self._settings.lru_size <= 0:
            return
        self._lru[text] = vec
        self._lru.move_to_end(text)
        while len(self._lru) > self._settings.lru_size:
            self._lru.popitem(last=False)

    def _put(self, text: str) -> asyncio.Future[np.ndarray]:
        if self._closed:
            raise EncoderUnavailableError("the embedding service is closed")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(text, future))
        except asyncio.QueueFull:
            raise QueueFullError("the embedding queue is full") from None
        self.stats.queue_depth = self._queue.qsize()
        return future

    async def _enqueue(self, text: str) -> np.ndarray:
        return await self._put(text)

    def _fail_queued(self, exc: Exception) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(exc)
        self.stats.queue_depth = 0

    # ---------------------------------------------------------------- the batcher
    async def _run(self) -> None:
        try:
            while True:
                items = await self._gather()
                await self._dispatch(items)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a bug here must not leave callers waiting forever
            log.exception("embedding batcher crashed")
            self.healthy = False
            self._fail_queued(EncoderUnavailableError(f"embedding batcher crashed: {e!r}"))
            raise

    async def _gather(self) -> list[_Item]:
        """One batch: wait for a first text, then take what comes while the model is busy.

        An idle model takes what is queued right away (a lone request pays no waiting);
        a busy one lets the batch grow for up to max_wait_ms or until max_batch.
        """
        items = [await self._queue.get()]
        deadline = time.monotonic() + self._settings.max_wait_ms / 1000
        while len(items) < self._settings.max_batch:
            try:
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if self._idle.is_set() or remaining <= 0:
                break
            await self._wait_for_item_or_idle(items, remaining)
        self.stats.queue_depth = self._queue.qsize()
        return [i for i in items if not i.future.cancelled()]

    async def _wait_for_item_or_idle(self, items: list[_Item], wait_s: float) -> None:
        getter = asyncio.ensure_future(self._queue.get())
        idle = asyncio.ensure_future(self._idle.wait())
        try:
            await asyncio.wait({getter, idle}, timeout=wait_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            if getter.done() and not getter.cancelled():
                items.append(getter.result())
            else:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                if getter.done() and not getter.cancelled():  # won the race with cancel
                    items.append(getter.result())

    async def _dispatch(self, items: list[_Item]) -> None:
        if not items:
            return
        loop = asyncio.get_running_loop()
        texts = [i.text for i in items]
        try:
            batch = await loop.run_in_executor(self._tok_pool, self._encoder.pre, texts)
        except Exception as e:
            self._fail(items, e)
            return
        while len(self._inflight) >= _PIPELINE_DEPTH:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
        self._idle.clear()
        run = loop.run_in_executor(self._model_pool, self._infer, batch)
        self._inflight.add(run)
        run.add_done_callback(lambda f, items=items, batch=batch: self._deliver(items, batch, f))

    def _infer(self, batch: Batch) -> np.ndarray:
        return self._encoder.post(self._encoder.core(batch))

    def _deliver(self, items: list[_Item], batch: Batch, run: asyncio.Future[Any]) -> None:
        self._inflight.discard(run)
        self.stats.batches += 1
        self.stats.batch_size_sum += len(items)
        self.stats.truncated += batch.truncated
        exc = run.exception() if not run.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self._fail(items, exc)
        else:
            self.healthy = True
            vecs: np.ndarray = run.result()
            vecs.setflags(write=False)  # rows are shared with the LRU and other callers
            self.stats.texts += len(items)
            for item, vec in zip(items, vecs, strict=True):
                self._lru_put(item.text, vec)
                if not item.future.done():
                    item.future.set_result(vec)
        if not self._inflight:
            # Set after the results, so callers woken above re-queue before the batcher
            # sees the model idle: closed-loop callers then form full batches.
            self._idle.set()

    def _fail(self, items: list[_Item], exc: BaseException) -> None:
        self.healthy = False
        self.stats.failures += 1
        log.warning("embedding batch of %d failed: %r", len(items), exc)
        for item in items:
            if not item.future.done():
                err = EncoderUnavailableError(f"the encoder failed: {type(exc).__name__}")
                err.__cause__ = exc
                item.future.set_exception(err)
