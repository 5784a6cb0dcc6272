"""The Redis store: entries, their exact-match keys, and the event stream replicas tail.

Redis is the source of truth. One entry is one hash (`Keys.entry`, index/keys.py) with a TTL.
The entry id is a hash of the scope and the canonical query, so the exact tier is a single
HGETALL and writing the same question twice in one scope replaces the entry instead of
duplicating it. Every add and delete is also appended to its shard's event stream, from
which each replica keeps its in-memory vector index current. Every write is one script or
transaction on one hash slot, so the same code runs on a single Redis, behind Sentinel, and
on Redis Cluster.

Availability: every Redis failure becomes `StoreUnavailableError`, and after one the store
refuses at once (no network wait) for `retry_after_s`, then lets the next call try Redis
again. The proxy turns the error into a bypass, so a Redis outage costs each request
nothing but the cache.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis

from .connect import is_redis_failure
from .keys import SHARDS, Keys, shard_of

T = TypeVar("T")

STREAM_MAXLEN = 100_000
"""Events kept in the stream; a replica that falls further behind rebuilds from the entries."""


_RECORD_HIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'hits', ARGV[3])
  redis.call('HSET', KEYS[1], 'last_hit', ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


# Writing an entry is one script on one slot (index/keys.py: the entry, its shard's stream,
# LRU set and byte accounting share a hash tag). Replacing an entry (a `no-cache` request
# writes the same question again) keeps the hits it has served: the hash is written anew,
# then the old count and latest hit are carried over. The bytes each entry stores (`sizes`,
# id -> bytes) and their total (`bytes`) are for `max_bytes`; an entry that expired keeps
# counting until the LRU eviction reaches it, so the total errs high, towards evicting early.
# KEYS: entry, stream, lru, sizes, bytes. ARGV: TTL, stream MAXLEN, id, scope, created,
# size, then the field/value pairs. Returns the shard's entry count and bytes.
_PUT = """
local hits = redis.call('HGET', KEYS[1], 'hits')
local last = tonumber(redis.call('HGET', KEYS[1], 'last_hit') or '0')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if hits then
  redis.call('HINCRBY', KEYS[1], 'hits', hits)
  if last > tonumber(redis.call('HGET', KEYS[1], 'last_hit') or '0') then
    redis.call('HSET', KEYS[1], 'last_hit', tostring(last))
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'op', 'add', 'id', ARGV[3], 'scope', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '0')
redis.call('HSET', KEYS[4], ARGV[3], ARGV[6])
local total = redis.call('INCRBY', KEYS[5], tonumber(ARGV[6]) - old)
return {redis.call('ZCARD', KEYS[3]), total}
"""

# KEYS: entry, stream, lru, sizes, bytes. ARGV: id, scope, stream MAXLEN. Returns 1 if the
# entry existed.
_DELETE = """
local deleted = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 'del', 'id', ARGV[1], 'scope', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DECRBY', KEYS[5], old)
return deleted
"""

# Evict one shard's least recently used entries (KEYS: lru, sizes, bytes, stream) while it
# holds more than ARGV[1] entries or more than ARGV[2] bytes (-1: no bound), announcing each
# deletion on the stream (ARGV[3]: its MAXLEN); returns how many went. Entry keys are
# ARGV[4] .. id.
_EVICT = """
local evicted = 0
local max_entries, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
while true do
  local over_entries = max_entries >= 0 and redis.call('ZCARD', KEYS[1]) > max_entries
  local over_bytes = max_bytes >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') > max_bytes
  if not (over_entries or over_bytes) then break end
  local victim = redis.call('ZPOPMIN', KEYS[1])
  if #victim == 0 then
    redis.call('SET', KEYS[3], 0)  -- nothing left to count
    break
  end
  local id = victim[1]
  redis.call('DEL', ARGV[4] .. id)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'op', 'del', 'id', id, 'scope', '')
  local size = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HDEL', KEYS[2], id)
  redis.call('DECRBY', KEYS[3], size)
  evicted = evicted + 1
