"""Encoders: synchronous, stateless-per-call stages `pre` (tokenise), `core` (run the graph)
and `post` (finish the vectors). The batcher in service.py alone owns threads and queues.

This module imports only onnxruntime, tokenizers and numpy: it is on the proxy's hot path.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import EmbeddingError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """What `pre` hands to `core`: model inputs plus how many texts were truncated."""

    inputs: Any
    size: int
    truncated: int = 0


class Encoder(Protocol):
    """The interface the batcher drives; `core` may run on a GPU and must release the GIL."""

    dim: int
    max_seq_len: int

    def pre(self, texts: list[str]) -> Batch: ...

    def core(self, batch: Batch) -> Any: ...

    def post(self, raw: Any) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def normalise(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


def cuda_usable() -> bool:
    """True when onnxruntime-gpu is installed and its CUDA libraries load."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            # Finds CUDA and cuDNN from their pip packages (nvidia-*-cu12/13 wheels).
            preload()
        except Exception as e:  # a broken CUDA install means: use the CPU
            log.warning("onnxruntime.preload_dlls failed, using the CPU: %s", e)
            return False
    return True


# cudaSetDeviceFlags values (cuda_runtime_api.h): how a host thread waits for the GPU.
CUDA_SYNC_FLAGS = {"auto": 0, "spin": 1, "yield": 2, "blocking": 4}


def set_cuda_sync(mode: str) -> bool:
    """Choose how this process's threads wait for the GPU, before its CUDA context exists.

    CUDA's default ("auto") spins a core for every wait when the process has fewer contexts
    than the machine has cores, which is always: with several proxy processes sharing one
    GPU, each one burns a core per wait while the GPU time-slices between them. "blocking"
    sleeps on an interrupt instead, "yield" spins but yields. Returns False (and logs) when
    the CUDA runtime that onnxruntime loaded cannot be found or refuses the flag.
    """
    import ctypes

    flag = CUDA_SYNC_FLAGS.get(mode)
    if flag is None:
        raise EmbeddingError(f"embeddings.cuda_sync: {mode!r} is not one of {sorted(CUDA_SYNC_FLAGS)}")
    if flag == 0:
        return True
    # The libcudart that onnxruntime.preload_dlls() loaded (from the nvidia pip packages),
    # else whichever the loader finds: one process has one runtime and one primary context.
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    loaded = sorted({line.split()[-1] for line in maps.splitlines() if "libcudart.so" in line})
    for name in [*loaded, "libcudart.so.13", "libcudart.so.12", "libcudart.so"]:
        try:
            rt = ctypes.CDLL(name)
        except OSError:
            continue
        err = rt.cudaSetDeviceFlags(ctypes.c_uint(flag))
        if err == 0:
            log.info("CUDA waits: %s (%s)", mode, name)
            return True
        log.warning("cudaSetDeviceFlags(%s) failed with CUDA error %s; waits stay as they are",
                    mode, err)
        return False
    log.warning("no CUDA runtime library found to set embeddings.cuda_sync = %r", mode)
    return False


def pick_device_variant(device: str, variant: str) -> tuple[str, str]:
    if device not in ("auto", "cuda", "cpu"):
        raise EmbeddingError(f"embeddings.device: {device!r} is not auto, cuda or cpu")
    if variant not in ("auto", "fp32", "fp16", "int8"):
        raise EmbeddingError(f"embeddings.variant: {variant!r} is not auto, fp32, fp16 or int8")
    if device == "auto":
        device = "cuda" if cuda_usable() else "cpu"
    elif device == "cuda" and not cuda_usable():
        raise EmbeddingError("embeddings.device = 'cuda' but onnxruntime sees no usable GPU")
    if variant == "auto":
        variant = "fp16" if device == "cuda" else "int8"
    if variant == "fp16" and device == "cpu":
        # fp16 kernels on onnxruntime's CPU provider are slow fallbacks; never worth it.
        log.warning("embeddings.variant fp16 on CPU is slow; consider int8 or fp32")
    return device, variant


# A chunk is closed when its padded size would pass slack x its real tokens plus floor.
# CPU: an extra run costs ~0.1-0.3 ms while padding costs full compute per token, so cut
# eagerly. CUDA: a run costs ~1 ms of launches, so a small batch is rarely cut (the floor:
# 64 texts of up to 128 tokens never are), while a large one is cut close to its real tokens.
# Measured on one H100 (bench_embeddings --pad-rules, loadtest/results/pad_rules_h100.json):
# 4096 Quora questions padded to 1.29x their tokens instead of 1.75x, 115k sentences/s
# pipelined instead of 100k; batches of 128 at 26.6k/s against 29.0k (1.1 x + 4096: 119k and
# 24.5k).
PAD_RULE = {"cpu": (1.25, 64), "cuda": (1.1, 8192)}


