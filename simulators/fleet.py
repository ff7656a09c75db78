"""The fleet: many residents' days merged into one time-ordered stream of messages.

`Fleet(seed, residents, start)` is deterministic: the same arguments give the same
`SimMessage`s (topic, payload, simulated time), byte for byte. Each resident draws from
random streams of their own, keyed by (seed, resident, day, purpose), so resident *i*
behaves the same in a fleet of 5 and in a fleet of 5,000, and a day does not depend on the
time of day the simulation started.

The stream is produced lazily, one local day per resident at a time, so a long run at high
speed never holds more than a day of messages per resident.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from zoneinfo import ZoneInfo

from simulators.devices import Network, device_day, initial_state
from simulators.profiles import SimResident, build_residents, resident_rng
from simulators.registry_gen import DEMO_RESIDENTS, DEMO_SEED, fleet_registry
from simulators.rhythm import plan_day
from simulators.wire import SimMessage, from_ms, run_tag, to_ms
from trygg.registry import Registry


class Fleet:
    """Simulated residents with their devices, from a seed.

    `incident_rate` multiplies the daily chance of every incident (falls, alarms, smoke,
    night wandering): 1.0 is a plausible municipality, a demo may want 5.
    """

    def __init__(
        self,
        seed: int,
        residents: int | Sequence[SimResident],
        start: datetime,
        *,
        incident_rate: float = 1.0,
        network: Network | None = None,
    ) -> None:
        if incident_rate < 0:
            raise ValueError("incident_rate must be >= 0")
        self.seed = seed
        self.residents: tuple[SimResident, ...] = tuple(
            build_residents(seed, residents) if isinstance(residents, int) else residents
        )
        self.start_ms = to_ms(start)
        self.incident_rate = incident_rate
        self.network = network if network is not None else Network()
        self.tag = run_tag(self.start_ms, seed)

    @property
    def start(self) -> datetime:
        return from_ms(self.start_ms)

    def registry(self, *, users: bool = True) -> Registry:
        """The registry document that makes every device of this fleet known."""
        return fleet_registry(self.residents, users=users)

    def device_groups(self) -> list[list[str]]:
        """Device ids per resident (a resident's devices share one MQTT connection)."""
        return [[d.id for d in r.devices] for r in self.residents]

    def messages(self, until: datetime | None = None) -> Iterator[SimMessage]:
        """Every message from `start` on (up to `until`), in order of publication time."""
        limit = None if until is None else to_ms(until)
        merged = heapq.merge(*(self.resident_messages(r, limit) for r in self.residents),
                             key=attrgetter("at_ms"))
        if limit is None:
            yield from merged
            return
        for msg in merged:
            if msg.at_ms > limit:
                return
            yield msg

    def resident_messages(
        self, res: SimResident, until_ms: int | None = None
    ) -> Iterator[SimMessage]:
        """One resident's stream, in order of publication time; endless with no `until_ms`.

        With `until_ms` the stream ends after the day that holds it (the caller cuts).
        """
        zone = ZoneInfo(res.timezone)
        day: date = from_ms(self.start_ms, zone).date()
        states = {
            d.id: initial_state(d, resident_rng(self.seed, res.index, f"battery/{d.id}"))
            for d in res.devices
        }
        carried: list[SimMessage] = []  # published after their day: late, delayed, re-sent
        while True:
            key = day.isoformat()
            plan = plan_day(res, day, resident_rng(self.seed, res.index, f"day/{key}"),
                            self.incident_rate)
            rng = resident_rng(self.seed, res.index, f"devices/{key}")
            todays = device_day(res, plan, states, rng, self.tag, self.network, self.start_ms)
            later: list[SimMessage] = []
            # Anything from later days is published at or after the next local midnight, so
            # whatever this day publishes after that waits to be merged with the next day.
            for msg in heapq.merge(carried, todays, key=attrgetter("at_ms")):
                if msg.at_ms < plan.end_ms or (until_ms is not None and plan.end_ms > until_ms):
                    yield msg
                else:
                    later.append(msg)
            if until_ms is not None and plan.end_ms > until_ms:
                return
            carried = later
            day += timedelta(days=1)


def demo_fleet(start: datetime | None = None, *, incident_rate: float = 1.0) -> Fleet:
    """The fleet of the demo registry (`trygg up --demo`); starts now unless told otherwise.

    Its devices are exactly those of `demo_registry()`, so load that registry first.
    """
    if start is None:
        start = datetime.now(UTC).replace(microsecond=0)
    return Fleet(DEMO_SEED, DEMO_RESIDENTS, start, incident_rate=incident_rate)


__all__ = ["Fleet", "demo_fleet"]
