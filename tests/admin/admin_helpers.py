"""Helpers for the admin tests: traffic through the proxy, and the admin API called as an
operator would (the aiohttp test client connects from 127.0.0.1, so it is a loopback client)."""

from __future__ import annotations

from typing import Any

import orjson

from semcache.proxy.admin import ADMIN
from semcache.proxy.app import SERVICE

CHAT = "/v1/chat/completions"


def chat(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": question}], **extra}


async def ask(proxy: Any, question: str, **headers: str) -> Any:
    """One chat request; waits for its write-back and flushes the per-minute counters."""
    resp = await proxy.post(CHAT, json=chat(question), headers=headers)
    await resp.read()
    await proxy.app[SERVICE].drain(5)
    await proxy.app[ADMIN].series.flush()
    proxy.app[ADMIN].inventory.invalidate()  # the next stats call counts the new entry
    return resp


async def api(proxy: Any, method: str, path: str, body: Any = None, token: str | None = None,
              expect: int = 200) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    resp = await proxy.request(method, "/admin/api/" + path, json=body, headers=headers)
    raw = await resp.read()
    assert resp.status == expect, (resp.status, raw[:500])
    return orjson.loads(raw)


async def metrics_text(proxy: Any) -> str:
    resp = await proxy.get("/metrics")
    assert resp.status == 200
    return (await resp.read()).decode()


def sample(text: str, name: str) -> float:
    """The value of one sample line (`name` with its labels, exactly), 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
