"""The simulated clock, and the rule that keeps every published `ts` acceptable.

The gateway dead-letters an event whose `ts` is more than 24 h ahead of the time it was
received, or more than 30 days behind it (docs/contract.md#3-mqtt-contract). A simulation at `speed` X
(simulated seconds per real second) drifts ahead of the wall clock by (X - 1) s every real
second, so it cannot run fast for ever. The design:

1. **Start in the past, catch up with the present.** Unless a start is given, the simulated
   clock starts at `now - (speed - 1) × duration`, so a run of `duration` real seconds ends
   with the simulated clock reaching the wall clock just as the run ends. Without a duration
   one hour is assumed. The start is never earlier than 29 days ago (`EARLIEST`), leaving a
   day for late messages and a slow publisher.
2. **Never run ahead by more than `max_lead`.** The simulated time is
   `min(start + speed × elapsed, wall + max_lead)`: once it catches up with the wall clock
   plus the allowed lead (0 by default, at most 23 h), it runs at real speed. A run at
   `--speed 60` without `--duration` thus replays the past 59 hours in one hour, then
   carries on in real time.

Event times are never clamped or rewritten: the stream stays exactly what the seed says,
only *when* a message is published depends on the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from simulators.errors import ClockError
from simulators.wire import from_ms, to_ms

EARLIEST: Final = timedelta(days=29)
MAX_LEAD_LIMIT: Final = timedelta(hours=23)
DEFAULT_SPAN_S: Final = 3600.0


def default_start(now: datetime, speed: float, duration_s: float | None) -> datetime:
    """Where the simulated clock starts when no start is given (see the module doc)."""
    real = DEFAULT_SPAN_S if duration_s is None else duration_s
    back = timedelta(seconds=max(speed - 1.0, 0.0) * real)
    start = now - min(back, EARLIEST)
    return start.replace(microsecond=(start.microsecond // 1000) * 1000)


def check_start(start: datetime, now: datetime, max_lead: timedelta) -> None:
    """Refuse a start whose events the gateway would dead-letter."""
    if start.tzinfo is None:
        raise ClockError("the simulated start needs a UTC offset", start=start.isoformat())
    if start < now - EARLIEST:
        raise ClockError(
            f"simulated start {start.isoformat()} is more than {EARLIEST.days} days ago; "
            "the gateway refuses events older than 30 days",
            start=start.isoformat(),
        )
    if start > now + max_lead:
        raise ClockError(
            f"simulated start {start.isoformat()} is ahead of now + max lead "
            f"({max_lead}); the gateway refuses events more than 24 h ahead",
            start=start.isoformat(),
        )


class SimClock:
    """Simulated milliseconds for elapsed real time; injectable wall and monotonic clocks."""

    def __init__(
        self,
        start: datetime,
        speed: float,
        *,
        max_lead: timedelta = timedelta(0),
        wall: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if not timedelta(0) <= max_lead <= MAX_LEAD_LIMIT:
            raise ValueError(f"max_lead must be between 0 and {MAX_LEAD_LIMIT}")
        now = (wall or (lambda: datetime.now(UTC)))()
        check_start(start, now, max_lead)
        self.speed = speed
        self.start_ms = to_ms(start)
        self._wall0_ms = to_ms(now)
        self._lead_ms = max_lead // timedelta(milliseconds=1)
        self._monotonic = monotonic
        self._mono0 = monotonic()

    def elapsed(self) -> float:
        """Real seconds since the clock was made."""
        return self._monotonic() - self._mono0

    def sim_ms(self, elapsed: float) -> int:
        """The simulated time after `elapsed` real seconds."""
        fast = self.start_ms + int(self.speed * elapsed * 1000)
        cap = self._wall0_ms + int(elapsed * 1000) + self._lead_ms
        return max(min(fast, cap), self.start_ms)

    def now_ms(self) -> int:
        return self.sim_ms(self.elapsed())

    def now(self) -> datetime:
        return from_ms(self.now_ms())

    def real_at(self, sim_ms: int) -> float:
        """The elapsed real seconds at which the simulated clock reaches `sim_ms`."""
        fast = (sim_ms - self.start_ms) / 1000 / self.speed
        capped = (sim_ms - self._wall0_ms - self._lead_ms) / 1000
        return max(fast, capped, 0.0)


__all__ = ["EARLIEST", "MAX_LEAD_LIMIT", "SimClock", "check_start", "default_start"]
