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
when it could not be renewed for `ttl_s` (this instance was cut off: another may have
it). The owner's `lose` callback runs before anything else of that partition is done.
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
        try:
            revision = await self.kv.create(name, self.instance.encode())
        except KeyWrongLastSequenceError:
            return False
        self.held[name] = revision
        self.renewed[name] = time.monotonic()
        return True

    async def renew(self, name: str) -> bool:
        """Keep `name`; False once it is lost (another holds it, or it expired)."""
        revision = self.held.get(name)
        if revision is None:
            return False
        try:
            self.held[name] = await self.kv.update(name, self.instance.encode(), last=revision)
        except KeyWrongLastSequenceError:
            # Taken by another, or expired: when the bucket's leader was on a node that
            # died, no renewal could be written for the 4-9 s of the election and the new
            # leader expires every lease at once. Nobody else holds it yet: take it again,
            # and the partition goes on where it is instead of moving.
            if await self._take_again(name):
                return True
            self._forget(name)
            return False
        except TRANSIENT as exc:
            if time.monotonic() - self.renewed.get(name, 0.0) >= self._ttl_s * RENEW_WITHIN:
                log.warning("lease_expired_unrenewed", lease=name, error=type(exc).__name__)
                self._forget(name)
                return False
            return True
        self.renewed[name] = time.monotonic()
        return True

    async def _take_again(self, name: str) -> bool:
        """Create `name` again if nobody holds it; False if another does or the cluster
        did not answer (KeyWrongLastSequenceError is a nats-py error, so TRANSIENT)."""
        try:
            if await self.owner(name) is not None:
                return False
            self.held[name] = await self.kv.create(name, self.instance.encode())
        except TRANSIENT:
            return False
        self.renewed[name] = time.monotonic()
        log.info("lease_taken_again_after_expiry", lease=name)
        return True

    async def release(self, name: str) -> None:
        """Give `name` back at once (a clean stop, or beyond the fair share)."""
        revision = self.held.get(name)
        self._forget(name)
        if revision is None:
            return
        try:
            await self.kv.delete(name, last=revision)
        except TRANSIENT as exc:  # taken (a wrong last sequence) or expiring anyway
            log.info("lease_release_skipped", lease=name, error=type(exc).__name__)

    async def owner(self, name: str) -> str | None:
        try:
            entry = await self.kv.get(name)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return None if entry.value is None else entry.value.decode()

    async def names(self) -> set[str]:
        """The leases held and the instance keys, by anyone (one listing of the bucket)."""
        try:
            return set(await self.kv.keys())
        except nats.js.errors.NoKeysError:
            return set()

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


@dataclass
class Ownership:
    """Runs the leases of one instance over groups of partition names (e.g. the ingest
    and the rules partitions): `gain(name)` when one is taken, `lose(name)` when it is
    lost or given back (awaited before the lease is released)."""

    leases: Leases
    groups: Sequence[Sequence[str]]
    gain: Callback
    lose: Callback
    tick_s: float = TICK_S
    #: at most this many partitions of a group are taken in one tick, so that several
    #: instances starting together share them out rather than the first taking all
    take_per_tick: int = 2
    _gaining: dict[str, asyncio.Task[None]] = field(default_factory=dict)

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
            await asyncio.gather(*(self._drop(name, release=True) for name in list(leases.held)),
                                 return_exceptions=True)
            with contextlib.suppress(*TRANSIENT):
                await leases.kv.delete(self.instance_key)

    async def tick(self) -> None:
        leases = self.leases
        with contextlib.suppress(*TRANSIENT):
            await leases.kv.put(self.instance_key, leases.instance.encode())
        for name in list(leases.held):
            if not await leases.renew(name):
                log.warning("partition_lost", partition=name, instance=leases.instance)
                await self._drop(name, release=False)
        try:
            present = await leases.names()
        except TRANSIENT:
            return
        instances = max(1, sum(1 for k in present if k.startswith(INSTANCE_PREFIX)))
        for group in self.groups:
            share = math.ceil(len(group) / instances)
            mine = [n for n in group if n in leases.held]
            if len(mine) > share:  # another instance joined: give back what is beyond the share
                for name in mine[share:]:
                    log.info("partition_handed_over", partition=name, instance=leases.instance, share=share)
                    await self._drop(name, release=True)
                continue
            taken = 0
            for name in group:
                if len(mine) + taken >= share or taken >= self.take_per_tick:
                    break
                if name in present or name in leases.held:
                    continue
                try:
                    if await leases.acquire(name):
                        taken += 1
                        log.info("partition_taken", partition=name, instance=leases.instance)
                        self._gaining[name] = asyncio.create_task(self.gain(name), name=f"gain.{name}")
                except TRANSIENT:
                    break

    async def _drop(self, name: str, *, release: bool) -> None:
        gaining = self._gaining.pop(name, None)
        if gaining is not None and not gaining.done():
            gaining.cancel()
        try:
            await self.lose(name)
        except Exception:
            log.exception("partition_lose_failed", partition=name)
        if release:
            await self.leases.release(name)
        else:
            self.leases._forget(name)
