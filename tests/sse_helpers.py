"""Reading OpenAI server-sent event streams in tests."""

from __future__ import annotations

import json
from typing import Any


def sse_payloads(raw: bytes) -> list[str]:
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: "):] for e in events]


def stream_text(raw: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The text a well-formed stream delivers, and its chunks; fails on a malformed one."""
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or c["choices"][0].get("text") or ""
        for c in chunks if c["choices"]
    )
    return text, chunks
