"""Re-sent events and re-used ids among the events received lately (docs/ingest.md
"Re-used ids").

A device that missed a PUBACK sends the event again: the same `(device_id, id)` with the
same `type` and `ts`. That copy is stored once by the store's key and must not reach the
rules a second time. A device whose counter reset sends an old id with another type or
time: that is a new event, handed on under `trygg.contract.rekeyed_id`, the id the store
and the alerts give it too, so a re-send of it is again a re-send.

The memory is bounded (the oldest key is forgotten first) and lives only as long as its
owner: after a restart a copy is handed on again, and the rules' own guard (deterministic
alert ids) holds. One home for the rule, used by the single-process gateway
(gateway/ingress.py) and by the cluster's ingest partitions.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Final

from trygg.contract import Event, EventType, rekeyed_id

#: keys remembered by one owner
RECENT_KEYS: Final = 200_000


class RecentKeys:
    """`admit(event)`: whether an event is new (to be handed on) or a re-send; an event
    re-using the id of another is re-keyed first. Used from one thread."""

    __slots__ = ("_keys", "_limit")

    def __init__(self, limit: int = RECENT_KEYS) -> None:
        if limit < 1:
            raise ValueError(f"the recent keys need room for one key, got {limit}")
        self._limit = limit
        # (device_id, id) → (type, ts) of the event that holds it
        self._keys: OrderedDict[tuple[str, str], tuple[EventType, datetime]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def admit(self, event: Event) -> bool:
        """True when `event` is new; False for a re-send (stored once by the store's key,
        not handed on again). An event whose id another event holds gets its re-keyed id
        (`event.event_id` is changed) and is then new unless that id is known too."""
        key = (event.device_id, event.event_id)
        mark = (event.type, event.ts)
        known = self._keys.get(key)
        if known is not None:
            if known == mark:
                return False
            event.event_id = rekeyed_id(event.event_id, event.type, event.ts)
            key = (event.device_id, event.event_id)
            if self._keys.get(key) == mark:
                return False
        self._keys[key] = mark
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True


__all__ = ["RECENT_KEYS", "RecentKeys"]
