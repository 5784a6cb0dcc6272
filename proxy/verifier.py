"""The verifier: a cross-encoder that reads both prompts and says whether one answer serves both.

Trained by `semcache model train-verifier` (proxy/verifier_train.py) and kept in the repo as
embeddings/verifier/model_int8.onnx (23 MB, dynamic int8, sigmoid inside the graph) with its
tokenizer. Only candidates whose similarity falls in the band [threshold, verify_below) are
scored, so most hits never pay for it. On a GPU host, a model_fp32.onnx next to the int8 one
(written by the training command) runs on CUDA through onnxruntime-gpu.

Concurrency as for the encoder: one model thread; the event loop never runs the model.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BUNDLED = Path(__file__).resolve().parent.parent / "embeddings" / "verifier"
MAX_LEN = 96
"""Tokens of the pair together (the training length); longer pairs are truncated."""
CHUNK = 32
"""Pairs per model run on a CPU."""


class VerifierError(Exception):
    """The verifier could not be loaded or failed to run."""


class Verifier:
    """Synchronous scorer: probability that one answer serves both prompts, per pair."""

    def __init__(self, session: Any, tokenizer: Any, *, max_len: int = MAX_LEN) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.inputs = {i.name for i in session.get_inputs()}

    @classmethod
    def open(cls, folder: Path | None = None, *, device: str = "cpu", threads: int = 0) -> Verifier:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = BUNDLED if folder is None else Path(folder)
        cuda = device in ("cuda", "auto") and "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cuda" and not cuda:
            raise VerifierError("device=cuda but onnxruntime sees no CUDA provider")
        name = "model_fp32.onnx" if cuda and (folder / "model_fp32.onnx").is_file() else "model_int8.onnx"
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.enable_truncation(MAX_LEN)
            opts = ort.SessionOptions()
            # Idle intra-op threads must not spin: they would take the cores from the
            # encoder and the event loop between verifier runs (~2 ms per hit measured).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if threads:
                opts.intra_op_num_threads = threads
            providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda
                         else ["CPUExecutionProvider"])
            session = ort.InferenceSession(str(folder / name), opts, providers=providers)
        except Exception as e:  # onnxruntime and tokenizers raise plain exceptions
            raise VerifierError(f"could not load the verifier from {folder}: {e}") from e
        return cls(session, tokenizer)

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Scores in [0, 1] for (cached prompt, new prompt) pairs, in order."""
        out = np.zeros(len(pairs), dtype=np.float32)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), CHUNK):
            idx = order[start:start + CHUNK]
            out[idx] = self._run([pairs[i] for i in idx])
        return out

    def _run(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        encs = self.tokenizer.encode_batch([(a, b) for a, b in pairs])
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encs):
            n = len(enc.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = enc.ids, enc.attention_mask, enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(["score"], {k: v for k, v in feed.items() if k in self.inputs})[0]


class VerifierService:
    """The async face used by the proxy: one model thread, the loop never blocks."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.calls = 0
        """Lookups that asked the verifier (a metric: how often it runs)."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="semcache-verify")

    @classmethod
    async def open(cls, folder: Path | None = None, *, device: str = "cpu") -> VerifierService:
        return cls(await asyncio.to_thread(Verifier.open, folder, device=device))

    async def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.calls += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.verifier.score, pairs)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def load_scorer(settings: Any) -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """The CPU scorer `semcache eval` uses (the proxy's default on a CPU-only host)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = getattr(settings.cache, "verifier_path", "")
    return Verifier.open(Path(path) if path else None, device="cpu").score
