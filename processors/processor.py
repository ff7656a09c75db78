"""`Processor`: every resident's state machine and the one timer heap, behind four calls.

Pure and synchronous — no asyncio, no I/O, no clock: every call takes ``now``. The
asyncio side lives in `processors.stage`.

Typical life::

    proc = Processor(registry)
    proc.restore_state(snapshot)                  # optional, from the last export_state()
    proc.start_supervision(now, last_seen)        # last message time per device, from storage
    intents = proc.handle(event_or_status, now)   # for each item from the gateway
    intents = proc.due(now)                       # when now >= proc.next_deadline()
    proc.alert_closed(resident_id, kind)          # staff resolved an alert
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from processors import resident as machine
from processors import rules_devices
from processors.context import HEARTBEAT, OFFLINE_DEBOUNCE, ResidentContext, Step, Timer, TimerKey
from processors.errors import StateError
from processors.jsonstate import obj
from processors.localtime import as_utc
from processors.resident import EMPTY, ResidentState
from processors.scheduler import Scheduler
from trygg.contract import AlertKind, Event
from trygg.logging import get_logger
from trygg.pipeline import AlertIntent, DeviceStatus
from trygg.registry import Registry, Resident, release_free_memory

STATE_VERSION: Final = 1
#: after a restart no device is declared offline before this much time has passed, so
#: the broker can deliver what it queued while Trygg was down (docs/contract.md#9-performance-budgets: a backlog is
#: cleared within 2 minutes)
RESTART_GRACE: Final = timedelta(minutes=2)

log = get_logger(__name__)


class Processor:
    """The streaming rules of docs/contract.md#4-rules-and-alerts for every resident of a registry."""

    def __init__(self, registry: Registry, *, offline_debounce: timedelta = OFFLINE_DEBOUNCE) -> None:
        """`offline_debounce`: how long a device's `offline` status must hold before it
        raises device_offline (`TRYGG_OFFLINE_DEBOUNCE_S`, docs/rules.md)."""
        self._offline_debounce = offline_debounce
        self._residents: dict[str, Resident] = {}
        self._owner_of: dict[str, str] = {}  # device id → resident id
        self._contexts: dict[str, ResidentContext] = {}
        self._states: dict[str, ResidentState] = {}
        #: heartbeat timers are keyed by the bare device id (`_slot_key`): 500,000
        #: supervised devices then need no key object each
        self._timers: Scheduler[TimerKey | str] = Scheduler()
        self._last_now: datetime | None = None
        self._index(registry)

    # ---------------------------------------------------------------- registry

    def _index(self, registry: Registry) -> None:
        self._registry = registry
        self._residents = {r.id: r for r in registry.residents}
        self._owner_of = {d.id: r.id for r in registry.residents for d in r.devices}
        self._contexts = {}

    def _context(self, resident_id: str, *, keep: bool = True) -> ResidentContext | None:
        """The resident's compiled settings; kept for the next message unless `keep` is
        False (start-up passes over every resident once: a context is kept only once
        the resident's devices send something)."""
        ctx = self._contexts.get(resident_id)
        if ctx is None:
            resident = self._residents.get(resident_id)
            if resident is None:
                return None
            ctx = ResidentContext.of(resident, offline_debounce=self._offline_debounce)
            if keep:
                self._contexts[resident_id] = ctx
        return ctx

    @property
    def registry(self) -> Registry:
        return self._registry

    def set_registry(self, registry: Registry, now: datetime | None = None) -> list[AlertIntent]:
        """Swap in a reloaded registry, keeping the state of what still exists.

        Removed residents are forgotten with their timers (their open alerts stay for
        staff to resolve). For changed residents see `resident.reconfigure`: removed
        devices and zones cancel the alerts only they held — those CANCEL intents are
        returned — and new devices start heartbeat supervision at `now` (default: the
        latest time this processor was given).
        """
        old_residents = self._residents
        old_contexts = {rid: self._context(rid, keep=False) for rid in self._states}
        self._index(registry)
        at = now if now is not None else self._last_now
        if at is None:  # nothing has happened yet: there is no state and no timer
            return []
        self._see(at)
        intents: list[AlertIntent] = []
        timers: list[Timer] = []
        for rid, old in old_residents.items():
            new = self._residents.get(rid)
            if new == old:
                continue
            old_ctx = old_contexts.get(rid) or ResidentContext.of(old, offline_debounce=self._offline_debounce)
            state = self._states.get(rid, EMPTY)
            if new is None:
                self._states.pop(rid, None)
                timers += [Timer(key, None) for key in machine.timer_keys(old_ctx, state)]
                continue
            new_ctx = self._context(rid, keep=False)
            assert new_ctx is not None
            state, i, t = machine.reconfigure(old_ctx, new_ctx, state, at)
            self._store(rid, state)
            intents += i
            timers += t
        for rid in self._residents.keys() - old_residents.keys():
            ctx = self._context(rid, keep=False)
            assert ctx is not None
            state, i, t = machine.start(ctx, EMPTY, at, {}, timedelta(0))
            self._store(rid, state)
            intents += i
            timers += t
        # cancel first: a device that moved between residents is disarmed, then re-armed
        self._apply([t for t in timers if t.at is None])
        self._apply([t for t in timers if t.at is not None])
        return intents

    # ---------------------------------------------------------------- input

    def handle(self, item: Event | DeviceStatus, now: datetime) -> list[AlertIntent]:
        """Run an event or status message through its resident's rules."""
        self._see(now)
        rid = self._owner_of.get(item.device_id)
        ctx = None if rid is None else self._context(rid)
        if rid is None or ctx is None:
            log.warning("processor_unknown_device", device_id=item.device_id)
            return []
        state = self._states.get(rid, EMPTY)
        step: Step[ResidentState]
        if isinstance(item, Event):
            step = machine.on_event(ctx, state, item, now)
        else:
            step = machine.on_status(ctx, state, item, now)
        return self._commit(rid, step)

    def due(self, now: datetime, *, most: int | None = None) -> list[AlertIntent]:
        """Fire the timers whose deadline is ≤ `now` (at most `most` of them).

        A flood — a regional outage silencing thousands of devices at once — can be worked
        off in slices with `most`, so other work (an alarm) runs between them; call again
        while `next_deadline()` ≤ now.
        """
        self._see(now)
        intents: list[AlertIntent] = []
        # rules re-arm only into the future; the extra rounds without `most` are a safeguard
        for _ in range(1 if most is not None else 8):
            fired = self._timers.pop_due(now, most)
            if not fired:
                break
            for slot_key, _ in fired:
                key = _timer_key(slot_key)
                rid = self._owner_of.get(key.owner) if key.rule == HEARTBEAT else key.owner
                ctx = None if rid is None else self._context(rid)
                if rid is None or ctx is None:
                    continue
                state = self._states.get(rid, EMPTY)
                intents += self._commit(rid, machine.on_timer(ctx, state, key, now))
        return intents

    def next_deadline(self) -> datetime | None:
        """When `due` has something to do next; None when no timer is armed."""
        return self._timers.next_deadline()

    def next_deadline_micros(self) -> int | None:
        """`next_deadline` in microseconds since the epoch (cheaper to compare)."""
        return self._timers.next_micros()

    def alert_closed(self, resident_id: str, kind: AlertKind | str, device_id: str | None = None) -> None:
        """Staff resolved the resident's alert of `kind`.

        The conditions it covered go quiet: they raise nothing more until they end (door
        closed, resident back inside a zone, device heard, battery ≥ 30 %, next activity);
        a wandering watch ends. `device_offline` and `battery_low` are one alert per
        device: `device_id` names the one whose alert was resolved.
        """
        ctx = self._context(resident_id)
        if ctx is None:
            return
        state = self._states.get(resident_id, EMPTY)
        intents = self._commit(resident_id, machine.on_alert_closed(ctx, state, AlertKind(kind), device_id))
        assert not intents

    # ---------------------------------------------------------------- start-up

    def start_supervision(
        self,
        now: datetime,
        last_seen: Mapping[str, datetime],
        *,
        grace: timedelta = RESTART_GRACE,
    ) -> None:
        """Arm heartbeat deadlines for every registered device, and inactivity clocks.

        A device's deadline counts from its last message — the later of `last_seen`
        (from storage) and a restored state — or from `now` if it was never heard, and is
        never earlier than ``now + grace``, so a restart neither floods ``device_offline``
        for devices heard recently nor for those whose messages the broker still holds.
        """
        self._see(now)
        self._timers.arm_many(self._start_residents(now, last_seen, grace))
        release_free_memory()  # what growing the timer tables left behind

    def _start_residents(
        self, now: datetime, last_seen: Mapping[str, datetime], grace: timedelta
    ) -> Iterator[tuple[TimerKey | str, datetime]]:
        """Start every resident's rules; yields the timers to arm. A generator, so the
        many short-lived objects of one resident are freed before the next is started
        and the memory they used is reused, not left in holes between what is kept."""
        for rid in self._residents:
            ctx = self._context(rid, keep=False)
            assert ctx is not None
            state = self._states.get(rid, EMPTY)
            # `last_seen` is read only for the resident's own devices
            new, intents, timers = machine.start(ctx, state, now, last_seen, grace)
            assert not intents
            self._store(rid, new)
            for timer in timers:
                if timer.at is None:
                    self._timers.cancel(_slot_key(timer.key))
                else:
                    yield _slot_key(timer.key), timer.at

    def export_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of every resident's rule state."""
        return export_states(self.states_view())

    def states_view(self) -> list[tuple[str, ResidentState]]:
        """Every resident's current state. States are immutable values, so this list may
        be exported (`export_states`) on another thread while the rules go on."""
        return list(self._states.items())

    def restore_state(self, snapshot: Mapping[str, Any]) -> None:
        """Replace all rule state with a snapshot from `export_state` and re-arm its timers.

        Residents and devices no longer in the registry are skipped. Raises `StateError`
        (naming the bad path) and changes nothing if the snapshot cannot be read.
        """
        doc = obj(dict(snapshot), "(snapshot)")
        if doc.get("version") != STATE_VERSION:
            raise StateError("version", f"unsupported state version {doc.get('version')!r}")
        states: dict[str, ResidentState] = {}
        for rid, raw in obj(doc.get("residents"), "residents").items():
            state = ResidentState.from_json(raw, f"residents.{rid}")
            ctx = self._context(rid, keep=False)
            if ctx is None:
                continue
            for device_id in [d for d in state.devices.devices if d not in ctx.devices]:
                devices, _, _ = rules_devices.forget_device(ctx, state.devices, device_id, _EPOCH)
                state = ResidentState(state.doors, state.activity, state.geo, devices)
            states[rid] = state
        self._states = {rid: s for rid, s in states.items() if not s.is_empty()}
        self._timers = Scheduler()
        arms = [
            (_slot_key(timer.key), timer.at)
            for rid, state in self._states.items()
            for timer in machine.timers_of(self._context_required(rid), state)
            if timer.at is not None
        ]
        self._timers.arm_many(arms)

    # ---------------------------------------------------------------- internals

    def _context_required(self, rid: str) -> ResidentContext:
        ctx = self._context(rid, keep=False)
        assert ctx is not None
        return ctx

    def _see(self, now: datetime) -> None:
        now = as_utc(now)
        if self._last_now is None or now > self._last_now:
            self._last_now = now

    def _store(self, rid: str, state: ResidentState) -> None:
        if state is EMPTY:
            self._states.pop(rid, None)
        else:
            self._states[rid] = state

    def _commit(self, rid: str, step: Step[ResidentState]) -> list[AlertIntent]:
        state, intents, timers = step
        self._store(rid, state)
        self._apply(timers)
        return intents

    def _apply(self, timers: list[Timer]) -> None:
        for timer in timers:
            if timer.at is None:
                self._timers.cancel(_slot_key(timer.key))
            else:
                self._timers.arm(_slot_key(timer.key), timer.at)

    # ---------------------------------------------------------------- introspection

    def state_of(self, resident_id: str) -> ResidentState:
        """The current rule state of a resident (for tests and the admin API)."""
        return self._states.get(resident_id, EMPTY)

    @property
    def timer_count(self) -> int:
        return len(self._timers)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _slot_key(key: TimerKey) -> TimerKey | str:
    """The scheduler's key of a timer: a heartbeat's is its device id."""
    return key.owner if key.rule == HEARTBEAT else key


def _timer_key(key: TimerKey | str) -> TimerKey:
    return TimerKey(HEARTBEAT, key) if isinstance(key, str) else key


def export_states(states: list[tuple[str, ResidentState]]) -> dict[str, Any]:
    """The snapshot document of `Processor.export_state` from a `states_view`."""
    return {
        "version": STATE_VERSION,
        "residents": {rid: state.to_json() for rid, state in sorted(states) if not state.is_empty()},
    }
