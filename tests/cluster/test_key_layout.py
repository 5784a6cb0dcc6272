"""The key layout: every script and transaction the proxy runs touches one hash slot.

Traffic through the proxy makes every kind of write the store does (entry writes, hits,
evictions, answer keys, an observation from a wrong-hit report, a deletion, a flush, the
run-time threshold, the tenant secret); each script call, EVAL in a pipeline and MULTI/EXEC
is recorded with its keys, and all keys of one must hash to one slot (redis-py's
`key_slot`, what Redis Cluster checks). On a real cluster a violation is a CROSSSLOT error,
which tests/cluster/test_cluster.py would see as a bypass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster.flows import admin, chat_turns, exercise_writes
from conftest import make_settings
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from semcache.index import store as store_module
from semcache.index.keys import SHARDS, Keys, shard_of, shard_tags
from semcache.loadtest.fake_upstream import FakeUpstream
from semcache.proxy.app import SERVICE, build_app

SCRIPTS = {store_module._PUT: "put", store_module._DELETE: "delete", store_module._EVICT: "evict",
           store_module._OBSERVE: "observe", store_module._LOCK_OWNED: "lock",
           store_module._RECORD_HIT: "record-hit"}


class Recorder:
    def __init__(self) -> None:
        self.groups: list[tuple[str, list[str]]] = []

    def add(self, what: str, keys: list[Any]) -> None:
        self.groups.append((what, [k.decode() if isinstance(k, bytes) else str(k) for k in keys]))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    real_call, real_execute = AsyncScript.__call__, Pipeline.execute

    async def call(self: AsyncScript, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        rec.add(SCRIPTS.get(str(self.script), "script"), list(keys or []))
        return await real_call(self, keys, args, client)

    async def execute(self: Pipeline, raise_on_error: bool = True) -> Any:
        stack = [args for args, _ in self.command_stack]
        for args in stack:
            if str(args[0]).upper() in ("EVAL", "EVALSHA"):
                rec.add(SCRIPTS.get(str(args[1]), "eval"), list(args[3 : 3 + int(args[2])]))
        if (self.is_transaction or self.explicit_transaction) and stack:
            rec.add("multi", [args[1] for args in stack])
        return await real_execute(self, raise_on_error)

    monkeypatch.setattr(AsyncScript, "__call__", call)
    monkeypatch.setattr(Pipeline, "execute", execute)
    return rec


def test_shard_tags_spread_over_the_slot_range() -> None:
    slots = [key_slot(Keys().lru(s).encode()) for s in range(SHARDS)]
    assert len(set(slots)) == SHARDS
    assert [slot * SHARDS // 16384 for slot in slots] == list(range(SHARDS))
    assert all(f"{{{tag}}}" in Keys().stream(i) for i, tag in enumerate(shard_tags()))
    # an entry, its flight lock and its shard's sets; a scope's pool with its entries
    entry = "7" + "a" * 31
    shard = shard_of(entry)
    k = Keys()
    assert len({key_slot(x.encode()) for x in (k.entry(entry), k.flight(entry), k.lru(shard),
                                               k.sizes(shard), k.bytes(shard), k.stream(shard),
                                               k.scope_pool("7" + "b" * 31),
                                               k.pools_changed(shard), k.pools_seq(shard))}) == 1


async def test_every_write_stays_in_one_slot(aiohttp_client: Any, redis_url: str,
                                             upstream: FakeUpstream, tmp_path: Path,
                                             recorder: Recorder) -> None:
    settings = make_settings(redis_url, upstream.base_url, tmp_path, cache__max_entries=3)
    proxy = await aiohttp_client(build_app(settings))
    await exercise_writes(proxy)
    await chat_turns(proxy)
    await admin(proxy, "PUT", "threshold", {"threshold": 0.9})
    await proxy.app[SERVICE].drain(5)
    kinds = {what for what, _ in recorder.groups}
    assert {"put", "delete", "evict", "observe", "lock", "record-hit", "multi"} <= kinds, kinds
    for what, keys in recorder.groups:
        assert keys, what
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) == 1, (what, keys)
