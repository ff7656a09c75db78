"""Which conditions of one alert kind are currently alerted, for one resident.

The alerts stage keeps at most one unresolved alert per resident and kind and attaches
further triggers to it (docs/contract.md#4-rules-and-alerts, flood control). A kind can have several *parts*
that hold at the same time — two doors open too long, two devices silent — so the rules
keep, per kind, a `Tracked` record:

- ``alerted``: parts that hold and were reported with an OPEN intent;
- ``quiet``: parts that still hold but whose alert staff resolved (`closed`); a quiet part
  raises nothing until it ends, so a resolved alert does not re-open on the next event;
- ``source``: the source of the OPEN that raised the alert now open for the kind.

`start` of a part reports whether an OPEN must be sent; `end` of the last alerted part
returns the source for the CANCEL of the whole alert (other parts still holding keep the
alert open). Single-part kinds (wandering, geofence, inactivity) use the part ``""``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.context import Source
from processors.jsonstate import dump_source, obj, opt_source, strings


@dataclass(frozen=True, slots=True)
class Tracked:
    source: Source | None = None
    alerted: frozenset[str] = frozenset()
    quiet: frozenset[str] = frozenset()

    def holds(self, part: str = "") -> bool:
        """True while the part's condition is known to hold (alerted or quiet)."""
        return part in self.alerted or part in self.quiet

    def is_alerted(self, part: str = "") -> bool:
        return part in self.alerted

    def start(self, part: str, source: Source) -> tuple[Tracked, bool]:
        """The part's condition now holds; True when an OPEN intent must be sent."""
        if self.holds(part):
            return self, False
        return Tracked(self.source or source, self.alerted | {part}, self.quiet), True

    def end(self, part: str = "") -> tuple[Tracked, Source | None]:
        """The part's condition ended; returns the source to CANCEL, if the alert ended."""
        if part in self.quiet:
            return Tracked(self.source, self.alerted, self.quiet - {part}), None
        if part not in self.alerted:
            return self, None
        rest = self.alerted - {part}
        if rest:
            return Tracked(self.source, rest, self.quiet), None
        return Tracked(quiet=self.quiet), self.source

    def closed(self) -> Tracked:
        """Staff resolved the kind's alert: every alerted part goes quiet."""
        return Tracked(quiet=self.quiet | self.alerted)

    def forget(self, part: str) -> tuple[Tracked, Source | None]:
        """The part is no longer supervised (device removed); like `end`."""
        return self.end(part)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": dump_source(self.source),
            "alerted": sorted(self.alerted),
            "quiet": sorted(self.quiet),
        }

    @classmethod
    def from_json(cls, doc: Any, path: str) -> Tracked:
        fields = obj(doc, path)
        return cls(
            source=opt_source(fields, "source", path),
            alerted=frozenset(strings(fields.get("alerted", []), f"{path}.alerted")),
            quiet=frozenset(strings(fields.get("quiet", []), f"{path}.quiet")),
        )


#: the record of a kind with nothing alerted (shared default of the rule states)
UNTRACKED = Tracked()


@dataclass(frozen=True, slots=True)
class PerPart:
    """One alert per part: `device_offline` and `battery_low` are per device (docs/contract.md#4-rules-and-alerts:
    "cancelled when the device is heard again"), so each device's condition opens
    its own alert with its own source and ends it on its own."""

    alerted: tuple[tuple[str, Source], ...] = ()  # (part, source of its OPEN), sorted by part
    quiet: frozenset[str] = frozenset()

    def _sources(self) -> dict[str, Source]:
        return dict(self.alerted)

    def holds(self, part: str) -> bool:
        return part in self.quiet or any(p == part for p, _ in self.alerted)

    def is_alerted(self, part: str) -> bool:
        return any(p == part for p, _ in self.alerted)

    def start(self, part: str, source: Source) -> tuple[PerPart, bool]:
        """The part's condition now holds; True when its OPEN intent must be sent."""
        if self.holds(part):
            return self, False
        return PerPart(tuple(sorted({**self._sources(), part: source}.items())), self.quiet), True

    def end(self, part: str) -> tuple[PerPart, Source | None]:
        """The part's condition ended; returns its source to CANCEL, if it was alerted."""
        if part in self.quiet:
            return PerPart(self.alerted, self.quiet - {part}), None
        sources = self._sources()
        source = sources.pop(part, None)
        if source is None:
            return self, None
        return PerPart(tuple(sorted(sources.items())), self.quiet), source

    def closed(self, part: str | None) -> PerPart:
        """Staff resolved the alert of `part` (of every part when None): it goes quiet."""
        sources = self._sources()
        parts = set(sources) if part is None else {part} & set(sources)
        return PerPart(tuple(sorted((p, s) for p, s in sources.items() if p not in parts)), self.quiet | parts)

    def forget(self, part: str) -> tuple[PerPart, Source | None]:
        return self.end(part)

    def to_json(self) -> dict[str, Any]:
        return {"alerted": {p: dump_source(s) for p, s in self.alerted}, "quiet": sorted(self.quiet)}

    @classmethod
    def from_json(cls, doc: Any, path: str) -> PerPart:
        fields = obj(doc, path)
        alerted = obj(fields.get("alerted", {}), f"{path}.alerted")
        pairs = []
        for part in sorted(alerted):
            source = opt_source(alerted, part, f"{path}.alerted")
            if source is not None:
                pairs.append((part, source))
        return cls(tuple(pairs), frozenset(strings(fields.get("quiet", []), f"{path}.quiet")))


NO_PARTS = PerPart()