class OnnxEncoder:
    """The exported sentence encoder: tokenizers for `pre`, one onnxruntime session for `core`.

    On CUDA `core` uses IO binding: inputs are copied once into device buffers and the output
    is bound to host memory, so a run is one upload, the kernels, and one small download.
    """

    def __init__(self, model_dir: Path, *, device: str, variant: str, threads: int = 0,
                 max_seq_len: int = 0, spinning: bool = False, chunk_rows: int = 0,
                 cuda_graphs: bool = False, cuda_sync: str = "auto") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        manifest = json.loads((model_dir / "manifest.json").read_text())
        if variant not in manifest["variants"]:
            raise EmbeddingError(f"variant {variant} was not exported to {model_dir}")
        self.model = manifest["model"]
        self.variant = variant
        self.device = device
        self.dim = int(manifest["dim"])
        limit = int(manifest["max_seq_len"])
        self.max_seq_len = min(max_seq_len, limit) if max_seq_len > 0 else limit
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_seq_len)
        self._tokenizer.no_padding()  # we pad to the longest in the batch ourselves
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        elif device == "cuda":
            # The GPU does the work; a pool of CPU threads per session (one per core, by
            # default) only competes with the event loop and the other replicas.
            opts.intra_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        self.cuda_sync = None
        if device == "cuda":
            self.cuda_sync = cuda_sync if set_cuda_sync(cuda_sync) else "auto"
            providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        path = model_dir / manifest["variants"][variant]
        self._session = ort.InferenceSession(str(path), opts, providers=providers)
        self.provider = self._session.get_providers()[0]
        self._cuda = self.provider == "CUDAExecutionProvider"
        # Rows per model run: a GPU wants big runs (launch overhead), a CPU gains nothing
        # past a few dozen rows and pays for padding.
        self.chunk_rows = chunk_rows or (1024 if self._cuda else 32)
        self.pad_rule = PAD_RULE["cuda" if self._cuda else "cpu"]
        self._graphs = (_SingleTextGraphs(path, self.max_seq_len, self.dim)
                        if self._cuda and cuda_graphs else None)

    def pre(self, texts: list[str]) -> Batch:
        """Tokenise, sort by length and cut into chunks padded to their own longest text.

        A big batch of real prompts has a long tail of lengths; padding all of it to the
        longest wastes most of the compute. Sorted chunks keep padding small. Rows stay
        independent of each other (mean pooling masks padding, int8 scales are per token),
        so the chunking cannot change a text's vector.
        """
        # encode_batch_fast skips character offsets (unused here) and runs on rayon threads.
        encs = self._tokenizer.encode_batch_fast(texts)
        lengths = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
        order = np.argsort(lengths, kind="stable")
        chunks = []
        for run in self._split(lengths[order]):
            rows = order[run]
            lens = lengths[rows]
            mask = np.arange(int(lens[-1]))[None, :] < lens[:, None]  # rows sorted by length
            ids = np.zeros(mask.shape, dtype=np.int64)
            # One flat copy of the chunk's tokens, scattered row by row into the padding.
            ids[mask] = np.fromiter(itertools.chain.from_iterable(encs[i].ids for i in rows),
                                    dtype=np.int64, count=int(lens.sum()))
            chunks.append((ids, mask.astype(np.int64)))
        truncated = sum(1 for e in encs if e.overflowing)
        return Batch(inputs=(order, chunks), size=len(texts), truncated=truncated)

    def _split(self, sorted_lengths: np.ndarray) -> list[slice]:
        """Cut ascending lengths into runs: a run ends before the row whose padding (rows x
        its length) would pass slack x the run's real tokens + floor, or at chunk_rows."""
        slack, floor = self.pad_rule
        out, start, n = [], 0, len(sorted_lengths)
        while start < n:
            window = sorted_lengths[start:start + self.chunk_rows]
            over = np.arange(1, len(window) + 1) * window > slack * np.cumsum(window) + floor
            over[0] = False  # a run holds at least one row
            end = int(np.argmax(over)) if over.any() else len(window)
            out.append(slice(start, start + end))
            start += end
        return out

    def core(self, batch: Batch) -> np.ndarray:
        order, chunks = batch.inputs
        parts = [self._run(ids, mask) for ids, mask in chunks]
        out = np.empty((batch.size, parts[0].shape[1]), dtype=parts[0].dtype)
        out[order] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._graphs is not None and ids.shape[0] == 1:
            return self._graphs.run(ids)
        if not self._cuda:
            return self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        binding = self._session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_output("embedding", "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def post(self, raw: np.ndarray) -> np.ndarray:
        # The graph already normalises; renormalising in float32 removes fp16 rounding.
        return normalise(raw)

    def fits(self, text: str) -> bool:
        """Whether the encoder reads `text` whole: nothing cut at max_seq_len tokens. A token
        covers at least one character, so a text that short needs no tokenising."""
        if len(text) <= self.max_seq_len - 2:  # [CLS] and [SEP]
            return True
        return not self._tokenizer.encode(text).overflowing

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "provider": self.provider,
                "max_seq_len": self.max_seq_len, "dim": self.dim,
                **({"cuda_sync": self.cuda_sync} if self._cuda else {})}

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
        self._graphs = None


