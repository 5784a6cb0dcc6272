"""Single-flight: identical misses in one scope make one upstream call.

A miss (same entry id: same scope, same question) that finds an identical one already on its
way to the upstream on this replica follows it instead of calling again: a streaming request
follows a streamed call chunk by chunk as it arrives; any other combination (a plain request
and a streamed call, a stream asking for usage that the call did not ask for) waits for the
complete answer and has it replayed. Across replicas a short Redis lock with a timeout
(`cache.single_flight_lock_s`, renewed while the call runs) elects one replica; the others
wait for the entry it writes and replay it. Before calling, the holder of a lock looks the
entry up once more, so a burst that races a write-back costs no second call either.

Failures are not shared. If the call fails (unreachable, timed out, an error status, a stream
cut before it began), every request that waited makes its own call, and gets what a real
upstream gives it; only the request that made the call is relayed the upstream's error, which
was the answer to it. A streaming follower that has begun receiving a stream that is then cut
is cut too, like the request that made the call. If another replica's call fails or outlasts
`upstream.timeout_s`, this replica calls itself.

Directives: `no-cache` never follows (it asks for a fresh answer) but may lead; `no-store`
may follow but never leads (its answer is not to be kept, so not shared either). Requests
that bypass the cache never take part.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from semcache.index.store import Entry, Store, StoreError

from ..config import CacheSettings
from ..metrics import Metrics
from ..upstream import Upstream
from .forward import Head, Outgoing, Relay, Result, Tail
from .lookup import Lookup, fresh

FLIGHT_POLL_S = 0.02
"""How often a replica waiting on another's call looks for its entry: a fraction of any LLM
call, and one small Redis read per waiting question per replica."""

Finish = Callable[[Lookup, Result], Awaitable[None]]
"""What to do with the end of a call for the request that made it (write-back, checks)."""
Spawn = Callable[[Coroutine[Any, Any, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Call:
    """An upstream call that this request made, and its place in the stream if it streams."""

    relay: Relay
    tail: Tail | None


@dataclass(frozen=True, kw_only=True)
class Shared:
    """What a request got from an identical request's call instead of calling itself."""

    source: str
    """`local` (a call on this replica) or `remote` (another replica's, read from Redis)."""
    entry: Entry | None = None
    """The answer as stored by another replica."""
    answer: bytes | None = None
    """The complete answer of a call on this replica (to be replayed)."""
    upstream_s: float = 0.0
    relay: Relay | None = None
    tail: Tail | None = None
    head: Head | None = None
    """A stream on this replica to follow as it arrives (relay, tail and head together)."""


class Flight:
    """The upstream call for one question, as the requests waiting on it see it."""

    def __init__(self, lookup: Lookup, outgoing: Outgoing) -> None:
        self.lookup = lookup
        """The request that started it."""
        self.outgoing = outgoing
        self.decided = asyncio.Event()
        self.relay: Relay | None = None
        """This replica's call, once it is decided that this replica makes it."""
        self.leader_tail: Tail | None = None
        self.entry: Entry | None = None
        """The answer another replica stored, when its call is the one that counted."""

    async def lead(self) -> Call | Shared | None:
        """For the request that started it: its call, another replica's answer, or None
        (the flight could not start; call alone)."""
        await self.decided.wait()
        if self.entry is not None:
            return Shared(source="remote", entry=self.entry)
        if self.relay is not None:
            return Call(relay=self.relay, tail=self.leader_tail)
        return None

    async def follow(self, lookup: Lookup) -> Shared | None:
        """For an identical request that arrived while it ran: the answer to replay, the
        stream to follow, or None (the call failed: call alone)."""
        await self.decided.wait()
        if self.entry is not None:
            return Shared(source="remote", entry=self.entry)
        relay = self.relay
        if relay is None:
            return None
        req, o = lookup.req, relay.outgoing
        if (req.stream and o.stream and req.endpoint == o.endpoint  # the same wire format
                and req.include_usage == o.include_usage and relay.tailable):
            tail = relay.tail()
            head = await relay.head
            if head is not None and head.streamed:
                return Shared(source="local", relay=relay, tail=tail, head=head)
            tail.close()
        result = await relay.outcome()
        if result.answer is None:
            return None
        return Shared(source="local", answer=result.answer, upstream_s=result.upstream_s)


