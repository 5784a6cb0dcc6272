"""The Redis store: entries, their exact-match keys, and the event stream replicas tail.

Redis is the source of truth. One entry is one hash under `{prefix}e:{entry_id}` with a TTL.
The entry id is a hash of the scope and the canonical query, so the exact tier is a single
HGETALL and writing the same question twice in one scope replaces the entry instead of
duplicating it. Every add and delete is also appended to the stream `{prefix}events`, from
which each replica keeps its in-memory vector index current.

Availability: every Redis failure becomes `StoreUnavailableError`, and after one the store
refuses at once (no network wait) for `retry_after_s`, then lets the next call try Redis
again. The proxy turns the error into a bypass, so a Redis outage costs each request
nothing but the cache.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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


# Replacing an entry (a `no-cache` request writes the same question again) keeps the hits it
# has served: the hash is written anew, then the old count and latest hit are carried over.
# ARGV[1] is the TTL, the rest field/value pairs.
_REPLACE = """
local hits = redis.call('HGET', KEYS[1], 'hits')
local last = tonumber(redis.call('HGET', KEYS[1], 'last_hit') or '0')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if hits then
  redis.call('HINCRBY', KEYS[1], 'hits', hits)
  if last > tonumber(redis.call('HGET', KEYS[1], 'last_hit') or '0') then
    redis.call('HSET', KEYS[1], 'last_hit', tostring(last))
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# The bytes each entry stores (`{prefix}sizes`, id -> bytes) and their total
# (`{prefix}bytes`), for `max_bytes`: ARGV[2] = the new size of entry ARGV[1], or absent
# for one deleted; returns the new total. An entry that expired keeps counting until the
# LRU eviction reaches it, so the total errs high, towards evicting early.
_ACCOUNT = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - old)
end
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('DECRBY', KEYS[2], old)
"""

# Evict least recently used entries (KEYS: lru, sizes, bytes, stream) while there are more
# than ARGV[1] (0: no bound) or they store more than ARGV[2] bytes (0: no bound), announcing
# each deletion on the stream (ARGV[3]: its MAXLEN); returns how many went. Entry keys are
# ARGV[4] .. id.
_EVICT = """
local evicted = 0
local max_entries, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
while true do
  local over_entries = max_entries > 0 and redis.call('ZCARD', KEYS[1]) > max_entries
  local over_bytes = max_bytes > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') > max_bytes
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
# of every lookup, and its scope's pool in `{prefix}so:{scope}`. Both are bounded lists in one
# string, "9612+,9345-" (similarity x 10,000, then + for a correct hit, - for a wrong one),
# appended atomically and trimmed to the newest ARGV[2] / ARGV[3]. Each change to a pool bumps
# `{prefix}so-seq` and ranks the scope by it in `{prefix}so-changed`, so a replica re-reads
# only the pools changed since it last looked.
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


