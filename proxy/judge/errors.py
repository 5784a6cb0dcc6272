"""The judge's one exception base."""


class JudgeError(Exception):
    """Base of the judge's errors."""