SEQ_BUCKETS = (16, 32, 64, 128)


class _SingleTextGraphs:
    """Batch-1 runs on CUDA replayed from CUDA graphs, one per padded length bucket.

    A CUDA graph needs static shapes and fixed device buffers: each bucket gets its own
    session with the batch and sequence dimensions pinned (its shape arithmetic is then
    folded away, so every node runs on the GPU), device-resident input and output buffers
    bound once, and onnxruntime captures the kernels on the first runs. A run copies the
    padded ids and mask in, replays the graph and copies the vector out. Padding is masked
    (attention and mean pooling), so the vector is that of the unpadded text.
    """

    def __init__(self, path: Path, max_seq_len: int, dim: int) -> None:
        import onnxruntime as ort

        self.buckets = [b for b in SEQ_BUCKETS if b < max_seq_len] + [max_seq_len]
        self._slots: dict[int, tuple[Any, Any, Any, Any, Any]] = {}
        for length in self.buckets:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_free_dimension_override_by_name("batch", 1)
            opts.add_free_dimension_override_by_name("seq", length)
            session = ort.InferenceSession(
                str(path), opts,
                providers=[("CUDAExecutionProvider", {"device_id": 0, "enable_cuda_graph": "1"})])
            ids = ort.OrtValue.ortvalue_from_shape_and_type((1, length), np.int64, "cuda", 0)
            mask = ort.OrtValue.ortvalue_from_shape_and_type((1, length), np.int64, "cuda", 0)
            out = ort.OrtValue.ortvalue_from_shape_and_type((1, dim), np.float32, "cuda", 0)
            binding = session.io_binding()
            binding.bind_ortvalue_input("input_ids", ids)
            binding.bind_ortvalue_input("attention_mask", mask)
            binding.bind_ortvalue_output("embedding", out)
            self._slots[length] = (session, binding, ids, mask, out)
            for _ in range(3):  # warm-up, then capture
                self._replay(length, np.ones((1, 1), dtype=np.int64))
        log.info("CUDA graphs captured for single texts of up to %s tokens", self.buckets)

    def run(self, ids: np.ndarray) -> np.ndarray:
        length = next(b for b in self.buckets if b >= ids.shape[1])
        return self._replay(length, ids)

    def _replay(self, length: int, ids: np.ndarray) -> np.ndarray:
        session, binding, dev_ids, dev_mask, out = self._slots[length]
        padded = np.zeros((1, length), dtype=np.int64)
        padded[0, : ids.shape[1]] = ids[0]
        mask = np.zeros((1, length), dtype=np.int64)
        mask[0, : ids.shape[1]] = 1
        dev_ids.update_inplace(padded)
        dev_mask.update_inplace(mask)
        session.run_with_iobinding(binding)
        return out.numpy()


def open_onnx_encoder(model_dir: Path, settings: Any) -> OnnxEncoder:
    """Build the encoder named by settings (device/variant resolution included)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, variant = pick_device_variant(settings.device, settings.variant)
    return OnnxEncoder(model_dir, device=device, variant=variant, threads=settings.threads,
                       max_seq_len=settings.max_seq_len, spinning=settings.cpu_spinning,
                       chunk_rows=settings.chunk_rows, cuda_graphs=settings.cuda_graphs,
                       cuda_sync=settings.cuda_sync)