end
return evicted
"""


# A single-flight lock (proxy/pipeline/flight.py) is a key holding its owner's token: only
# the owner may extend it (ARGV[2]: milliseconds) or, without ARGV[2], release it.
_LOCK_OWNED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""


# Observations (similarity, correct) of semantic hits, for adaptive thresholds
# (proxy/adaptive.py): an entry's own in its hash field `obs`, so they arrive with the HGETALL
# of every lookup, and its scope's pool (`Keys.scope_pool`). Both are bounded lists in one
# string, "9612+,9345-" (similarity x 10,000, then + for a correct hit, - for a wrong one),
# appended atomically and trimmed to the newest ARGV[2] / ARGV[3]. Each change to a pool bumps
# its shard's `so-seq` and ranks the scope by it in the shard's `so-changed`, so a replica
# re-reads only the pools changed since it last looked.
_OBSERVE = """
local function append(obs, token, max)
  if not obs or obs == '' then obs = token else obs = obs .. ',' .. token end
  local n = 1
  for _ in string.gmatch(obs, ',') do n = n + 1 end
  while n > max do
    obs = string.sub(obs, string.find(obs, ',', 1, true) + 1)
    n = n - 1
  end
  return obs
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local own = append(redis.call('HGET', KEYS[1], 'obs'), ARGV[1], tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'obs', own)
local pool = append(redis.call('GET', KEYS[2]), ARGV[1], tonumber(ARGV[3]))
redis.call('SET', KEYS[2], pool, 'EX', ARGV[4])
local seq = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[3], seq, ARGV[5])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[6]) + 1))
return {own, pool}
"""
OBSERVATIONS_FIELD = "obs"


def encode_observation(similarity: float, correct: bool) -> str:
    return f"{round(min(max(similarity, 0.0), 1.0) * 10000):d}{'+' if correct else '-'}"


@functools.lru_cache(maxsize=8192)
def decode_observations(raw: str) -> tuple[tuple[float, bool], ...]:
    """(similarity, correct) pairs of an encoded list, oldest first; malformed items are
    skipped. Memoised: the hit path decodes the same few lists over and over."""
    out = []
    for item in raw.split(","):
        if len(item) >= 2 and item[-1] in "+-" and item[:-1].isdigit():
            out.append((int(item[:-1]) / 10000, item[-1] == "+"))
    return tuple(out)


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailableError(StoreError):
    """Redis is down, timing out, or recently failed; serve without the cache."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One cached answer and everything needed to explain it and rebuild the index."""

    id: str
    """Hash of the scope and the canonical query (hex)."""
    scope: str
    """Hash of tenant, namespace, endpoint, model, parameters and conversation context."""
    tenant: str
    """Hash of the client's credential (or `shared`)."""
    namespace: str
    """The `X-Semcache-Namespace` the entry was written under ("" for none)."""
    endpoint: str
    """`chat`, `completions`, `responses`, `messages` or `embeddings` (the format that
    wrote it)."""
    model: str
    """The model the request named."""
    query: str
    """The text of the last user message (or the prompt), as the client sent it."""
    response: bytes
    """The upstream's complete 200 answer as non-streaming JSON."""
    created: float
    """Unix time the entry was written."""
    ttl_s: int
    """Lifetime it was written with."""
    hits: int = 0
    """How many requests it has answered."""
    last_hit: float = 0.0
    """Unix time of the latest hit (0 if none)."""
    embedding: bytes = b""
    """float32 vector of the query, empty where the entry is exact-only."""
    upstream_s: float = 0.0
    """How long the upstream took to produce the answer (what each hit saves)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Other fields written by later stages (thresholds, feedback), kept as read."""

    @property
    def observations(self) -> tuple[tuple[float, bool], ...]:
        """(similarity, correct) of the semantic hits observed on this entry, oldest first."""
        return decode_observations(self.extra.get(OBSERVATIONS_FIELD, ""))

    def size_bytes(self) -> int:
        """What the entry stores in Redis, field names and values (for `max_entry_bytes`
        and `max_bytes`)."""
        return sum(len(k) + (len(v) if isinstance(v, bytes) else len(v.encode()))
                   for k, v in self.to_mapping().items())

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.created)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "tenant": self.tenant,
            "namespace": self.namespace,
            "endpoint": self.endpoint,
            "model": self.model,
            "query": self.query,
            "response": self.response,
            "created": repr(self.created),
            "ttl_s": str(self.ttl_s),
            "hits": str(self.hits),
            "last_hit": repr(self.last_hit),
            "embedding": self.embedding,
            "upstream_s": repr(self.upstream_s),
            **self.extra,
        }

    @classmethod
    def from_mapping(cls, entry_id: str, raw: dict[bytes, bytes]) -> Entry:
        fields = {k.decode(): v for k, v in raw.items()}
        known = {
            "scope", "tenant", "namespace", "endpoint", "model", "query", "response", "created",
            "ttl_s", "hits", "last_hit", "embedding", "upstream_s",
        }
        return cls(
            id=entry_id,
            scope=fields["scope"].decode(),
            tenant=fields["tenant"].decode(),
            namespace=fields["namespace"].decode(),
            endpoint=fields["endpoint"].decode(),
            model=fields["model"].decode(),
            query=fields["query"].decode(),
            response=fields["response"],
            created=float(fields["created"]),
            ttl_s=int(fields["ttl_s"]),
            hits=int(fields.get("hits", b"0")),
            last_hit=float(fields.get("last_hit", b"0")),
            embedding=fields.get("embedding", b""),
            upstream_s=float(fields.get("upstream_s", b"0")),
            extra={k: v.decode() for k, v in fields.items() if k not in known},
        )


