"""One timer heap for every deadline of the processors (heartbeats, doors, inactivity).

There is no task, thread or polling loop per device. A `Scheduler` is a binary heap
(`heapq`) of entries ``(deadline, seq, slot)`` plus one slot per armed key:

- `arm` of a new key pushes one entry: O(log n).
- `arm` of an armed key to a *later* deadline — what heartbeat supervision does on every
  message — only writes the new deadline into the key's slot: O(1), nothing is pushed.
  When the old entry reaches the top of the heap it is pushed again with the current
  deadline, so each key has a single live entry and the heap stays the size of the
  number of armed keys, even with 500,000 devices beating every minute.
- `arm` to an *earlier* deadline pushes a new entry and bumps the key's generation
  (`seq`); the older entry is now stale.
- `cancel` frees the slot; entries of a freed slot or of an old generation are dropped
  when they surface (lazy cancellation). The heap is rebuilt from the slots when stale
  entries outnumber live ones. Keys armed at the same deadline fire in the order their
  entries were pushed.

Memory (docs/contract.md#9-performance-budgets: 500,000 supervised devices): a key costs its place in one dict
(key → slot number), two machine integers in arrays (deadline and seq of the slot) and
one heap entry, which is a single Python int packing deadline, seq and slot — about
150 bytes, where tuples per entry and per slot cost three times that.

Deadlines are kept as integer microseconds since the epoch, so every datetime reads back
exactly.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Hashable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_COMPACT_MIN: Final = 4096
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
# a heap entry is (deadline << _AT_SHIFT) | (seq << _SLOT_BITS) | slot; ints order like the tuples
_SLOT_BITS: Final = 32
_SEQ_BITS: Final = 48
_AT_SHIFT: Final = _SLOT_BITS + _SEQ_BITS
_SLOT_MASK: Final = (1 << _SLOT_BITS) - 1
_SEQ_MASK: Final = (1 << _SEQ_BITS) - 1


def to_micros(instant: datetime) -> int:
    """Microseconds since the epoch, exactly (a naive datetime is local time, as in
    `datetime.timestamp`)."""
    if instant.tzinfo is None:
        instant = instant.astimezone(UTC)
    return (instant - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class Scheduler(Generic[K]):
    """Deadlines by key; fire with `pop_due(now)`, see the module doc for the costs."""

    __slots__ = ("_at", "_free", "_heap", "_keys", "_seq", "_seqs", "_slot_of")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._slot_of: dict[K, int] = {}
        #: per slot: its key (None when free), current deadline, and the seq of its live
        #: heap entry, whose deadline is never later than the current one
        self._keys: list[K | None] = []
        self._at = array("q")
        self._seqs = array("q")
        self._free: list[int] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: K) -> bool:
        return key in self._slot_of

    def __iter__(self) -> Iterator[K]:
        return iter(self._slot_of)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, live and stale (for tests and metrics)."""
        return len(self._heap)

    def deadline_of(self, key: K) -> datetime | None:
        slot = self._slot_of.get(key)
        return None if slot is None else from_micros(self._at[slot])

    def arm(self, key: K, deadline: datetime) -> None:
        """Set `key` to fire at `deadline`, replacing any earlier setting of that key."""
        at = to_micros(deadline)
        slot = self._slot_of.get(key)
        if slot is None:
            self._push(self._take_slot(key), at)
            return
        if at >= self._at[slot]:
            self._at[slot] = at  # later: the live entry is pushed again on surfacing
            return
        self._push(slot, at)
        self._maybe_compact()

    def arm_many(self, items: Iterable[tuple[K, datetime]]) -> None:
        """Arm many keys at once: new keys are appended and the heap rebuilt in O(n)."""
        fresh = False
        for key, deadline in items:
            if key in self._slot_of:
                self.arm(key, deadline)
                continue
            slot = self._take_slot(key)
            at = to_micros(deadline)
            self._seq += 1
            self._at[slot] = at
            self._seqs[slot] = self._seq
            self._heap.append(_entry(at, self._seq, slot))
            fresh = True
        if fresh:
            heapq.heapify(self._heap)

    def cancel(self, key: K) -> bool:
        """Forget `key`; True if it was armed. Its heap entry is dropped lazily."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return False
        self._release(slot)
        self._maybe_compact()
        return True

    def next_deadline(self) -> datetime | None:
        """The earliest armed deadline, or None when nothing is armed."""
        top = self.next_micros()
        return None if top is None else from_micros(top)

    def next_micros(self) -> int | None:
        """`next_deadline` as microseconds since the epoch (`to_micros`)."""
        return self._settle()

    def pop_due(self, now: datetime, most: int | None = None) -> list[tuple[K, datetime]]:
        """Disarm and return the keys whose deadline is ≤ `now`, earliest first.

        With `most`, at most that many; the rest stay armed for the next call.
        """
        limit = to_micros(now)
        fired: list[tuple[K, datetime]] = []
        while most is None or len(fired) < most:
            top = self._settle()
            if top is None or top > limit:
                return fired
            slot = heapq.heappop(self._heap) & _SLOT_MASK
            key = self._keys[slot]
            assert key is not None
            del self._slot_of[key]
            self._release(slot)
            fired.append((key, from_micros(top)))
        return fired

    # ---------------------------------------------------------------- internals

    def _take_slot(self, key: K) -> int:
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            self._keys.append(key)
            self._at.append(0)
            self._seqs.append(0)
        self._slot_of[key] = slot
        return slot

    def _release(self, slot: int) -> None:
        self._keys[slot] = None
        self._free.append(slot)

    def _push(self, slot: int, at: int) -> None:
        self._seq += 1
        self._at[slot] = at
        self._seqs[slot] = self._seq
        heapq.heappush(self._heap, _entry(at, self._seq, slot))

    def _settle(self) -> int | None:
        """Drop stale entries and re-push extended ones until the top entry is live."""
        heap, keys, ats, seqs = self._heap, self._keys, self._at, self._seqs
        while heap:
            top = heap[0]
            at, seq, slot = top >> _AT_SHIFT, (top >> _SLOT_BITS) & _SEQ_MASK, top & _SLOT_MASK
            if keys[slot] is None or seqs[slot] & _SEQ_MASK != seq:
                heapq.heappop(heap)
                continue
            current = ats[slot]
            if current > at:
                self._seq += 1
                seqs[slot] = self._seq
                heapq.heapreplace(heap, _entry(current, self._seq, slot))
                continue
            return at
        return None

    def _maybe_compact(self) -> None:
        if len(self._heap) > _COMPACT_MIN and len(self._heap) > 2 * len(self._slot_of):
            heap: list[int] = []
            for slot in self._slot_of.values():
                self._seq += 1
                self._seqs[slot] = self._seq
                heap.append(_entry(self._at[slot], self._seq, slot))
            heapq.heapify(heap)
            self._heap = heap


def _entry(at: int, seq: int, slot: int) -> int:
    return (at << _AT_SHIFT) | ((seq & _SEQ_MASK) << _SLOT_BITS) | slot
