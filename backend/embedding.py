"""/v1/embeddings on the bundled backend: semcache's own sentence encoder (the proxy's
all-MiniLM-L6-v2 ONNX export, on onnxruntime) in the OpenAI wire format.

The encoder runs on the embedding service's own tokenizer and model threads (see
semcache.embeddings.service), and everything else a request costs in proportion to its size
(counting its tokens, rendering hundreds of floats per input as JSON or base64) runs in a
worker thread too: the event loop only parses the body and hands bytes to the socket, so a
large batch never stalls the streams of the completions being served beside it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embeddings.errors import EmbeddingError, QueueFullError
from semcache.embeddings.service import EmbeddingService
from semcache.embeddings.settings import EmbeddingSettings

from . import protocol
from .errors import BackendError, QueueFull, UnsupportedParameter

log = logging.getLogger(__name__)

CHUNK = 256
"""Inputs queued at once: the service's queue is bounded (1,024 texts), so a request of
2,048 inputs goes in chunks rather than being refused for its size alone."""


class EmbeddingsUnavailable(BackendError):
    """The encoder could not be loaded (or failed): /v1/embeddings cannot be served."""

    status = 503
    code = "embeddings_unavailable"
    type = "server_error"


class Embedder:
    """The encoder behind /v1/embeddings: vectors from the embedding service, token counts
    from the encoder's own tokenizer (as OpenAI counts the embedding model's tokens)."""

    def __init__(self, service: EmbeddingService, tokenizer: Any, model: str) -> None:
        self.service = service
        self.tokenizer = tokenizer
        self.model = model
        self.dim = service.dim

    @classmethod
    async def open(cls, settings: EmbeddingSettings, data_dir: str | Path) -> Embedder:
        """Load the exported encoder (exporting it first if needed) off the event loop."""
        from tokenizers import Tokenizer

        from semcache.embeddings.encoder import open_onnx_encoder
        from semcache.embeddings.export import ensure_exported

        def load() -> tuple[Any, Any]:
            folder = ensure_exported(Path(data_dir), settings.model, settings.export_variants)
            encoder = open_onnx_encoder(folder, settings)
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.enable_truncation(encoder.max_seq_len)  # what the encoder reads
            tokenizer.no_padding()
            return encoder, tokenizer

        encoder, tokenizer = await asyncio.to_thread(load)
        service = EmbeddingService.from_encoder(encoder, settings)
        return cls(service, tokenizer, str(encoder.describe()["model"]))

    async def embed(self, req: protocol.EmbeddingRequest) -> bytes:
        """The JSON body of the answer to one request."""
        if req.dimensions is not None and req.dimensions != self.dim:
            raise UnsupportedParameter(
                f"'dimensions' must be {self.dim}: {self.model} does not shorten its vectors",
                "dimensions")
        parts = []
        try:
            for start in range(0, len(req.inputs), CHUNK):
                parts.append(await self.service.embed_many(req.inputs[start : start + CHUNK]))
        except QueueFullError as e:
            raise QueueFull("the encoder's queue is full; try again later") from e
        except EmbeddingError as e:
            raise EmbeddingsUnavailable("the encoder failed") from e
        vectors = np.concatenate(parts)
        return await asyncio.to_thread(self._render, req, vectors)

    def _render(self, req: protocol.EmbeddingRequest, vectors: np.ndarray) -> bytes:
        """The answer as JSON, written a vector at a time: one json.dumps (or tolist) of
        the whole batch would be a single C call holding the GIL for hundreds of
        milliseconds, and the event loop would stall for it even from this thread."""
        tokens = sum(len(e) for e in self.tokenizer.encode_batch_fast(req.inputs))
        items = []
        for i, vector in enumerate(vectors):
            if req.encoding_format == "base64":
                # OpenAI's base64 is the raw little-endian float32 array (what the SDK
                # decodes with numpy.frombuffer(..., dtype="float32")).
                row: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                row = vector.astype(np.float32).tolist()
            items.append(json.dumps(protocol.embedding(i, row)))
        envelope = json.dumps(protocol.embedding_response([], self.model, tokens))
        head, tail = envelope.split('"data": []', 1)
        return (head + '"data": [' + ", ".join(items) + "]" + tail).encode()

    async def close(self) -> None:
        await self.service.close()
