"""One owner per partition: leases in a JetStream key-value bucket (docs/cluster.md "Ownership").

A lease is a key (`ingest.3`, `rules.7`) whose value is the owning instance's id. It is
taken with the bucket's compare-and-set (`create`: only if absent), kept by updating it
with the revision last written (`update(last=...)`), and given back by deleting it with
that revision. The bucket's TTL removes a key not renewed within `ttl_s`: an instance
that died loses its partitions that long after its last renewal, and the others take
them. No consensus of Trygg's own: the bucket is an R3 stream, Raft is the server's.

`Ownership` runs the leases of one instance: every `tick_s` it renews its own instance
key and its leases, takes free partitions up to its fair share (partitions ÷ live
instances, rounded up) and gives back what it holds beyond that share, so that an
instance that joins gets work and one that dies has its work taken within `ttl_s` and
a tick.

A lease is lost when another instance holds it (a renewal finds another revision) or
when it could not be renewed for `RENEW_WITHIN` of `ttl_s`, counted from when the last
renewal that succeeded was sent (this instance was cut off, or the bucket has no leader:
once `ttl_s` has passed another may have it). The owner's `lose` callback runs before
anything else of that partition is done. So that this happens in time, a tick never
waits on the bucket for longer than `REQUEST_S` a request, and renews every lease at
once: renewed one after another, each waiting out a dead node's request timeout, a
holder went on running partitions for seconds after another instance had taken them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cluster.layout import OWNERS_BUCKET, cancel_not_lost
from trygg.logging import get_logger

log = get_logger(__name__)

LEASE_TTL_S: Final = 5.0
TICK_S: Final = 0.5
INSTANCE_PREFIX: Final = "instance."

#: errors of a request that did not reach a stream leader (a node or leader is changing:
#: a timeout, no responders, "no response from stream", the connection moving): tried
#: again at the next tick, the lease kept until `RENEW_WITHIN` of its TTL has passed
#: without renewal. Every error of nats-py is one; an instance must not end on them (a
#: `kill -9` of one NATS node ended both instances on `NoStreamResponseError`).
TRANSIENT = (nats.errors.Error, OSError)
#: a lease not renewed for this share of its TTL is given up by its holder, before the
#: server lets it expire and another instance may take it
RENEW_WITHIN: Final = 0.8
#: a request to the bucket is given up after this long (and counts as not answered)
REQUEST_S: Final = 1.0


class Leases:
    """The leases one instance holds, by name → the revision it last wrote."""

    def __init__(self, js: JetStreamContext, instance: str, *, ttl_s: float = LEASE_TTL_S,
                 replicas: int = 3, bucket: str = OWNERS_BUCKET) -> None:
        self.instance = instance
        self._js = js
        self._ttl_s = ttl_s
        self._replicas = replicas
        self._bucket = bucket
        self._kv: KeyValue | None = None
        self.held: dict[str, int] = {}
        #: name → time.monotonic() of its last renewal (or taking)
        self.renewed: dict[str, float] = {}

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    async def open(self) -> None:
        try:
            self._kv = await self._js.key_value(self._bucket)
        except BucketNotFoundError:
            self._kv = await self._js.create_key_value(KeyValueConfig(
                bucket=self._bucket, history=1, ttl=self._ttl_s, replicas=self._replicas,
                storage=StorageType.FILE))

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("Leases.open() was not called")
        return self._kv

    async def acquire(self, name: str) -> bool:
        """Take `name` if nobody holds it; True if this instance holds it now."""
        sent = time.monotonic()
        try:
            async with asyncio.timeout(REQUEST_S):
                revision = await self.kv.create(name, self.instance.encode())
        except KeyWrongLastSequenceError:
            return False
        self.held[name] = revision
        self.renewed[name] = sent
        return True

    async def renew(self, name: str) -> bool:
        """Keep `name`; False once it is lost (another holds it, or it expired), and then
        forgotten. A lease given back (`release`) before or while the renewal was under way
        stays given back, and is not lost."""
        revision = self.held.get(name)
        if revision is None:
            return True
        sent = time.monotonic()  # the server's expiry counts from its write, which is later
        try:
            async with asyncio.timeout(REQUEST_S):
                renewed = await self.kv.update(name, self.instance.encode(), last=revision)
        except KeyWrongLastSequenceError:
            if self.held.get(name) != revision:  # given back meanwhile: not taken again
                return True
            # Taken by another, or expired: when the bucket's leader was on a node that
            # died, no renewal could be written for the 4-9 s of the election and the new
            # leader expires every lease at once. Nobody else holds it yet: take it again,
            # and the partition goes on where it is instead of moving.
            if await self._take_again(name):
                return True
            self._forget(name)
            return False
        except TRANSIENT as exc:
            if self.held.get(name) == revision and self._overdue(name):
                self._give_up(name, type(exc).__name__)
                return False
            return True
        if self.held.get(name) == revision:  # else given back meanwhile (it expires unrenewed)
            self.held[name], self.renewed[name] = renewed, sent
        return True

    def overdue(self) -> list[str]:
        """Forget and return the leases not renewed for `RENEW_WITHIN` of the TTL: their
        partitions are to be stopped now, whatever the bucket answers."""
        late = [name for name in self.held if self._overdue(name)]
        for name in late:
            self._give_up(name, None)
        return late

    def _overdue(self, name: str) -> bool:
        return time.monotonic() - self.renewed.get(name, 0.0) >= self._ttl_s * RENEW_WITHIN

    def _give_up(self, name: str, error: str | None) -> None:
        log.warning("lease_expired_unrenewed", lease=name, error=error)
        self._forget(name)

    async def _take_again(self, name: str) -> bool:
        """Create `name` again if nobody holds it; False if another does or the cluster
        did not answer (KeyWrongLastSequenceError is a nats-py error, so TRANSIENT)."""
        try:
            if await self.owner(name) is not None:
                return False
            sent = time.monotonic()
            async with asyncio.timeout(REQUEST_S):
                self.held[name] = await self.kv.create(name, self.instance.encode())
        except TRANSIENT:
            return False
        self.renewed[name] = sent
        log.info("lease_taken_again_after_expiry", lease=name)
        return True

    async def release(self, name: str) -> None:
        """Give `name` back at once (a clean stop, or beyond the fair share)."""
        revision = self.held.get(name)
        self._forget(name)
        if revision is None:
            return
        try:
            async with asyncio.timeout(REQUEST_S):
                await self.kv.delete(name, last=revision)
        except TRANSIENT as exc:  # taken (a wrong last sequence) or expiring anyway
            log.info("lease_release_skipped", lease=name, error=type(exc).__name__)

    async def owner(self, name: str) -> str | None:
        try:
            async with asyncio.timeout(REQUEST_S):
                entry = await self.kv.get(name)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return None if entry.value is None else entry.value.decode()

    async def names(self) -> set[str]:
        """The leases held and the instance keys, by anyone (one listing of the bucket)."""
        names: set[str] = set()
        async with asyncio.timeout(REQUEST_S):
            # nats-py's `keys()` leaves its watcher (a subscription) behind when it fails
            watcher = await self.kv.watchall(ignore_deletes=True, meta_only=True)
            try:
                async for entry in watcher:
                    if entry is None:  # the end of what the bucket holds
                        break
                    names.add(entry.key)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
        return names

    async def owners(self) -> dict[str, str]:
        """Every held lease and instance key → the instance holding it (a read each: for
        operators and tests; the ticks need only `names`)."""
        out: dict[str, str] = {}
        for name in await self.names():
            holder = await self.owner(name)
            if holder is not None:
                out[name] = holder
        return out

    def _forget(self, name: str) -> None:
        self.held.pop(name, None)
        self.renewed.pop(name, None)


Callback = Callable[[str], Coroutine[Any, Any, None]]

#: a partition this instance held within this long is taken back before any other, and
#: without the per-tick limit: when the bucket's leader dies every lease expires at once,
#: and each instance takes back its own instead of the partitions changing places
HELD_RECENTLY_S: Final = 60.0


@dataclass
class Ownership:
    """Runs the leases of one instance over groups of partition names (e.g. the ingest
    and the rules partitions): `gain(name)` when one is taken, `lose(name)` when it is
    lost or given back (awaited before the lease is released; a lost one is stopped
    beside the ticks, and taken again only once it has stopped), `abandon(name)` first
    when it is lost (its work may stop without saving what the next owner rebuilds)."""

    leases: Leases
    groups: Sequence[Sequence[str]]
    gain: Callback
    lose: Callback
    abandon: Callable[[str], None] | None = None
    tick_s: float = TICK_S
    #: at most this many partitions of a group that were another instance's are taken in
    #: one tick, and only once seen free at two ticks in a row: instances starting
    #: together share them out, and an instance takes back its own before another can;
    #: none for a TTL after this instance could reach the bucket again (its leases had
    #: run out: the others' too, and they may be slower to come back)
    take_per_tick: int = 2
    _gaining: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: lost leases whose partitions are being stopped
    _dropping: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: name → time.monotonic() when this instance last held it
    _held_at: dict[str, float] = field(default_factory=dict)
    #: free at the last tick
    _free: set[str] = field(default_factory=set)
    #: whether leases ran out since the bucket last answered, and when it answered again
    _cut_off: bool = False
    _back_at: float = -math.inf

    @property
    def instance_key(self) -> str:
        return INSTANCE_PREFIX + self.leases.instance

    async def run(self) -> None:
        """Until cancelled; then every lease is given back (each `lose` awaited)."""
        leases = self.leases
        try:
            while True:
                cancel_not_lost()
                await self.tick()
                await asyncio.sleep(self.tick_s)
        finally:  # all at once: one by one, a clean stop of 16 partitions took 15 s
            await asyncio.gather(*(self._drop(name, release=True) for name in list(leases.held)
                                   if name not in self._dropping),
                                 *self._dropping.values(), return_exceptions=True)
            with contextlib.suppress(*TRANSIENT):
                await leases.kv.delete(self.instance_key)

    async def tick(self) -> None:
        leases = self.leases
        overdue = leases.overdue()
        self._cut_off = self._cut_off or bool(overdue)
        self._lost(overdue)
        held = list(leases.held)
        # Beside the renewals, not before them: one after the other, a slow bucket let a
        # renewal's failure be noticed after the lease's TTL had passed.
        *kept, _ = await asyncio.gather(*(leases.renew(name) for name in held), self._put_instance_key())
        self._lost([name for name, ok in zip(held, kept, strict=True) if not ok])
        try:
            present = await leases.names()
        except TRANSIENT:
            return
        now = time.monotonic()
        if self._cut_off:
            self._cut_off, self._back_at = False, now
        self._held_at.update((name, now) for name in leases.held)
        instances = max(1, sum(1 for k in present if k.startswith(INSTANCE_PREFIX)))
        free_before, self._free = self._free, set()
        for group in self.groups:
            share = math.ceil(len(group) / instances)
            mine = [n for n in group if n in leases.held and n not in self._dropping]
            if len(mine) > share:  # another instance joined: give back what is beyond the share
                for name in mine[share:]:
                    log.info("partition_handed_over", partition=name, instance=leases.instance, share=share)
                    self._stop_beside(name, release=True)  # renewed until it has stopped
                continue
            free = [n for n in group if n not in present and n not in leases.held and n not in self._dropping]
            self._free.update(free)
            own = [n for n in free if now - self._held_at.get(n, -math.inf) < HELD_RECENTLY_S]
            others = [n for n in free if n in free_before and n not in own][:self.take_per_tick]
            if now - self._back_at < leases.ttl_s:
                others = []
            for name in (own + others)[:max(0, share - len(mine))]:
                try:
                    if await leases.acquire(name):
                        log.info("partition_taken", partition=name, instance=leases.instance)
                        self._gaining[name] = asyncio.create_task(self.gain(name), name=f"gain.{name}")
                except TRANSIENT:
                    break

    async def _put_instance_key(self) -> None:
        with contextlib.suppress(*TRANSIENT):
            async with asyncio.timeout(REQUEST_S):
                await self.leases.kv.put(self.instance_key, self.leases.instance.encode())

    def _lost(self, names: list[str]) -> None:
        """Stop the partitions whose leases are gone, all at once and beside the ticks."""
        for name in names:
            log.warning("partition_lost", partition=name, instance=self.leases.instance)
            if self.abandon is not None:
                self.abandon(name)
            self._stop_beside(name, release=False)

    def _stop_beside(self, name: str, *, release: bool) -> None:
        """Stop a partition (`_drop`) in a task of its own, so that the ticks go on renewing
        the other leases meanwhile: a tick that waited for partitions handed over while
        PostgreSQL was down (each stop waiting seconds for its alert rows) let this
        instance's other leases run out while it still ran them, and another instance took
        them. The partition is not taken again until the stop has ended."""
        if name not in self._dropping:
            self._dropping[name] = asyncio.create_task(self._drop_beside(name, release), name=f"lose.{name}")

    async def _drop_beside(self, name: str, release: bool) -> None:
        try:
            await self._drop(name, release=release)
        finally:
            self._dropping.pop(name, None)

    async def _drop(self, name: str, *, release: bool) -> None:
        gaining = self._gaining.pop(name, None)
        if gaining is not None and not gaining.done():
            gaining.cancel()
        try:
            await self.lose(name)
        except Exception:
            log.exception("partition_lose_failed", partition=name)
        if release:
            await self.leases.release(name)  # a lost lease is forgotten already