def is_cluster(client: object) -> bool:
    """Whether `client` speaks to a Redis Cluster (commands route by slot, no cross-slot)."""
    return isinstance(client, aioredis.RedisCluster)


class Store:
    """Entries in Redis, behind a gate that fails fast while Redis is unavailable."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        prefix: str = "semcache:",
        retry_after_s: float = 1.0,
        max_entries: int = 0,
        max_bytes: int = 0,
        deadline: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.client: Any = client
        """A redis.asyncio Redis or RedisCluster (Sentinel gives a Redis): the calls made here
        are the same on both."""
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.cluster = is_cluster(client)
        self.retry_after_s = retry_after_s
        self.max_entries = max_entries
        """Bound on the number of entries (0: none); least recently used ones go first."""
        self.max_bytes = max_bytes
        """Bound on the bytes all entries store (0: none); least recently used ones go first."""
        self.evicted = 0
        self.deadline = deadline
        """A context for each call that raises TimeoutError when Redis takes too long
        (the proxy's counts only the time its event loop was free to read the reply);
        None: the client's socket timeout alone."""
        self._down_until = 0.0
        self.failures = 0
        """Redis errors seen since start (a metric)."""
        self._observe = client.register_script(_OBSERVE)
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)
        self._evict_lru = client.register_script(_EVICT)
        self._lock_owned = client.register_script(_LOCK_OWNED)

    def entry_key(self, entry_id: str) -> str:
        return self.keys.entry(entry_id)

    def response_key(self, tenant: str, response_id: str) -> str:
        """A Responses answer the cache gave, by the id it gave it (proxy/apis/response_ids.py)."""
        return self.keys.response(tenant, response_id)

    def _shard_keys(self, entry_id: str) -> list[str]:
        """An entry and its shard's stream, LRU set and byte accounting (one slot)."""
        shard = shard_of(entry_id)
        k = self.keys
        return [k.entry(entry_id), k.stream(shard), k.lru(shard), k.sizes(shard), k.bytes(shard)]

    # availability gate ------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        if not self.available:
            raise StoreUnavailableError("redis recently failed; bypassing the cache")
        try:
            if self.deadline is None:
                return await op()
            async with self.deadline():
                return await op()
        except Exception as e:
            # ConnectionError and TimeoutError are RedisErrors; OSError covers a socket
            # that fails below redis-py, and redis-py leaks a few others when a connection
            # dies under it (index/connect.py). Either way, stop asking for a while.
            if not is_redis_failure(e):
                raise
            self.failures += 1
            self._down_until = time.monotonic() + self.retry_after_s
            raise StoreUnavailableError(f"redis: {type(e).__name__}") from e

    async def shared_secret(self, candidate: bytes) -> bytes:
        """The value of the deployment's secret: `candidate` if none was kept yet (set only
        if absent, so replicas starting together agree on the first one written)."""
        key = self.keys.tenant_secret

        async def op() -> bytes:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(key, candidate, nx=True)
            pipe.get(key)
            _, value = await pipe.execute()
            return cast(bytes, value)

        return await self._call(op)

    # single-flight locks ------------------------------------------------------------------

    async def lock(self, entry_id: str, token: str, ttl_s: float) -> bool:
        """Take the flight lock of `entry_id` for `ttl_s`; False if another holds it."""
        key = self.keys.flight(entry_id)
        return bool(await self._call(lambda: self.client.set(key, token, nx=True,
                                                             px=max(1, int(ttl_s * 1000)))))

    async def extend_lock(self, entry_id: str, token: str, ttl_s: float) -> bool:
        """Give a lock we hold `ttl_s` more; False if it is no longer ours."""
        key = self.keys.flight(entry_id)
        return bool(await self._call(lambda: self._lock_owned(
            keys=[key], args=[token, max(1, int(ttl_s * 1000))])))

    async def unlock(self, entry_id: str, token: str) -> None:
        key = self.keys.flight(entry_id)
        await self._call(lambda: self._lock_owned(keys=[key], args=[token]))

    async def locked(self, entry_id: str) -> bool:
        key = self.keys.flight(entry_id)
        return bool(await self._call(lambda: self.client.exists(key)))

    async def ping(self) -> bool:
        """True when Redis answers (on a cluster: every master); also re-opens the gate
        early after an outage."""
        try:
            if self.cluster:
                replies = await self.client.ping(target_nodes=aioredis.RedisCluster.PRIMARIES)
                ok = all(replies.values()) if isinstance(replies, dict) else bool(replies)
            else:
                ok = bool(await self.client.ping())
        except Exception as e:
            if not is_redis_failure(e):
                raise
            return False
        if ok:
            self._down_until = 0.0
        return ok

    # entries ----------------------------------------------------------------------------

    async def get(self, entry_id: str) -> Entry | None:
        raw = await self._call(lambda: self.client.hgetall(self.entry_key(entry_id)))
        if not raw or b"response" not in raw:
            return None
        return Entry.from_mapping(entry_id, cast(dict[bytes, bytes], raw))

    async def get_many(self, entry_ids: list[str]) -> list[Entry | None]:
        """Several entries in one round trip (None where there is none)."""
        if not entry_ids:
            return []

        async def op() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for entry_id in entry_ids:
                pipe.hgetall(self.entry_key(entry_id))
            return cast(list[Any], await pipe.execute())

        rows = await self._call(op)
        return [Entry.from_mapping(i, cast(dict[bytes, bytes], raw))
                if raw and b"response" in raw else None
                for i, raw in zip(entry_ids, rows, strict=True)]

    async def put(self, entry: Entry) -> None:
        """Write (or replace) an entry with its TTL and announce it on the stream; a replaced
        entry keeps its hit count."""
        fields = [item for pair in entry.to_mapping().items() for item in pair]

        async def op() -> None:
            await self._put(keys=self._shard_keys(entry.id),
                            args=[entry.ttl_s, STREAM_MAXLEN, entry.id, entry.scope,
                                  repr(entry.created), entry.size_bytes(), *fields])
            if self.max_entries or self.max_bytes:
                await self._evict()

        await self._call(op)

    async def _shard_totals(self) -> tuple[list[int], list[int], list[float | None]]:
        """Each shard's entry count, bytes, and the last use of its least recently used
        entry (None: empty), in one round trip (one per master on a cluster)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.zcard(self.keys.lru(shard))
            pipe.get(self.keys.bytes(shard))
            pipe.zrange(self.keys.lru(shard), 0, 0, withscores=True)
        raw = await pipe.execute()
        counts = [int(raw[3 * s]) for s in range(SHARDS)]
        sizes = [int(raw[3 * s + 1] or 0) for s in range(SHARDS)]
        heads = [float(raw[3 * s + 2][0][1]) if raw[3 * s + 2] else None for s in range(SHARDS)]
        return counts, sizes, heads

    async def _evict(self) -> None:
        """Delete least recently used entries until both bounds hold over all shards (and
        announce each deletion). The bounds are the deployment's, the LRU sets per shard (a
        script cannot span slots), so each round evicts from the shard whose least recently
        used entry is the oldest: the global LRU order, one shard's script at a time.
        Replicas writing at once can evict a few entries more than needed, never fewer."""
        for _ in range(SHARDS + 1):
            counts, sizes, heads = await self._shard_totals()
            over_entries = sum(counts) - self.max_entries if self.max_entries else 0
            over_bytes = sum(sizes) - self.max_bytes if self.max_bytes else 0
            if over_entries <= 0 and over_bytes <= 0:
                return
            candidates = [(head, s) for s, head in enumerate(heads) if head is not None]
            if not candidates:
                return
            shard = min(candidates)[1]
            target_entries = max(0, counts[shard] - over_entries) if over_entries > 0 else -1
            target_bytes = max(0, sizes[shard] - over_bytes) if over_bytes > 0 else -1
            k = self.keys
            evicted = await self._evict_lru(
                keys=[k.lru(shard), k.sizes(shard), k.bytes(shard), k.stream(shard)],
                args=[target_entries, target_bytes, STREAM_MAXLEN, k.shard_prefix(shard) + "e:"])
            self.evicted += int(cast(int, evicted))

    async def answers(self, keys: list[str]) -> list[bytes | None]:
        """The values of answer keys, in one round trip (None where there is none); the keys
        of one tenant and namespace share a slot (index/keys.py)."""
        if not keys:
            return []
        return cast(list[bytes | None], await self._call(lambda: self.client.mget(keys)))

    async def remember_answer(self, key: str, value: str, ttl_s: int) -> None:
        await self._call(lambda: self.client.set(key, value, ex=ttl_s))

    async def record_hits(self, hits: dict[str, tuple[int, float]]) -> None:
        """Add hit counts and last-hit times ({entry id: (count, unix time)}) in one round trip
        (one per master on a cluster).

        A script, because HINCRBY on an entry that expired a moment ago would create a stray
        hash without a TTL. EVAL, not EVALSHA: a pipeline cannot load a script that a newly
        promoted master has never seen, and Redis caches the body after the first call.
        """
        if not hits:
            return

        async def op() -> None:
            pipe = self.client.pipeline(transaction=False)
            for entry_id, (count, stamp) in hits.items():
                pipe.eval(_RECORD_HIT, 2, self.entry_key(entry_id),
                          self.keys.lru(shard_of(entry_id)), repr(stamp), entry_id, count)
            await pipe.execute()

        await self._call(op)

    async def observe(self, entry_id: str, scope: str, similarity: float, correct: bool, *,
                      entry_max: int, scope_max: int, scope_ttl_s: int,
                      max_scopes: int) -> tuple[str, str] | None:
        """Append one observation to the entry's list and to its scope's pool, atomically;
        returns both lists as now encoded, or None (nothing written) if the entry is gone."""
        shard = shard_of(scope)

        async def op() -> tuple[str, str] | None:
            result = await self._observe(
                keys=[self.entry_key(entry_id), self.keys.scope_pool(scope),
                      self.keys.pools_changed(shard), self.keys.pools_seq(shard)],
                args=[encode_observation(similarity, correct), entry_max, scope_max,
                      scope_ttl_s, scope, max_scopes])
            if not result:
                return None
            own, pool = result
            return own.decode(), pool.decode()

        return await self._call(op)

    async def changed_pools(self, after: Mapping[int, int]
                            ) -> tuple[dict[int, int], dict[str, str | None]]:
        """The scope pools changed since the sequence numbers `after` ({shard: number}; all
        of them for {}), as {scope: encoded list, or None where it expired}, and each shard's
        latest sequence number.

        A background poll: a failure raises RedisError or OSError as it is and leaves the
        availability gate open (a slow poll while the loop is busy must not bypass requests)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.get(self.keys.pools_seq(shard))
            pipe.zrangebyscore(self.keys.pools_changed(shard), f"({after.get(shard, 0)}", "+inf")
        raw = await pipe.execute()
        seqs = {shard: int(raw[2 * shard] or 0) for shard in range(SHARDS)}
        if any(seqs[s] < after.get(s, 0) for s in seqs):
            # Redis lost its data (a restart without persistence): read everything
            return await self.changed_pools({}) if after else (seqs, {})
        names = {shard: [n.decode() for n in raw[2 * shard + 1]] for shard in range(SHARDS)}
        wanted = [shard for shard in range(SHARDS) if names[shard]]
        if not wanted:
            return seqs, {}
        pipe = self.client.pipeline(transaction=False)
        for shard in wanted:  # one MGET per shard: its pools share its slot
            pipe.mget([self.keys.scope_pool(name) for name in names[shard]])
        changed: dict[str, str | None] = {}
        for shard, values in zip(wanted, await pipe.execute(), strict=True):
            for name, v in zip(names[shard], values, strict=True):
                changed[name] = v.decode() if v is not None else None
        return seqs, changed

    async def delete(self, entry_id: str, scope: str = "") -> bool:
        """Remove an entry and announce it; True if it existed."""
        keys = self._shard_keys(entry_id)
        return bool(await self._call(
            lambda: self._delete(keys=keys, args=[entry_id, scope, STREAM_MAXLEN])))
