"""The embedding package's exceptions: one base, so callers can catch the whole family."""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base of every error raised by semcache.embeddings."""


class QueueFullError(EmbeddingError):
    """The bounded queue is full: the caller should skip the semantic tier (bypass/429)."""


class EncoderUnavailableError(EmbeddingError):
    """The model run failed (or the service is closed); the text was not encoded."""
