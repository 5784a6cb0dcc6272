"""A deterministic fake encoder for unit tests: bag-of-words hashing, no model, no I/O.

Texts sharing most of their words get a high cosine; unrelated texts are near orthogonal.
It has the same pre/core/post interface as the ONNX encoder, so it plugs into the real
batcher (`EmbeddingService.from_encoder(HashEncoder(), settings)`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from .encoder import Batch, normalise

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEncoder:
    def __init__(self, dim: int = 384, max_seq_len: int = 256) -> None:
        self.dim = dim
        self.max_seq_len = max_seq_len
        self.runs = 0
        self.batch_sizes: list[int] = []

    def pre(self, texts: list[str]) -> Batch:
        tokens = [_WORD.findall(t.lower()) for t in texts]
        truncated = sum(1 for t in tokens if len(t) > self.max_seq_len)
        return Batch(inputs=[t[: self.max_seq_len] for t in tokens], size=len(texts),
                     truncated=truncated)

    def core(self, batch: Batch) -> np.ndarray:
        self.runs += 1
        self.batch_sizes.append(batch.size)
        out = np.zeros((batch.size, self.dim), dtype=np.float32)
        for row, words in enumerate(batch.inputs):
            for word in words or ["<empty>"]:
                # blake2b, not hash(): Python salts str hashes per process.
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return out

    def post(self, raw: np.ndarray) -> np.ndarray:
        return normalise(raw)

    def describe(self) -> dict[str, Any]:
        return {"model": "hash", "variant": "fake", "provider": "none",
                "max_seq_len": self.max_seq_len, "dim": self.dim}

    def close(self) -> None:
        pass