class Store:
    """Entries in Redis, behind a gate that fails fast while Redis is unavailable."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "semcache:",
        retry_after_s: float = 1.0,
        max_entries: int = 0,
        max_bytes: int = 0,
        deadline: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
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
        self._record_hit = client.register_script(_RECORD_HIT)
        self._observe = client.register_script(_OBSERVE)
        self._replace = client.register_script(_REPLACE)
        self._account = client.register_script(_ACCOUNT)
        self._evict_lru = client.register_script(_EVICT)
        self._lock_owned = client.register_script(_LOCK_OWNED)

    # keys -------------------------------------------------------------------------------

    def entry_key(self, entry_id: str) -> str:
        return f"{self.prefix}e:{entry_id}"

    @property
    def stream_key(self) -> str:
        return f"{self.prefix}events"

    def scope_pool_key(self, scope: str) -> str:
        """A scope's observations (adaptive thresholds)."""
        return f"{self.prefix}so:{scope}"

    @property
    def pools_changed_key(self) -> str:
        """Sorted set of scopes by the sequence number of their pool's latest change."""
        return f"{self.prefix}so-changed"

    @property
    def pools_seq_key(self) -> str:
        return f"{self.prefix}so-seq"

    def answer_key(self, tenant: str, namespace: str, digest: str) -> str:
        """Which entry gave an answer (context chains, proxy/pipeline/chains.py)."""
        return f"{self.prefix}ans:{tenant}:{namespace}:{digest}"

    def response_key(self, tenant: str, response_id: str) -> str:
        """A Responses answer the cache gave, by the id it gave it (proxy/apis/response_ids.py)."""
        return f"{self.prefix}resp:{tenant}:{response_id}"

    def flight_key(self, entry_id: str) -> str:
        """The lock of the upstream call for an entry's question, across replicas."""
        return f"{self.prefix}flight:{entry_id}"

    @property
    def tenant_secret_key(self) -> str:
        """The deployment's secret for tenant hashes (proxy/tenants.py)."""
        return f"{self.prefix}tenant-secret"

    @property
    def sizes_key(self) -> str:
        """Hash of entry id -> bytes it stores, for `max_bytes`."""
        return f"{self.prefix}sizes"

    @property
    def bytes_key(self) -> str:
        """The bytes all entries store (the sum of `sizes_key`)."""
        return f"{self.prefix}bytes"

    @property
    def lru_key(self) -> str:
        """Sorted set of entry ids by last use (write or hit), for `max_entries`."""
        return f"{self.prefix}lru"

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
        except (RedisError, OSError) as e:
            # ConnectionError and TimeoutError are RedisErrors; OSError covers a socket
            # that fails below redis-py. Either way, stop asking for a while.
            self.failures += 1
            self._down_until = time.monotonic() + self.retry_after_s
            raise StoreUnavailableError(f"redis: {type(e).__name__}") from e

    async def shared_secret(self, candidate: bytes) -> bytes:
        """The value of the deployment's secret: `candidate` if none was kept yet (set only
        if absent, so replicas starting together agree on the first one written)."""

        async def op() -> bytes:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self.tenant_secret_key, candidate, nx=True)
            pipe.get(self.tenant_secret_key)
            _, value = await pipe.execute()
            return cast(bytes, value)

        return await self._call(op)

    # single-flight locks ------------------------------------------------------------------

    async def lock(self, entry_id: str, token: str, ttl_s: float) -> bool:
        """Take the flight lock of `entry_id` for `ttl_s`; False if another holds it."""
        key = self.flight_key(entry_id)
        return bool(await self._call(lambda: self.client.set(key, token, nx=True,
                                                             px=max(1, int(ttl_s * 1000)))))

    async def extend_lock(self, entry_id: str, token: str, ttl_s: float) -> bool:
        """Give a lock we hold `ttl_s` more; False if it is no longer ours."""
        key = self.flight_key(entry_id)
        return bool(await self._call(lambda: self._lock_owned(
            keys=[key], args=[token, max(1, int(ttl_s * 1000))])))

    async def unlock(self, entry_id: str, token: str) -> None:
        key = self.flight_key(entry_id)
        await self._call(lambda: self._lock_owned(keys=[key], args=[token]))

    async def locked(self, entry_id: str) -> bool:
        key = self.flight_key(entry_id)
        return bool(await self._call(lambda: self.client.exists(key)))

    async def ping(self) -> bool:
        """True when Redis answers; also re-opens the gate early after an outage."""
        try:
            ok = bool(await self.client.ping())
        except (RedisError, OSError):
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
        key = self.entry_key(entry.id)
        fields = [item for pair in entry.to_mapping().items() for item in pair]

        async def op() -> None:
            pipe = self.client.pipeline(transaction=True)
            await self._replace(keys=[key], args=[entry.ttl_s, *fields], client=pipe)
            pipe.xadd(
                self.stream_key,
                {"op": "add", "id": entry.id, "scope": entry.scope},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            pipe.zadd(self.lru_key, {entry.id: entry.created})
            pipe.zcard(self.lru_key)
            await self._account(keys=[self.sizes_key, self.bytes_key],
                                args=[entry.id, entry.size_bytes()], client=pipe)
            *_, count, total = await pipe.execute()
            if (self.max_entries and count > self.max_entries) or \
                    (self.max_bytes and total > self.max_bytes):
                await self._evict()

        await self._call(op)

    async def _evict(self) -> None:
        """Delete least recently used entries until both bounds hold (and announce each
        deletion): one script, so replicas writing at once never evict twice over."""
        evicted = await self._evict_lru(
            keys=[self.lru_key, self.sizes_key, self.bytes_key, self.stream_key],
            args=[self.max_entries, self.max_bytes, STREAM_MAXLEN, self.entry_key("")])
        self.evicted += int(cast(int, evicted))

    async def answers(self, keys: list[str]) -> list[bytes | None]:
        """The values of answer keys, in one round trip (None where there is none)."""
        if not keys:
            return []
        return cast(list[bytes | None], await self._call(lambda: self.client.mget(keys)))

    async def remember_answer(self, key: str, value: str, ttl_s: int) -> None:
        await self._call(lambda: self.client.set(key, value, ex=ttl_s))

    async def record_hits(self, hits: dict[str, tuple[int, float]]) -> None:
        """Add hit counts and last-hit times ({entry id: (count, unix time)}) in one round trip.

        A script, because HINCRBY on an entry that expired a moment ago would create a stray
        hash without a TTL.
        """
        if not hits:
            return

        async def op() -> None:
            pipe = self.client.pipeline(transaction=False)
            for entry_id, (count, stamp) in hits.items():
                await self._record_hit(keys=[self.entry_key(entry_id), self.lru_key],
                                       args=[repr(stamp), entry_id, count], client=pipe)
            await pipe.execute()

        await self._call(op)

    async def observe(self, entry_id: str, scope: str, similarity: float, correct: bool, *,
                      entry_max: int, scope_max: int, scope_ttl_s: int,
                      max_scopes: int) -> tuple[str, str] | None:
        """Append one observation to the entry's list and to its scope's pool, atomically;
        returns both lists as now encoded, or None (nothing written) if the entry is gone."""

        async def op() -> tuple[str, str] | None:
            result = await self._observe(
                keys=[self.entry_key(entry_id), self.scope_pool_key(scope),
                      self.pools_changed_key, self.pools_seq_key],
                args=[encode_observation(similarity, correct), entry_max, scope_max,
                      scope_ttl_s, scope, max_scopes])
            if not result:
                return None
            own, pool = result
            return own.decode(), pool.decode()

        return await self._call(op)

    async def changed_pools(self, after: int) -> tuple[int, dict[str, str | None]]:
        """The scope pools changed since sequence number `after` (all of them for 0), as
        {scope: encoded list, or None where it expired}, and the latest sequence number.

        A background poll: a failure raises RedisError or OSError as it is and leaves the
        availability gate open (a slow poll while the loop is busy must not bypass requests)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.pools_seq_key)
        pipe.zrangebyscore(self.pools_changed_key, f"({after}", "+inf")
        raw_seq, scopes = await pipe.execute()
        seq = int(raw_seq or 0)
        if seq < after:  # Redis lost its data (a restart without persistence): read all
            return await self.changed_pools(0) if after else (seq, {})
        if not scopes:
            return seq, {}
        names = [s.decode() for s in scopes]
        values = cast(list[bytes | None],
                      await self.client.mget([self.scope_pool_key(name) for name in names]))
        return seq, {name: (v.decode() if v is not None else None)
                     for name, v in zip(names, values, strict=True)}

    async def delete(self, entry_id: str, scope: str = "") -> bool:
        """Remove an entry and announce it; True if it existed."""

        async def op() -> bool:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.entry_key(entry_id))
            pipe.xadd(
                self.stream_key,
                {"op": "del", "id": entry_id, "scope": scope},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            pipe.zrem(self.lru_key, entry_id)
            await self._account(keys=[self.sizes_key, self.bytes_key], args=[entry_id],
                                client=pipe)
            deleted, *_ = await pipe.execute()
            return bool(deleted)

        return await self._call(op)
