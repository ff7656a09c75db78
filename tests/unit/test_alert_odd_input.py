"""The alert service under odd input, as staff would notice it (issue 13): a late or
stale `alarm.cancel` must not end an alarm it was not meant for, and a device whose
event counter reset must not lose its new alarms — while a re-processed event still
makes nothing. Pure: injected time, no broker, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts import AlertService, ChangeReason, Timeouts, alert_id_for
from trygg.contract import AlertKind, AlertState, Event, EventType, Priority, rekeyed_id
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry, validate_registry

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
ALARM_UNIT = "d-1-alarm"
KIND = {"alarm.button": AlertKind.ALARM, "fall.detected": AlertKind.FALL}


def registry() -> Registry:
    return validate_registry({
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [{"id": "r-1", "name": "Kari", "team": "east"}],
    })


def service() -> AlertService:
    return AlertService(registry(), Timeouts())


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def event(event_id: str, kind: str, ts: datetime, received: datetime | None = None,
          device: str = ALARM_UNIT) -> Event:
    return Event(device, event_id, EventType(kind), ts, received or ts, {}, resident_id="r-1")


def trigger(ev: Event) -> AlertIntent:
    """The OPEN intent the rules make of an alarm or fall event (rules_alarm)."""
    return AlertIntent(IntentAction.OPEN, "r-1", KIND[ev.type.value], Priority.HIGH, ev.received_at,
                       (ev.device_id, ev.event_id), ev)


def cancel(ev: Event) -> list[AlertIntent]:
    """The CANCEL intents the rules make of an `alarm.cancel` (rules_alarm)."""
    return [AlertIntent(IntentAction.CANCEL, "r-1", kind, Priority.HIGH, ev.received_at,
                        (ev.device_id, ev.event_id), ev, only_if_open=True)
            for kind in (AlertKind.ALARM, AlertKind.FALL)]


# ---------------------------------------------------------------- alarm.cancel and time


def test_a_cancel_pressed_before_the_alarm_but_arriving_after_it_leaves_the_alarm_open() -> None:
    svc = service()
    [opened] = svc.apply([trigger(event("e-2", "alarm.button", sec(10)))])
    # pressed at 0 s (a mistaken earlier press cancelled), delivered late at 20 s
    late = event("e-1", "alarm.cancel", sec(0), received=sec(20))
    assert svc.apply(cancel(late)) == []
    assert svc.get(opened.alert.alert_id).state is AlertState.OPEN


def test_a_cancel_inside_the_window_cancels_as_before() -> None:
    svc = service()
    [opened] = svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    [change] = svc.apply(cancel(event("e-2", "alarm.cancel", sec(25 * 60))))
    assert change.reason is ChangeReason.CANCELLED
    assert change.alert.alert_id == opened.alert.alert_id
    assert change.wire["state"] == "cancelled"


def test_a_cancel_at_the_same_instant_as_the_alarm_cancels() -> None:
    svc = service()
    svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    assert len(svc.apply(cancel(event("e-2", "alarm.cancel", sec(0))))) == 1


def test_a_cancel_an_hour_after_a_fall_leaves_the_fall_open() -> None:
    svc = service()
    [fall] = svc.apply([trigger(event("f-1", "fall.detected", sec(0), device="d-1-fall"))])
    assert svc.apply(cancel(event("e-9", "alarm.cancel", sec(3600)))) == []
    assert svc.get(fall.alert.alert_id).state is AlertState.OPEN


def test_the_window_ends_at_thirty_minutes() -> None:
    inside, outside = service(), service()
    for svc in (inside, outside):
        svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    assert len(inside.apply(cancel(event("c-1", "alarm.cancel", sec(30 * 60))))) == 1
    assert outside.apply(cancel(event("c-1", "alarm.cancel", sec(30 * 60 + 0.001)))) == []


def test_a_cancel_does_not_end_an_alarm_with_a_press_after_it() -> None:
    svc = service()
    [opened] = svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    svc.apply([trigger(event("e-3", "alarm.button", sec(60)))])  # pressed again, attaches
    assert svc.apply(cancel(event("e-2", "alarm.cancel", sec(30), received=sec(61)))) == []
    assert svc.get(opened.alert.alert_id).state is AlertState.OPEN


def test_a_device_clock_ahead_does_not_stretch_a_cancel_forward() -> None:
    """The cancel counts at its device time but never later than it was received: a
    cancel stamped 40 minutes ahead, received 5 minutes after the alarm, cancels it."""
    svc = service()
    svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    fast = event("e-2", "alarm.cancel", sec(45 * 60), received=sec(5 * 60))
    assert len(svc.apply(cancel(fast))) == 1


# ---------------------------------------------------------------- re-used event ids


def test_a_reset_device_re_using_an_id_gets_a_new_alert() -> None:
    svc = service()
    first = event("e-1", "alarm.button", T0 - timedelta(days=2))
    [opened] = svc.apply([trigger(first)])
    svc.resolve(opened.alert.alert_id, "ola", T0 - timedelta(days=2) + timedelta(minutes=20))
    again = event("e-1", "alarm.button", sec(0))  # counter reset: the same id, a new press
    [change] = svc.apply([trigger(again)])
    assert change.reason is ChangeReason.OPENED
    new_id = rekeyed_id("e-1", "alarm.button", sec(0))
    assert change.alert.alert_id == alert_id_for(AlertKind.ALARM, (ALARM_UNIT, new_id))
    assert change.wire["trigger"]["event_id"] == new_id  # the id it is stored under
    assert change.wire["trigger"]["ts"] == sec(0).isoformat()
    assert svc.apply([trigger(again)]) == [], "the re-keyed press processed again alerted twice"
    assert svc.apply([trigger(first)]) == [], "the first press processed again alerted twice"


def test_a_reset_device_re_using_an_id_while_the_alarm_is_open_is_shown_at_once() -> None:
    svc = service()
    [opened] = svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    svc.apply([trigger(event("e-2", "alarm.button", sec(10)))])
    # the unit restarts and counts from e-1 again; both presses are new
    for n, again in enumerate([event("e-1", "alarm.button", sec(40)), event("e-2", "alarm.button", sec(50))]):
        [change] = svc.apply([trigger(again)])
        assert change.reason is ChangeReason.ATTACHED
        assert change.alert.alert_id == opened.alert.alert_id
        assert change.wire["event_count"] == 3 + n
        assert svc.apply([trigger(again)]) == []


def test_after_a_restart_a_reused_id_still_makes_a_new_alert_and_a_resend_nothing() -> None:
    before = service()
    first = event("e-1", "alarm.button", sec(0))
    [opened] = before.apply([trigger(first)])
    before.resolve(opened.alert.alert_id, "ola", sec(600))
    after = service()  # the gateway's memory of recent ids is gone too
    after.restore([before.get(opened.alert.alert_id)], sec(3600))
    assert after.apply([trigger(first)]) == [], "a re-delivered old press alerted again"
    again = event("e-1", "alarm.button", sec(3700))
    [change] = after.apply([trigger(again)])
    assert change.reason is ChangeReason.OPENED and change.alert.alert_id != opened.alert.alert_id
    assert after.apply([trigger(again)]) == []


def test_the_gateways_rekeyed_event_and_the_services_are_the_same_alert() -> None:
    """Before a restart the gateway re-keys the reset device's press; after it, a
    re-delivered copy comes with the device's id and the service re-keys it: the same
    alert, never a second."""
    svc = service()
    [opened] = svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    svc.apply([trigger(event("e-2", "alarm.button", sec(5)))])  # attaches
    svc.resolve(opened.alert.alert_id, "ola", sec(600))
    # the unit restarts its counter: e-1 and e-2 again, re-keyed by the gateway
    by_gateway = event(rekeyed_id("e-1", "alarm.button", sec(700)), "alarm.button", sec(700))
    [change] = svc.apply([trigger(by_gateway)])
    assert change.reason is ChangeReason.OPENED
    [more] = svc.apply([trigger(event(rekeyed_id("e-2", "alarm.button", sec(710)), "alarm.button", sec(710)))])
    assert more.reason is ChangeReason.ATTACHED
    # Trygg restarts; the broker delivers both presses again with the device's ids
    assert svc.apply([trigger(event("e-1", "alarm.button", sec(700)))]) == []
    assert svc.apply([trigger(event("e-2", "alarm.button", sec(710)))]) == []
    assert svc.get(change.alert.alert_id).event_count == 2


def test_a_reused_id_of_an_attached_press_is_told_apart_from_it() -> None:
    svc = service()
    [opened] = svc.apply([trigger(event("e-1", "alarm.button", sec(0)))])
    svc.apply([trigger(event("e-2", "alarm.button", sec(5)))])  # attaches
    new_e2 = event("e-2", "alarm.button", sec(40))  # the counter reset while the alarm is open
    [change] = svc.apply([trigger(new_e2)])
    assert (change.reason, change.wire["event_count"]) == (ChangeReason.ATTACHED, 3)
    assert change.wire["last_event"]["event_id"] == rekeyed_id("e-2", "alarm.button", sec(40))
    assert svc.apply([trigger(new_e2)]) == []
    assert svc.apply([trigger(event("e-2", "alarm.button", sec(5)))]) == []
    assert svc.get(opened.alert.alert_id).event_count == 3


def test_a_true_resend_makes_nothing() -> None:
    svc = service()
    press = event("e-1", "alarm.button", sec(0))
    [opened] = svc.apply([trigger(press)])
    copy = event("e-1", "alarm.button", sec(0).astimezone(datetime.fromisoformat("2026-11-22T15:00+01:00").tzinfo),
                 received=sec(2))
    assert svc.apply([trigger(copy)]) == []
    assert svc.get(opened.alert.alert_id).event_count == 1
    assert len(svc) == 1
