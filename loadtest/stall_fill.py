"""Entries written straight to Redis, as another replica's write-backs would be, for the
stall benchmark: its own process, so that filling a store does not disturb the probe
client's event loop in the benchmark process.

    python -m semcache.loadtest.stall_fill fill --redis URL --template ENTRY_ID \
        --count N [--first K] [--events] [--centres FILE]
    python -m semcache.loadtest.stall_fill delete --redis URL --count N [--first K] \
        [--fraction 0.26]

`fill` copies a real entry (`--template`, written by the proxy: its scope, tenant, model,
response) into N complete entries with synthetic vectors (unit vectors around `--centres`,
else random ones), ids derived from their number; with `--events` each is announced on the
event stream (replicas add it to their index), without it only a start-up rebuild finds
them. `delete` removes a `--fraction` of them (spread over all of them) and announces each
deletion, paced so that a tail reading 500 events per round trip keeps up with the stream's
length bound.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import redis
import redis.asyncio as aioredis

from semcache.index.keys import shard_of
from semcache.index.store import STREAM_MAXLEN, Store

DIM = 384
BATCH = 500
DELETE_RATE = 20_000.0
"""Deletions a second: a tail applies tens of thousands a second, and the stream keeps
STREAM_MAXLEN events, so it never drops one a tail has not read."""


def entry_id(i: int) -> str:
    return hashlib.sha256(f"stall-fill:{i}".encode()).hexdigest()


def keys() -> Store:
    """The store only for its key names (it opens no connection)."""
    return Store(aioredis.Redis())


def vectors(count: int, centres: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if centres is None:
        out = rng.standard_normal((count, DIM)).astype(np.float32)
    else:  # like bench_index: a real question's embedding plus noise
        out = centres[rng.integers(0, len(centres), count)] + rng.standard_normal(
            (count, DIM)).astype(np.float32) * (0.6 / np.sqrt(DIM))
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def fill(client: redis.Redis, template: str, count: int, first: int, events: bool,
         centres: np.ndarray | None, seed: int) -> float:
    store = keys()
    raw = client.hgetall(store.entry_key(template))
    if not raw:
        raise SystemExit(f"no entry {template}")
    base = {k: v for k, v in raw.items() if k not in (b"hits", b"last_hit", b"obs")}
    ttl = int(base[b"ttl_s"])
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for start in range(first, first + count, BATCH):
        n = min(BATCH, first + count - start)
        vecs = vectors(n, centres, rng)
        pipe = client.pipeline(transaction=False)
        now = repr(time.time()).encode()
        for i, vector in zip(range(start, start + n), vecs, strict=True):
            eid = entry_id(i)
            pipe.hset(store.entry_key(eid), mapping={
                **base, b"query": f"synthetic question {i}".encode(), b"created": now,
                b"embedding": vector.tobytes()})
            pipe.expire(store.entry_key(eid), ttl)
            if events:
                pipe.xadd(store.keys.stream(shard_of(eid)),
                          {"op": "add", "id": eid, "scope": base[b"scope"]},
                          maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()
    return time.perf_counter() - started


def delete(client: redis.Redis, count: int, first: int, fraction: float) -> float:
    store = keys()
    step = 1 / fraction
    victims = [entry_id(first + int(j * step)) for j in range(int(count * fraction))]
    started = time.perf_counter()
    for at in range(0, len(victims), BATCH):
        pipe = client.pipeline(transaction=False)
        for eid in victims[at : at + BATCH]:
            pipe.delete(store.entry_key(eid))
            pipe.xadd(store.keys.stream(shard_of(eid)), {"op": "del", "id": eid, "scope": ""},
                      maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()
        due = started + (at + BATCH) / DELETE_RATE
        time.sleep(max(0.0, due - time.perf_counter()))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semcache.loadtest.stall_fill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["fill", "delete"])
    p.add_argument("--redis", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--template", help="fill: id of a real entry to copy")
    p.add_argument("--events", action="store_true", help="fill: announce on the stream")
    p.add_argument("--centres", type=Path, help="fill: .npy of vectors to cluster around")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fraction", type=float, default=0.26,
                   help="delete: this share of the entries (0.26: past the quarter of dead "
                        "rows that makes a scope rebuild)")
    args = p.parse_args(argv)
    client = redis.Redis.from_url(args.redis)
    if args.action == "fill":
        if not args.template:
            p.error("fill needs --template")
        centres = np.load(args.centres) if args.centres else None
        seconds = fill(client, args.template, args.count, args.first, args.events, centres,
                       args.seed)
    else:
        seconds = delete(client, args.count, args.first, args.fraction)
    print(f"{args.action} {args.count} in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
