"""The alarm watch: alarms reach the rules while events cannot be made durable.

An event is acknowledged to the broker only once it is durable (docs/ingest.md). When
neither PostgreSQL nor the local log can take a batch (the database down and the disk
full), or the database falls far behind, acknowledgements stop. The broker then stops
sending once Trygg holds its receive maximum (MQTT 5) or in-flight limit (3.1.1) of
unacknowledged messages, and every later event, alarms too, would wait in the session
queue behind ordinary traffic until durability returns.

While acknowledgements are stalled (`Watchman`: half the in-flight window
unacknowledged, the oldest unacknowledged message older than `STALL_S`, or reading
paused for back-pressure) a second connection, `AlarmWatch`,
with a clean session and its own client id and account (`<client id>-watch`, user
`<user>-watch`: mqtt.BrokerAddress.account), subscribes to the
device events at QoS 0. Of what it receives only alarms, falls, smoke and cancels (the
gateway's urgent lane) are parsed, through the gateway's own validation and
de-duplication, and handed to the rules; nothing is stored from it. The persistent
session still holds every event, the watch's included, and delivers them once
durability returns: they are stored then, and an event the watch already handed on is
not handed on again. The watch closes once acknowledgements have flowed for `QUIET_S`.

What this guarantees (docs/ingest.md "When nothing can be made durable"): an alarm
published while the watch is subscribed reaches staff as fast as usual; it is stored
and acknowledged once durability returns, the broker holding it meanwhile. The watch
opens while half the in-flight window is still free: at the 30,000 events/s burst of
the budgets and the default window of 10,000, that is a sixth of a second for a
connect and a SUBACK that take milliseconds on a local network. (For MQTT
3.1.1 the window is the broker's `max_inflight_messages`, which Trygg cannot see: keep
it equal to `TRYGG_MQTT_RECEIVE_MAXIMUM`, as the shipped configuration does.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Final

from gateway import metrics
from mqtt import BrokerAddress, Message, Protocol, Subscriber
from trygg.logging import get_logger

log = get_logger(__name__)

#: Acknowledgements this late mean the durable path has stalled: open the watch.
STALL_S: Final = 0.5
#: Close the watch once acknowledgements have flowed this long again.
QUIET_S: Final = 30.0
#: How often the age of the oldest unacknowledged message is looked at (the in-flight
#: count is looked at on every read, `Watchman.poke`): cheap enough for an idle Trygg.
CHECK_S: Final = 0.25

#: Event types that go to the rules first (the gateway's urgent lane, and the watch's).
URGENT: Final = re.compile(rb'"(?:alarm|fall|smoke)\.')


class AlarmWatch(Subscriber):
    """A clean-session QoS 0 subscription to the device events; `on_urgent` gets each
    message that may be an alarm, fall, smoke or cancel (on the loop's thread).
    Entering does not wait for the broker: it connects and keeps reconnecting in the
    background (a broker that is away now is the usual reason for nothing else to work
    either)."""

    def __init__(self, address: BrokerAddress, client_id: str, events_filter: str,
                 on_urgent: Callable[[Message], None], *, protocol: Protocol) -> None:
        super().__init__(address, client_id, [events_filter], self._read, qos=0, protocol=protocol, clean=True,
                         receive_maximum=0, wait=False)
        self._on_urgent = on_urgent

    def _read(self, messages: list[Message], generation: int) -> None:
        for msg in messages:
            if URGENT.search(msg.payload):
                self._on_urgent(msg)


class Watchman:
    """Opens the watch while `stalled()` and closes it after `QUIET_S` without a stall.
    `run` is a task on the gateway's loop; `open_watch` makes a new `AlarmWatch`."""

    def __init__(self, stalled: Callable[[], bool], open_watch: Callable[[], AlarmWatch], *,
                 stall_check_s: float = CHECK_S, quiet_s: float = QUIET_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stalled = stalled
        self._open_watch = open_watch
        self._check_s = stall_check_s
        self._quiet_s = quiet_s
        self._clock = clock
        self.watch: AlarmWatch | None = None
        self._open_stack: contextlib.AsyncExitStack | None = None
        self._last_stall = 0.0
        self._poked: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._check_s)
                await self.check()
        finally:
            await self.close()

    def poke(self) -> None:
        """Look now rather than at the next check (the receive path saw the in-flight
        window filling up); on the loop's thread."""
        if self.watch is None and (self._poked is None or self._poked.done()):
            self._poked = asyncio.get_running_loop().create_task(self.check(), name="alarm watch check")

    async def check(self) -> None:
        now = self._clock()
        try:
            stalled = self._stalled()
        except Exception:  # a probe that fails is taken as a stall: better watched twice
            log.exception("durable_path_probe_failed")
            stalled = True
        if stalled:
            self._last_stall = now
            if self.watch is None:
                await self._open()
        elif self.watch is not None and now - self._last_stall >= self._quiet_s:
            log.info("alarm_watch_closed")
            await self.close()

    async def _open(self) -> None:
        watch = self._open_watch()
        self.watch = watch
        metrics.ALARM_WATCH.set(1)
        log.warning("acknowledgements_stalled_alarm_watch_opened",
                    broker=watch.url)
        self._open_stack = contextlib.AsyncExitStack()
        await self._open_stack.enter_async_context(watch)

    async def close(self) -> None:
        stack, self._open_stack = self._open_stack, None
        self.watch = None
        metrics.ALARM_WATCH.set(0)
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()


__all__ = ["QUIET_S", "STALL_S", "URGENT", "AlarmWatch", "Watchman"]
