"""Every API an LLM client speaks, one module per wire format: how each maps its requests
to the pipeline's representation and a cached answer back (apis/base.py says what each
provides). Embeddings are cached per input item and have their own path (embeddings.py)."""

from __future__ import annotations

from ..protocol import Endpoint
from .base import WireApi
from .chat import Chat, Completions
from .messages import Messages
from .responses import Responses

APIS: dict[Endpoint, WireApi] = {
    "chat": Chat(), "completions": Completions(), "responses": Responses(), "messages": Messages(),
}

__all__ = ["APIS", "WireApi"]
