"""The batcher, queue, LRU and failure handling, driven by the deterministic fake encoder."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from semcache.embeddings.encoder import Batch
from semcache.embeddings.fake import HashEncoder
from semcache.embeddings.service import (
    EmbeddingError,
    EmbeddingService,
    EncoderUnavailableError,
    QueueFullError,
)
from semcache.embeddings.settings import EmbeddingSettings


class GatedEncoder(HashEncoder):
    """Holds every model run until the test opens the gate; records the threads used."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.threads: set[str] = set()

    def pre(self, texts: list[str]) -> Batch:
        self.threads.add(threading.current_thread().name)
        return super().pre(texts)

    def core(self, batch: Batch) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        assert self.gate.wait(10), "test never opened the gate"
        return super().core(batch)


class FlakyEncoder(HashEncoder):
    """Its model run raises while `failing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def core(self, batch: Batch) -> np.ndarray:
        if self.failing:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().core(batch)


async def test_vectors_are_unit_float32_and_similar_texts_close() -> None:
    svc = EmbeddingService.from_encoder(HashEncoder(), EmbeddingSettings())
    try:
        a = await svc.embed("how do I learn python quickly")
        b = await svc.embed("how can I learn python quickly")
        c = await svc.embed("best pizza in naples")
        assert a.dtype == np.float32 and a.shape == (svc.dim,) == (384,)
        assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
        assert float(a @ b) > 0.7 > float(a @ c)
        assert svc.describe()["model"] == "hash"
    finally:
        await svc.close()


async def test_hundreds_of_concurrent_callers_are_answered_in_batches() -> None:
    enc = GatedEncoder()
    svc = EmbeddingService.from_encoder(enc, EmbeddingSettings(max_batch=64, max_wait_ms=5))
    texts = [f"question number {i} about topic {i % 7}" for i in range(500)]
    try:
        tasks = [asyncio.ensure_future(svc.embed(t)) for t in texts]
        await asyncio.sleep(0.05)
        enc.gate.set()
        vecs = await asyncio.gather(*tasks)
        solo = HashEncoder()
        for text, vec in zip(texts, vecs, strict=True):  # every caller got its own text's vector
            np.testing.assert_allclose(vec, solo.post(solo.core(solo.pre([text])))[0], atol=1e-6)
        assert svc.stats.texts == 500 and svc.stats.batch_size_sum == 500
        assert svc.stats.batches == len(enc.batch_sizes) <= 500 // 64 + 2
        assert max(enc.batch_sizes) == 64
        assert "MainThread" not in enc.threads  # tokenising and the model run stay off the loop
        assert svc.healthy and svc.stats.queue_depth == 0
    finally:
        await svc.close()


async def test_full_queue_raises_at_once_and_recovers() -> None:
    enc = GatedEncoder()
    svc = EmbeddingService.from_encoder(enc, EmbeddingSettings(max_batch=2, max_queue=4))
    try:
        first = [asyncio.ensure_future(svc.embed(f"t{i}")) for i in range(2)]
        await asyncio.sleep(0.05)  # the batcher has taken both; the model run is held
        queued = [asyncio.ensure_future(svc.embed(f"q{i}")) for i in range(4)]
        await asyncio.sleep(0)
        assert svc.stats.queue_depth >= 2
        more = [f"x{i}" for i in range(6)]
        with pytest.raises(QueueFullError):
            for text in more:  # fills the queue, then the next put must fail immediately
                queued.append(asyncio.ensure_future(svc.embed(text)))
                await asyncio.sleep(0)
                if any(f.done() and f.exception() for f in queued):
                    raise next(f.exception() for f in queued if f.done() and f.exception())
        with pytest.raises(QueueFullError):
            await svc.embed_many(["a", "b", "c", "d", "e", "f"])
        assert issubclass(QueueFullError, EmbeddingError)
        enc.gate.set()
        ok = [f for f in queued if not (f.done() and f.exception())]
        await asyncio.gather(*first, *ok)
        assert (await svc.embed("after")).shape == (384,)
    finally:
        enc.gate.set()
        await svc.close()


async def test_failed_run_fails_its_futures_and_marks_unhealthy() -> None:
    enc = FlakyEncoder()
    svc = EmbeddingService.from_encoder(enc, EmbeddingSettings())
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*[svc.embed(f"t{i}") for i in range(10)], return_exceptions=True), 5)
        assert all(isinstance(r, EncoderUnavailableError) for r in results)
        assert isinstance(results[0].__cause__, RuntimeError)
        assert not svc.healthy and svc.stats.failures >= 1
        assert svc.stats.lru_hits == 0 and svc.stats.texts == 0
        enc.failing = False  # the GPU came back: the next batch succeeds and heals the service
        assert (await asyncio.wait_for(svc.embed("t0"), 5)).shape == (384,)
        assert svc.healthy
    finally:
        await svc.close()


async def test_truncation_is_counted() -> None:
    svc = EmbeddingService.from_encoder(HashEncoder(max_seq_len=5), EmbeddingSettings())
    try:
        await svc.embed_many(["one two three", "a b c d e f g h", "x y z w v u"])
        assert svc.stats.truncated == 2
    finally:
        await svc.close()


async def test_lru_answers_exact_repeats_and_evicts_oldest() -> None:
    enc = HashEncoder()
    svc = EmbeddingService.from_encoder(enc, EmbeddingSettings(lru_size=2))
    try:
        a = await svc.embed("alpha")
        again = await svc.embed("alpha")
        assert again is a and svc.stats.lru_hits == 1 and enc.runs == 1
        assert not a.flags.writeable  # shared with the LRU: nobody may modify it in place
        await svc.embed("beta")
        await svc.embed("gamma")  # evicts alpha
        await svc.embed("alpha")
        assert enc.runs == 4 and svc.stats.lru_hits == 1
    finally:
        await svc.close()


async def test_embed_many_keeps_order_and_matches_embed() -> None:
    svc = EmbeddingService.from_encoder(HashEncoder(), EmbeddingSettings(lru_size=0))
    try:
        texts = ["red apple", "green pear", "red apple", "blue sky"]
        many = await svc.embed_many(texts)
        assert many.shape == (4, 384)
        for text, row in zip(texts, many, strict=True):
            np.testing.assert_allclose(row, await svc.embed(text), atol=1e-6)
        assert (await svc.embed_many([])).shape == (0, 384)
    finally:
        await svc.close()


async def test_close_fails_queued_texts_and_refuses_new_ones() -> None:
    enc = GatedEncoder()
    svc = EmbeddingService.from_encoder(enc, EmbeddingSettings(max_batch=1))
    running = asyncio.ensure_future(svc.embed("running"))
    await asyncio.sleep(0.05)
    waiting = [asyncio.ensure_future(svc.embed(f"w{i}")) for i in range(3)]
    await asyncio.sleep(0)
    enc.gate.set()
    await svc.close()
    assert (await running).shape == (384,)
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, (np.ndarray, EncoderUnavailableError)) for o in outcomes)
    with pytest.raises(EncoderUnavailableError):
        await svc.embed("late")
