"""One timer heap for every deadline of the processors (heartbeats, doors, inactivity).

There is no task, thread or polling loop per device. A `Scheduler` is a binary heap
(`heapq`) of ``(deadline, seq, key)`` entries plus one small slot per armed key:

- `arm` of a new key pushes one entry: O(log n).
- `arm` of an armed key to a *later* deadline — what heartbeat supervision does on every
  message — only writes the new deadline into the key's slot: O(1), nothing is pushed.
  When the old entry reaches the top of the heap it is pushed again with the current
  deadline, so each key has a single live entry and the heap stays the size of the
  number of armed keys, even with 500,000 devices beating every minute.
- `arm` to an *earlier* deadline pushes a new entry and bumps the key's generation
  (`seq`); the older entry is now stale.
- `cancel` forgets the slot; entries of a forgotten key or of an old generation are
  dropped when they surface (lazy cancellation). The heap is rebuilt from the slots when
  stale entries outnumber live ones.

Deadlines are kept as POSIX seconds (floats): a microsecond-precise datetime reads back
exactly, since a double resolves these times to well under half a microsecond.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_COMPACT_MIN: Final = 4096


def from_seconds(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Scheduler(Generic[K]):
    """Deadlines by key; fire with `pop_due(now)`, see the module doc for the costs."""

    __slots__ = ("_heap", "_seq", "_slots")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        #: key → (current deadline, seq of its live heap entry); the live entry's deadline
        #: is never later than the current one
        self._slots: dict[K, tuple[float, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: K) -> bool:
        return key in self._slots

    def __iter__(self) -> Iterator[K]:
        return iter(self._slots)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, live and stale (for tests and metrics)."""
        return len(self._heap)

    def deadline_of(self, key: K) -> datetime | None:
        slot = self._slots.get(key)
        return None if slot is None else from_seconds(slot[0])

    def arm(self, key: K, deadline: datetime) -> None:
        """Set `key` to fire at `deadline`, replacing any earlier setting of that key."""
        at = deadline.timestamp()
        slot = self._slots.get(key)
        if slot is not None and at >= slot[0]:
            self._slots[key] = (at, slot[1])  # later: the live entry is pushed again on surfacing
            return
        self._seq += 1
        self._slots[key] = (at, self._seq)
        heapq.heappush(self._heap, (at, self._seq, key))
        if slot is not None:
            self._maybe_compact()

    def arm_many(self, items: Iterable[tuple[K, datetime]]) -> None:
        """Arm many keys at once: new keys are appended and the heap rebuilt in O(n)."""
        heap, slots = self._heap, self._slots
        fresh = False
        for key, deadline in items:
            if key in slots:
                self.arm(key, deadline)
                continue
            at = deadline.timestamp()
            self._seq += 1
            slots[key] = (at, self._seq)
            heap.append((at, self._seq, key))
            fresh = True
        if fresh:
            heapq.heapify(heap)

    def cancel(self, key: K) -> bool:
        """Forget `key`; True if it was armed. Its heap entry is dropped lazily."""
        if self._slots.pop(key, None) is None:
            return False
        self._maybe_compact()
        return True

    def next_deadline(self) -> datetime | None:
        """The earliest armed deadline, or None when nothing is armed."""
        top = self._settle()
        return None if top is None else from_seconds(top)

    def pop_due(self, now: datetime, most: int | None = None) -> list[tuple[K, datetime]]:
        """Disarm and return the keys whose deadline is ≤ `now`, earliest first.

        With `most`, at most that many; the rest stay armed for the next call.
        """
        limit = now.timestamp()
        fired: list[tuple[K, datetime]] = []
        heap, slots = self._heap, self._slots
        while most is None or len(fired) < most:
            top = self._settle()
            if top is None or top > limit:
                return fired
            _, _, key = heapq.heappop(heap)
            del slots[key]
            fired.append((key, from_seconds(top)))
        return fired

    def _settle(self) -> float | None:
        """Drop stale entries and re-push extended ones until the top entry is live."""
        heap, slots = self._heap, self._slots
        while heap:
            at, seq, key = heap[0]
            slot = slots.get(key)
            if slot is None or slot[1] != seq:
                heapq.heappop(heap)
                continue
            if slot[0] > at:
                self._seq += 1
                slots[key] = (slot[0], self._seq)
                heapq.heapreplace(heap, (slot[0], self._seq, key))
                continue
            return at
        return None

    def _maybe_compact(self) -> None:
        if len(self._heap) > _COMPACT_MIN and len(self._heap) > 2 * len(self._slots):
            self._heap = []
            for key, (at, _) in list(self._slots.items()):
                self._seq += 1
                self._slots[key] = (at, self._seq)
                self._heap.append((at, self._seq, key))
            heapq.heapify(self._heap)
