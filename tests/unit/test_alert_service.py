"""The alert lifecycle and flood control, as staff would notice them: one alert per
condition, every button press shown, cancels that respect who already took it, and
clear refusals of impossible actions. Pure: injected time, no broker, no database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts import (
    RESIDENT,
    SYSTEM,
    AlertNotFound,
    AlertService,
    ChangeReason,
    IllegalTransition,
    Timeouts,
    alert_id_for,
)
from tests.alert_intents import T0, cancel_intent, event, open_intent, registry
from trygg.contract import AlertKind, AlertState


def service() -> AlertService:
    return AlertService(registry(), Timeouts())


def test_alert_id_is_derived_from_kind_and_source_only() -> None:
    a = alert_id_for(AlertKind.FALL, ("d-1-fall", "e-000123"))
    assert a == alert_id_for("fall", ("d-1-fall", "e-000123"))
    assert a.startswith("a-") and len(a) == 22
    assert a != alert_id_for(AlertKind.ALARM, ("d-1-fall", "e-000123"))
    assert a != alert_id_for(AlertKind.FALL, ("d-1-fall", "e-000124"))


def test_an_open_intent_raises_an_alert_with_the_wire_fields_of_the_contract() -> None:
    svc = service()
    intent = open_intent(AlertKind.FALL, device="d-1-fall")
    [change] = svc.apply([intent])
    wire = change.wire
    assert change.reason is ChangeReason.OPENED
    assert list(wire) == ["alert_id", "resident_id", "team_id", "kind", "priority", "state", "opened_at",
                          "updated_at", "event_count", "trigger", "last_event", "location",
                          "escalation_level", "acknowledged_by", "resolved_by", "note"]
    assert wire["alert_id"] == alert_id_for(AlertKind.FALL, intent.source)
    assert (wire["resident_id"], wire["team_id"], wire["kind"], wire["priority"], wire["state"]) == (
        "r-1", "east", "fall", "high", "open")
    assert wire["opened_at"] == "2026-11-22T14:00:00+00:00"
    assert wire["trigger"] == wire["last_event"] == intent.event.ref()  # type: ignore[union-attr]
    assert (wire["event_count"], wire["escalation_level"], wire["location"]) == (1, 0, None)
    assert change.teams == ("east",)
    assert [(t.from_state, t.to_state, t.actor) for t in change.transitions] == [(None, AlertState.OPEN, SYSTEM)]


def test_the_same_event_processed_again_changes_and_publishes_nothing() -> None:
    svc = service()
    intent = open_intent(AlertKind.SMOKE, device="d-1-smoke")
    [first] = svc.apply([intent])
    assert svc.apply([intent]) == []
    assert svc.get(first.alert.alert_id).event_count == 1
    assert len(svc) == 1


def test_further_triggers_attach_to_the_unresolved_alert_and_are_republished() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.FALL, device="d-1-fall")])
    later = open_intent(AlertKind.FALL, T0 + timedelta(seconds=20), device="d-1-fall")
    [attached] = svc.apply([later])
    assert attached.reason is ChangeReason.ATTACHED
    assert attached.alert.alert_id == opened.alert.alert_id
    assert attached.wire["event_count"] == 2
    assert attached.wire["updated_at"] == "2026-11-22T14:00:20+00:00"
    assert attached.wire["trigger"] == opened.wire["trigger"]
    assert attached.wire["last_event"]["event_id"] == later.source[1]
    assert attached.transitions == ()
    # the attached event processed again: counted once
    assert svc.apply([later]) == []
    assert svc.get(opened.alert.alert_id).event_count == 2


def test_every_new_button_press_is_republished_at_once_even_when_acknowledged() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.ALARM)])
    alert_id = opened.alert.alert_id
    svc.acknowledge(alert_id, "ola", T0 + timedelta(seconds=5))
    presses = [open_intent(AlertKind.ALARM, T0 + timedelta(seconds=10 + i)) for i in range(3)]
    changes = [svc.apply([p]) for p in presses]
    assert [len(c) for c in changes] == [1, 1, 1]
    assert [c[0].wire["event_count"] for c in changes] == [2, 3, 4]
    assert all(c[0].alert.alert_id == alert_id for c in changes)
    assert all(c[0].wire["state"] == "acknowledged" for c in changes)


def test_different_residents_and_kinds_are_different_alerts() -> None:
    svc = service()
    changes = svc.apply([open_intent(AlertKind.ALARM), open_intent(AlertKind.FALL, device="d-1-fall"),
                         open_intent(AlertKind.ALARM, resident="r-2", device="d-2-alarm")])
    assert [c.reason for c in changes] == [ChangeReason.OPENED] * 3
    assert len({c.alert.alert_id for c in changes}) == 3


def test_two_silent_devices_are_two_alerts_and_one_coming_back_cancels_only_its_own() -> None:
    svc = service()
    a = open_intent(AlertKind.DEVICE_OFFLINE, device="d-1-fall", device_id="d-1-fall", with_event=False)
    b = open_intent(AlertKind.DEVICE_OFFLINE, device="d-1-door", device_id="d-1-door", with_event=False)
    [alert_a] = svc.apply([a])
    [alert_b] = svc.apply([b])
    assert alert_a.alert.alert_id != alert_b.alert.alert_id
    assert alert_a.wire["trigger"]["device_id"] == "d-1-fall"
    assert alert_a.wire["trigger"]["type"] is None  # raised by a timer, not by an event
    [cancelled] = svc.apply([cancel_intent(AlertKind.DEVICE_OFFLINE, T0 + timedelta(minutes=1), a.source,
                                           device_id="d-1-fall")])
    assert cancelled.alert.alert_id == alert_a.alert.alert_id
    assert cancelled.wire["state"] == "cancelled"
    assert [x.alert_id for x in svc.active()] == [alert_b.alert.alert_id]


def test_alarm_cancel_before_acknowledgement_cancels_as_the_resident() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.ALARM)])
    cancel_ev = event("d-1-alarm", "alarm.cancel", T0 + timedelta(seconds=8))
    [change] = svc.apply([cancel_intent(AlertKind.ALARM, T0 + timedelta(seconds=8), ("d-1-alarm", cancel_ev.event_id),
                                        only_if_open=True, ev=cancel_ev)])
    assert change.reason is ChangeReason.CANCELLED and change.final
    assert change.wire["state"] == "cancelled"
    assert [(t.from_state, t.to_state, t.actor) for t in change.transitions] == [
        (AlertState.OPEN, AlertState.CANCELLED, RESIDENT)]
    assert len(svc) == 0
    # a new press afterwards is a new alert
    [again] = svc.apply([open_intent(AlertKind.ALARM, T0 + timedelta(seconds=30))])
    assert again.reason is ChangeReason.OPENED and again.alert.alert_id != opened.alert.alert_id


def test_alarm_cancel_after_acknowledgement_leaves_the_alert_acknowledged() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.ALARM)])
    svc.acknowledge(opened.alert.alert_id, "ola", T0 + timedelta(seconds=5))
    cancel_ev = event("d-1-alarm", "alarm.cancel", T0 + timedelta(seconds=8))
    changes = svc.apply([cancel_intent(AlertKind.ALARM, T0 + timedelta(seconds=8), ("d-1-alarm", cancel_ev.event_id),
                                       only_if_open=True, ev=cancel_ev)])
    assert changes == []
    assert svc.get(opened.alert.alert_id).state is AlertState.ACKNOWLEDGED


def test_a_condition_that_ends_cancels_even_an_acknowledged_alert() -> None:
    svc = service()
    intent = open_intent(AlertKind.DOOR_OPEN, device="d-1-door", with_event=False)
    [opened] = svc.apply([intent])
    svc.acknowledge(opened.alert.alert_id, "ola", T0 + timedelta(seconds=5))
    [change] = svc.apply([cancel_intent(AlertKind.DOOR_OPEN, T0 + timedelta(minutes=2), intent.source)])
    assert change.wire["state"] == "cancelled"
    assert change.transitions[0].actor == SYSTEM


def test_staff_acknowledge_then_resolve_with_a_note() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.FALL, device="d-1-fall")])
    alert_id = opened.alert.alert_id
    ack = svc.acknowledge(alert_id, "ola", T0 + timedelta(seconds=40))
    assert (ack.wire["state"], ack.wire["acknowledged_by"]) == ("acknowledged", "ola")
    done = svc.resolve(alert_id, "ola", T0 + timedelta(minutes=12), "Helped her up, no injury")
    assert done.final
    assert (done.wire["state"], done.wire["resolved_by"], done.wire["note"]) == (
        "resolved", "ola", "Helped her up, no injury")
    alert = svc.get(alert_id)
    assert alert.acknowledged_at == T0 + timedelta(seconds=40)
    assert alert.resolved_at == T0 + timedelta(minutes=12)
    assert len(svc) == 0


def test_resolving_straight_from_open_records_the_implicit_acknowledgement() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.ALARM)])
    at = T0 + timedelta(minutes=3)
    done = svc.resolve(opened.alert.alert_id, "kari.s", at, "On site")
    assert [(t.from_state, t.to_state, t.actor, t.at) for t in done.transitions] == [
        (AlertState.OPEN, AlertState.ACKNOWLEDGED, "kari.s", at),
        (AlertState.ACKNOWLEDGED, AlertState.RESOLVED, "kari.s", at),
    ]
    assert done.wire["acknowledged_by"] == "kari.s"
    assert [t.seq for t in done.transitions] == [1, 2]  # after the opening, 0


@pytest.mark.parametrize(("steps", "action", "from_state", "to_state"), [
    (["resolve"], "acknowledge", AlertState.RESOLVED, AlertState.ACKNOWLEDGED),
    (["resolve"], "resolve", AlertState.RESOLVED, AlertState.RESOLVED),
    (["cancel"], "resolve", AlertState.CANCELLED, AlertState.RESOLVED),
    (["cancel"], "acknowledge", AlertState.CANCELLED, AlertState.ACKNOWLEDGED),
    (["acknowledge"], "acknowledge", AlertState.ACKNOWLEDGED, AlertState.ACKNOWLEDGED),
])
def test_illegal_transitions_are_refused_with_both_states(steps: list[str], action: str,
                                                          from_state: AlertState, to_state: AlertState) -> None:
    svc = service()
    intent = open_intent(AlertKind.ALARM)
    [opened] = svc.apply([intent])
    alert_id = opened.alert.alert_id
    at = T0 + timedelta(seconds=10)
    for step in steps:
        if step == "cancel":
            svc.apply([cancel_intent(AlertKind.ALARM, at, intent.source)])
        else:
            getattr(svc, step)(alert_id, "ola", at)
    before = svc.get(alert_id)
    with pytest.raises(IllegalTransition) as err:
        getattr(svc, action)(alert_id, "per", at + timedelta(seconds=1))
    assert (err.value.alert_id, err.value.from_state, err.value.to_state) == (alert_id, from_state, to_state)
    assert svc.get(alert_id) == before  # nothing changed


def test_unknown_alert_is_not_found() -> None:
    with pytest.raises(AlertNotFound) as err:
        service().acknowledge("a-nope", "ola", T0)
    assert err.value.alert_id == "a-nope"


def test_an_event_of_an_alert_already_resolved_does_not_raise_it_again() -> None:
    svc = service()
    intent = open_intent(AlertKind.FALL, device="d-1-fall")
    [opened] = svc.apply([intent])
    svc.resolve(opened.alert.alert_id, "ola", T0 + timedelta(minutes=1))
    assert svc.apply([intent]) == []


def test_a_resident_missing_from_the_registry_still_gets_an_alert() -> None:
    [change] = service().apply([open_intent(AlertKind.ALARM, resident="r-gone", device="d-x")])
    assert change.wire["team_id"] == "unassigned"


def test_transitions_are_numbered_per_alert_and_nothing_is_lost() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.SMOKE, device="d-1-smoke")])
    alert_id = opened.alert.alert_id
    escalated = svc.due(T0 + timedelta(seconds=30))
    ack = svc.acknowledge(alert_id, "ola", T0 + timedelta(seconds=45))
    done = svc.resolve(alert_id, "ola", T0 + timedelta(minutes=5), "False alarm: toast")
    trail = [t for c in [opened, *escalated, ack, done] for t in c.transitions]
    assert [t.seq for t in trail] == [0, 1, 2, 3]
    assert [(t.from_state, t.to_state) for t in trail] == [
        (None, AlertState.OPEN), (AlertState.OPEN, AlertState.OPEN),
        (AlertState.OPEN, AlertState.ACKNOWLEDGED), (AlertState.ACKNOWLEDGED, AlertState.RESOLVED)]
    assert trail[1].note == "escalated to alarm-centre (level 1)"
    versions = [c.alert.version for c in [opened, *escalated, ack, done]]
    assert versions == sorted(set(versions))
