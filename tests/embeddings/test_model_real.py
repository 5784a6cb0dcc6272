"""The real exported MiniLM: parity with sentence-transformers, batch invariance, truncation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from semcache.embeddings.encoder import OnnxEncoder
from semcache.embeddings.export import PACKAGED_NAME, ensure_exported, model_dir, resolve_source
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings

pytestmark = pytest.mark.slow


def _encode(enc: OnnxEncoder, texts: list[str]) -> np.ndarray:
    return enc.post(enc.core(enc.pre(texts)))


@pytest.fixture(scope="module")
def reference(sentences: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    _, folder = resolve_source("packaged")
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(sentences, batch_size=64, normalize_embeddings=True)


@pytest.mark.parametrize(("variant", "floor"), [("fp32", 0.9999), ("int8", 0.99)])
def test_parity_with_sentence_transformers(exported_dir: Path, sentences: list[str],
                                           reference: np.ndarray, variant: str,
                                           floor: float) -> None:
    enc = OnnxEncoder(model_dir(exported_dir, PACKAGED_NAME), device="cpu", variant=variant)
    ours = np.concatenate([_encode(enc, sentences[i:i + 32]) for i in range(0, 300, 32)])
    cos = (ours * reference).sum(axis=1)
    print(f"{variant}: mean cosine {cos.mean():.6f}, min {cos.min():.6f}")
    assert cos.mean() >= floor
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_same_text_same_vector_whatever_the_batch(exported_dir: Path, sentences: list[str],
                                                   variant: str) -> None:
    # Small chunks, so the batch is also split and reordered by length inside the encoder.
    enc = OnnxEncoder(model_dir(exported_dir, PACKAGED_NAME), device="cpu", variant=variant,
                      chunk_rows=8)
    probe = sentences[:16]
    alone = np.concatenate([_encode(enc, [t]) for t in probe])
    # Each probe text batched with long and short strangers (more padding, other scales).
    strangers = sorted(sentences[100:164], key=len)
    mixed = probe + strangers[-24:] + ["ok"] * 8
    rng = np.random.default_rng(0)
    order = rng.permutation(len(mixed))
    shuffled = _encode(enc, [mixed[i] for i in order])
    in_batch = shuffled[np.argsort(order)][: len(probe)]
    cos = (alone * in_batch).sum(axis=1)
    print(f"{variant}: min cosine alone vs batched {cos.min():.7f}")
    assert cos.min() >= 1 - 1e-3


def test_truncation_at_model_limit_is_counted(exported_dir: Path) -> None:
    enc = OnnxEncoder(model_dir(exported_dir, PACKAGED_NAME), device="cpu", variant="int8")
    batch = enc.pre(["word " * 600, "short text"])
    _order, chunks = batch.inputs
    assert batch.truncated == 1 and chunks[-1][0].shape[1] == enc.max_seq_len == 256
    capped = OnnxEncoder(model_dir(exported_dir, PACKAGED_NAME), device="cpu", variant="int8",
                         max_seq_len=16)
    assert capped.pre(["word " * 20]).truncated == 1


def test_export_is_reused_while_the_source_is_unchanged(exported_dir: Path) -> None:
    out = model_dir(exported_dir, PACKAGED_NAME)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")}
    ensure_exported(exported_dir, "packaged", ("fp32", "int8"))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")} == before


async def test_service_on_the_real_model(exported_dir: Path, sentences: list[str]) -> None:
    settings = EmbeddingSettings(device="cpu", variant="int8", max_batch=32,
                                 export_variants=("fp32", "int8"))
    svc = await EmbeddingService.open(settings, exported_dir)
    try:
        assert svc.describe() == {"model": PACKAGED_NAME, "variant": "int8",
                                  "provider": "CPUExecutionProvider", "max_seq_len": 256,
                                  "dim": 384}
        vecs = await asyncio.gather(*[svc.embed(t) for t in sentences[:200]])
        assert svc.stats.batches < 200 and svc.stats.texts == 200
        alone = await svc.embed_many(sentences[:4])  # LRU hits: identical objects
        assert all(np.array_equal(a, b) for a, b in zip(alone, vecs[:4], strict=True))
        para = await svc.embed_many(["How do I learn Python?", "What is the best way to learn "
                                     "Python?", "How do I bake bread?"])
        assert para[0] @ para[1] > 0.8 > para[0] @ para[2]
    finally:
        await svc.close()
