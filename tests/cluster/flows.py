"""Traffic that makes the proxy do every kind of Redis write, for the key-layout test (one
Redis) and the cluster and Sentinel tests (the same flow must work there)."""

from __future__ import annotations

from typing import Any

from admin.admin_helpers import CHAT, api, ask

from semcache.proxy.app import SERVICE

admin = api


async def exercise_writes(proxy: Any) -> dict[str, Any]:
    """Misses, exact hits, more entries than a bound of 3 (evictions), a wrong-hit report
    (an observation), a deletion and a flush; returns what each step answered."""
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    out: dict[str, Any] = {}
    out["first"] = (await ask(proxy, "What is the capital of France?", **a)).headers["X-Semcache"]
    hit = await ask(proxy, "What is the capital of France?", **a)
    out["again"] = hit.headers["X-Semcache"]
    # the same question from another tenant: its own entry (another shard, usually)
    out["other_tenant"] = (await ask(proxy, "What is the capital of France?", **b)).headers["X-Semcache"]
    for i in range(4):
        await ask(proxy, f"question number {i}", **a)
    kept = await ask(proxy, "question number 3", **a)
    out["kept"] = kept.headers["X-Semcache"]
    entry_id = kept.headers["X-Semcache-Entry"]
    out["report"] = await api(proxy, "POST", "feedback", {"entry_id": entry_id, "similarity": 0.95})
    out["deleted"] = (await api(proxy, "DELETE", f"entries/{entry_id}"))["deleted"]
    out["after_delete"] = (await ask(proxy, "question number 3", **a)).headers["X-Semcache"]
    await ask(proxy, "to be flushed", **b)
    out["flushed"] = await api(proxy, "POST", "flush", {"api_key": "key-b"})
    await proxy.app[SERVICE].drain(5)
    return out


async def chat_turns(proxy: Any) -> list[str]:
    """A two-turn conversation asked twice: the second time its context is recognised by the
    cache's own answer (answer keys, one MGET), so the second turn hits."""
    outcomes = []
    for _ in range(2):
        first = {"model": "fake-model", "messages": [{"role": "user", "content": "Tell me a fact."}]}
        resp = await proxy.post(CHAT, json=first)
        answer = (await resp.json())["choices"][0]["message"]["content"]
        await proxy.app[SERVICE].drain(5)
        second = {"model": "fake-model", "messages": [
            {"role": "user", "content": "Tell me a fact."},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And another one?"}]}
        resp = await proxy.post(CHAT, json=second)
        await resp.read()
        await proxy.app[SERVICE].drain(5)
        outcomes += [r for r in (resp.headers["X-Semcache"],)]
    return outcomes
