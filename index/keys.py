"""Every Redis key semcache writes, in one place, laid out for Redis Cluster.

Redis Cluster refuses a transaction or a script whose keys hash to different slots, and
hashes only the part of a key between the first `{` and the next `}` (the hash tag) when
there is one. So keys that are written together share a hash tag:

- **Shards.** Entries are spread over SHARDS groups by the first hex digit of their id,
  which is the first digit of their scope's id (proxy/policy.py `entry_id`), so every entry
  of a scope is in one shard. Each shard's tag is a fixed string chosen so that the SHARDS
  slots lie evenly across the 16,384 (`redis-cli --cluster create` gives each master a
  contiguous range, so 3 masters hold 6, 5 and 5 shards). One shard holds its entries
  (`{prefix}{sN}:e:{id}`), their flight locks, its LRU set, its byte accounting, its event
  stream, its scopes' observation pools and their change log: an entry write, an eviction
  and an observation are each one script on one slot. A replica tails the SHARDS streams.
- **Answer keys** (context chains) are looked up before the scope is known, by tenant,
  namespace and a hash of the answer, so their shard is that of the tenant and namespace:
  all the answer keys one request reads are one MGET on one slot.
- **Deployment-wide keys** (the tenant secret, run-time settings, the admin time series,
  the feedback log) share the tag `{prefix}{g}`: small, and written together.

On a single Redis the tags change nothing but the key names. Keys of the layout before
this one (`{prefix}e:{id}`, `{prefix}lru`, `{prefix}events`, ...) are not read: an upgraded
deployment starts with a cold cache, and the old entries expire by their TTL (the old
un-expiring bookkeeping keys can be dropped with `redis-cli --scan --pattern
'semcache:[!{]*' | xargs redis-cli del`, for the default prefix).
"""

from __future__ import annotations

import functools
import hashlib

from redis.crc import key_slot

SHARDS = 16
"""Hash-tag groups of entries. Fixed: a different count would put every entry under another
key. 16 spreads a cluster of up to 16 masters and keeps the streams a replica tails few."""

_SLOTS = 16384


@functools.cache
def shard_tags() -> tuple[str, ...]:
    """The hash tag of each shard: the first `s{i}.{n}` whose slot lies in the i-th
    sixteenth of the slot range (deterministic, so every replica agrees)."""
    tags = []
    width = _SLOTS // SHARDS
    for i in range(SHARDS):
        n = 0
        while key_slot(f"s{i}.{n}".encode()) // width != i:
            n += 1
        tags.append(f"s{i}.{n}")
    return tuple(tags)


def shard_of(entry_or_scope_id: str) -> int:
    """The shard of an entry (or of a scope): its first hex digit; an id that does not
    start with one (tests, hand-made ids) by a hash of the whole id."""
    try:
        return int(entry_or_scope_id[:1], 16) % SHARDS
    except ValueError:
        return hashlib.sha256(entry_or_scope_id.encode()).digest()[0] % SHARDS


def answer_shard(tenant: str, namespace: str) -> int:
    return hashlib.sha256(f"{tenant}\0{namespace}".encode()).digest()[0] % SHARDS


class Keys:
    """The key names under one prefix."""

    def __init__(self, prefix: str = "semcache:") -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("a key prefix may not hold '{' or '}' (they make hash tags)")
        self.prefix = prefix
        self._shard = tuple(f"{prefix}{{{tag}}}:" for tag in shard_tags())
        self._global = f"{prefix}{{g}}:"

    def shard_prefix(self, shard: int) -> str:
        return self._shard[shard]

    # one shard's keys -------------------------------------------------------------------

    def entry(self, entry_id: str) -> str:
        return f"{self._shard[shard_of(entry_id)]}e:{entry_id}"

    def entry_pattern(self, shard: int) -> str:
        """SCAN pattern of one shard's entries."""
        return f"{self._shard[shard]}e:*"

    @property
    def all_entries_pattern(self) -> str:
        """SCAN pattern of every shard's entries (`{` and `}` are no glob characters)."""
        return f"{self.prefix}{{s*}}:e:*"

    def entry_id_of(self, key: bytes | str) -> str:
        raw = key.decode() if isinstance(key, bytes) else key
        return raw.partition("}:e:")[2]

    def flight(self, entry_id: str) -> str:
        """The lock of the upstream call for an entry's question, across replicas."""
        return f"{self._shard[shard_of(entry_id)]}flight:{entry_id}"

    def lru(self, shard: int) -> str:
        """Sorted set of the shard's entry ids by last use (write or hit)."""
        return f"{self._shard[shard]}lru"

    def sizes(self, shard: int) -> str:
        """Hash of entry id -> bytes it stores, for `max_bytes`."""
        return f"{self._shard[shard]}sizes"

    def bytes(self, shard: int) -> str:
        """The bytes the shard's entries store (the sum of `sizes`)."""
        return f"{self._shard[shard]}bytes"

    def stream(self, shard: int) -> str:
        """The shard's add/delete events, which every replica tails."""
        return f"{self._shard[shard]}events"

    def streams(self) -> list[str]:
        return [self.stream(s) for s in range(SHARDS)]

    def scope_pool(self, scope: str) -> str:
        """A scope's observations (adaptive thresholds), in its entries' shard."""
        return f"{self._shard[shard_of(scope)]}so:{scope}"

    def pools_changed(self, shard: int) -> str:
        """Sorted set of the shard's scopes by the sequence number of their pool's change."""
        return f"{self._shard[shard]}so-changed"

    def pools_seq(self, shard: int) -> str:
        return f"{self._shard[shard]}so-seq"

    def answer(self, tenant: str, namespace: str, digest: str) -> str:
        """Which entry gave an answer (context chains, proxy/pipeline/chains.py)."""
        return f"{self._shard[answer_shard(tenant, namespace)]}ans:{tenant}:{namespace}:{digest}"

    def response(self, tenant: str, response_id: str) -> str:
        """A Responses answer the cache gave, by the id it gave it (proxy/apis/response_ids.py),
        in the tenant's answer shard."""
        return f"{self._shard[answer_shard(tenant, '')]}resp:{tenant}:{response_id}"

    # deployment-wide keys ---------------------------------------------------------------

    @property
    def tenant_secret(self) -> str:
        """The deployment's secret for tenant hashes (proxy/tenants.py)."""
        return f"{self._global}tenant-secret"

    @property
    def runtime(self) -> str:
        """Settings changed at run time (proxy/runtime.py)."""
        return f"{self._global}runtime"

    def minute(self, minute: int) -> str:
        """The admin time series' counters of one minute (proxy/admin/timeseries.py)."""
        return f"{self._global}ts:{minute}"

    @property
    def totals(self) -> str:
        return f"{self._global}totals"

    @property
    def top(self) -> str:
        """Entries ranked by hits."""
        return f"{self._global}top"

    def request(self, request_id: str) -> str:
        """Which entry answered a request (wrong-hit reports by request id)."""
        return f"{self._global}req:{request_id}"

    @property
    def feedback(self) -> str:
        """Hit reports kept for the operator to read."""
        return f"{self._global}feedback"
