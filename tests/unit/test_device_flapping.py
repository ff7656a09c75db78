"""device_offline from status flapping (issue 13), as staff would notice it on their
handhelds: a connection that drops and comes straight back raises nothing, a device
that flaps makes one alert — never one per flap — and a device that really stays
offline is still reported at the offline priority. The rules and the alert service
together, with an injected clock: no broker, no sleeping."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from alerts import AlertService, Change, ChangeReason, Timeouts
from processors import Processor
from trygg.contract import AlertKind, AlertState, Event, EventType, Priority
from trygg.pipeline import AlertIntent, DeviceStatus, IntentAction
from trygg.registry import validate_registry

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
UNIT = "d-alarm"
_ids = itertools.count(1)


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


class Home:
    """One resident's rules and the alert service, driven by an injected clock; every
    `Change` is one message to the staff handhelds."""

    def __init__(self, **options: timedelta) -> None:
        registry = validate_registry({
            "teams": [{"id": "east", "name": "Øst"}],
            "residents": [{"id": "r-17", "name": "Kari", "team": "east", "devices": [
                {"id": UNIT, "kind": "alarm_unit", "heartbeat_s": 60},
                {"id": "d-door", "kind": "door_sensor", "heartbeat_s": 600}]}],
        })
        self.proc = Processor(registry, **options)
        self.alerts = AlertService(registry, Timeouts())
        self.intents: list[AlertIntent] = []
        self.messages: list[Change] = []
        self.now = T0

    def run_until(self, at: datetime) -> None:
        """Fire the rule timers due up to `at`, in order (escalation is not counted)."""
        while (deadline := self.proc.next_deadline()) is not None and deadline <= at:
            self.now = deadline
            self._apply(self.proc.due(deadline))
        self.now = at

    def status(self, online: bool, at: datetime, device: str = UNIT) -> None:
        self.run_until(at)
        self._apply(self.proc.handle(DeviceStatus(device, "r-17", online, at), at))

    def beat(self, at: datetime, device: str = UNIT) -> None:
        self.run_until(at)
        self._apply(self.proc.handle(Event(device, f"e-{next(_ids)}", EventType.HEARTBEAT, at, at, {}), at))

    def _apply(self, intents: list[AlertIntent]) -> None:
        self.intents += intents
        self.messages += self.alerts.apply(intents)

    def opened(self) -> list[Change]:
        return [m for m in self.messages if m.reason is ChangeReason.OPENED]


def test_300_status_flaps_in_10_seconds_make_at_most_one_alert() -> None:
    home = Home()
    home.beat(sec(0))
    for n in range(300):  # offline, online, offline, ... every 33 ms
        home.status(online=n % 2 == 1, at=sec(n * 10 / 300))
    home.status(online=True, at=sec(10))
    for minute in range(1, 60):  # then an hour of normal heartbeats
        home.beat(sec(10 + 60 * minute))
    opened = home.opened()
    assert len(opened) <= 1, f"{len(opened)} alerts for one flapping device"
    [alert] = opened
    assert (alert.alert.kind, alert.alert.priority) == (AlertKind.DEVICE_OFFLINE, Priority.MEDIUM)
    assert alert.alert.detail["reason"] == "unstable connection"
    assert len(home.messages) <= 3, [m.reason for m in home.messages]  # opened, ended; nothing per flap
    assert home.alerts.get(alert.alert.alert_id).state is AlertState.CANCELLED  # stable again: it ended


def test_a_connection_that_drops_and_comes_back_within_the_debounce_raises_nothing() -> None:
    home = Home()
    home.beat(sec(0))
    home.status(online=False, at=sec(30))
    home.status(online=True, at=sec(75))  # 45 s later: a mobile link re-connecting
    home.run_until(sec(170))
    assert home.intents == []


def test_an_offline_status_that_holds_raises_the_offline_priority_after_the_debounce() -> None:
    home = Home()
    home.beat(sec(0))
    home.status(online=False, at=sec(30))
    home.run_until(sec(89.999))
    assert home.messages == []
    home.run_until(sec(90))
    [opened] = home.messages
    assert (opened.alert.priority, opened.alert.detail["reason"]) == (Priority.HIGH, "status offline")
    home.status(online=True, at=sec(400))
    assert home.messages[-1].reason is ChangeReason.CANCELLED  # heard again: ended at once


def test_the_silence_deadline_still_counts_while_an_offline_status_is_debounced() -> None:
    home = Home()
    home.beat(sec(0))
    home.status(online=False, at=sec(170))  # the Last Will comes late, 10 s before 3 × 60 s
    home.run_until(sec(180))
    [opened] = home.messages
    assert (opened.alert.opened_at, opened.alert.detail["reason"]) == (sec(180), "silent")


def test_flapping_that_ends_offline_raises_the_same_alert_to_high_once() -> None:
    home = Home()
    home.beat(sec(0))
    for n in range(20):
        home.status(online=n % 2 == 1, at=sec(1 + n))
    home.run_until(sec(3600))  # it stayed offline after its 10th offline status, at 19 s
    [alert] = {m.alert.alert_id for m in home.messages}
    assert [m.reason for m in home.messages] == [ChangeReason.OPENED, ChangeReason.ATTACHED]
    assert [m.alert.priority for m in home.messages] == [Priority.MEDIUM, Priority.HIGH]
    assert home.alerts.get(alert).state is AlertState.OPEN


def test_slow_flapping_outlasting_the_debounce_is_not_one_alert_per_flap() -> None:
    """Offline 70 s, online 10 s, for an hour: 45 outages, each longer than the debounce."""
    home = Home()
    home.beat(sec(0))
    t = 10.0
    while t < 3600:
        home.status(online=False, at=sec(t))
        home.status(online=True, at=sec(t + 70))
        t += 80
    opened = home.opened()
    assert len(opened) <= 2, f"{len(opened)} alerts"
    assert len(home.messages) <= 4


def test_a_flapping_devices_alert_ends_only_when_it_has_been_stable_for_ten_minutes() -> None:
    home = Home()
    home.beat(sec(0))
    for n in range(10):
        home.status(online=n % 2 == 1, at=sec(1 + n))  # last offline at 9 s, online at 10 s
    [opened] = home.messages
    for t in range(60, 601, 60):  # heard every minute; at 600 s, 9 min 51 s after the last offline
        home.beat(sec(t))
    assert len(home.messages) == 1
    home.beat(sec(609))
    assert home.messages[-1].reason is ChangeReason.CANCELLED
    assert home.messages[-1].alert.alert_id == opened.alert.alert_id


def test_a_retained_last_will_delivered_again_is_not_a_flap() -> None:
    home = Home()
    home.beat(sec(0))
    for n in range(10):  # the same offline, re-delivered (retained) by reconnecting clients
        home.status(online=False, at=sec(1 + n))
    home.run_until(sec(61))
    [opened] = home.messages
    assert opened.alert.detail["reason"] == "status offline"
    assert home.proc.state_of("r-17").devices.flaps[UNIT].statuses == 1


def test_the_debounce_is_a_setting() -> None:
    home = Home(offline_debounce=timedelta(seconds=5))
    home.beat(sec(0))
    home.status(online=False, at=sec(10))
    home.run_until(sec(15))
    [opened] = home.messages
    assert opened.alert.opened_at == sec(15)


def test_a_pending_debounce_survives_a_restart() -> None:
    home = Home()
    home.beat(sec(0))
    home.status(online=False, at=sec(10))
    snapshot = home.proc.export_state()
    after = Home()
    after.proc.restore_state(snapshot)
    after.run_until(sec(70))
    [intent] = after.intents
    assert (intent.action, intent.detail["reason"]) == (IntentAction.OPEN, "status offline")


def test_other_device_kinds_flapping_are_low() -> None:
    home = Home()
    home.beat(sec(0), device="d-door")
    for n in range(10):
        home.status(online=n % 2 == 1, at=sec(1 + n), device="d-door")
    [opened] = home.messages
    assert (opened.alert.device_id, opened.alert.priority) == ("d-door", Priority.LOW)