class Flights:
    """The calls in flight on this replica, by entry id, and the lock across replicas."""

    def __init__(self, settings: CacheSettings, store: Store, upstream: Upstream,
                 metrics: Metrics, *, wait_s: float, spawn: Spawn, finish: Finish) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.metrics = metrics
        self.wait_s = wait_s
        """Longest wait for another replica's call (the upstream's own timeout)."""
        self.spawn = spawn
        self.finish = finish
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def find(self, lookup: Lookup) -> Flight | None:
        """The identical call in flight that this request may follow, if any."""
        if not self.settings.single_flight or lookup.bypass_reason or lookup.directives.no_cache:
            return None
        return self._flights.get(lookup.entry_id)

    def lead(self, request: web.Request, lookup: Lookup) -> Flight | None:
        """Start the call for this request's question, for every identical request that
        comes while it runs; None where this request may not lead one."""
        if (not self.settings.single_flight or lookup.bypass_reason
                or lookup.directives.no_store or lookup.entry_id in self._flights):
            return None
        flight = Flight(lookup, Outgoing.of(request, lookup.req))
        self._flights[lookup.entry_id] = flight
        self.spawn(self._fly(flight))
        return flight

    def alone(self, request: web.Request, lookup: Lookup) -> Call:
        """A call for this request only (a bypass, a no-store miss, a failed flight's
        followers, single-flight off)."""
        relay = Relay(self.upstream, self.metrics, Outgoing.of(request, lookup.req))
        tail = relay.tail() if lookup.req.stream else None
        relay.start()
        self.spawn(self._finish_when_done(lookup, relay))
        return Call(relay=relay, tail=tail)

    async def _finish_when_done(self, lookup: Lookup, relay: Relay) -> None:
        await self.finish(lookup, await asyncio.shield(relay.result))

    async def _fly(self, flight: Flight) -> None:
        key, token, held = flight.lookup.entry_id, secrets.token_hex(8), False
        try:
            entry: Entry | None = None
            lookup = flight.lookup
            own = lookup.directives.no_cache  # asks for the upstream's own answer

            def usable(found: Entry | None) -> bool:  # what the lookup would have served
                return (found is not None and found.scope == lookup.scope.id
                        and fresh(found, lookup.directives))

            try:
                held = await self.store.lock(key, token, self.settings.single_flight_lock_s)
                if held and not own:  # written between this request's lookup and now?
                    entry = await self.store.get(key)
                elif not held and not own:
                    entry = await self._wait_for_other(key, usable)
            except StoreError:
                entry = None  # without Redis, this replica still makes one call for its own
            if usable(entry):
                flight.entry = entry
                return
            relay = Relay(self.upstream, self.metrics, flight.outgoing)
            flight.relay = relay
            flight.leader_tail = relay.tail() if flight.outgoing.stream else None
            flight.decided.set()
            relay.start()
            async with self._holding(key, token, held):
                await self.finish(flight.lookup, await asyncio.shield(relay.result))
        finally:
            # Unregistered only after the write-back, so an identical request arriving
            # meanwhile follows this flight instead of missing and calling again.
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.decided.set()
            if held:
                with contextlib.suppress(StoreError):
                    await self.store.unlock(key, token)

    async def _wait_for_other(self, key: str,
                              usable: Callable[[Entry | None], bool]) -> Entry | None:
        """The entry another replica's call wrote, or None once its lock is gone without
        one (it failed, or did not store) or the wait is over. An entry already there is
        not it unless `usable` (a stale one the call is about to replace)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while loop.time() < deadline:
            await asyncio.sleep(FLIGHT_POLL_S)
            entry = await self.store.get(key)
            if usable(entry):
                return entry
            if not await self.store.locked(key):
                entry = await self.store.get(key)  # released just after writing?
                return entry if usable(entry) else None
        return None

    @contextlib.asynccontextmanager
    async def _holding(self, key: str, token: str, held: bool) -> AsyncIterator[None]:
        """Renew the lock while the call runs, so a long answer keeps it and a replica that
        dies frees it within `single_flight_lock_s`."""
        if not held:
            yield
            return
        ttl = self.settings.single_flight_lock_s

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    if not await self.store.extend_lock(key, token, ttl):
                        return
                except StoreError:
                    return

        renewer = asyncio.get_running_loop().create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
