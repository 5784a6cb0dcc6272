"""Errors of the bundled backend; the server maps each kind to one HTTP status."""

from __future__ import annotations


class BackendError(Exception):
    """Base of every error the backend raises on purpose."""

    status = 500
    code = "internal_error"
    type = "server_error"


class InvalidRequest(BackendError):
    """The request body is malformed or asks for something the backend cannot do."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnsupportedParameter(InvalidRequest):
    """A request parameter (or a value of it) the backend does not honour: refused rather
    than silently ignored, since an answer that ignored it would be cached as if it had."""

    code = "unsupported_parameter"


class QueueFull(BackendError):
    """Every slot is busy and the waiting queue is at its bound."""

    status = 429
    code = "queue_full"
    type = "server_overloaded"


class EngineStopped(BackendError):
    """The engine is shut down or its worker failed; no request can be served."""

    status = 503
    code = "engine_unavailable"
    type = "server_error"


class ModelLoadError(BackendError):
    """The model folder or the packaged GGUF could not be loaded."""
