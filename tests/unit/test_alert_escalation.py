"""Escalation: an alert nobody takes climbs the chain of teams and keeps reminding at the
end; acknowledging anywhere stops it; low priority never escalates; a restart re-arms the
timers without raising anything twice. Injected time, nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts import (
    AlertService,
    ChangeReason,
    EscalationTimers,
    IllegalTransition,
    Timeouts,
    next_team,
)
from tests.alert_intents import cancel_intent, open_intent
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState
from trygg.registry import Registry, validate_registry

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def registry() -> Registry:
    return validate_registry({
        "teams": [{"id": "east", "name": "Øst", "escalate_to": "night"},
                  {"id": "night", "name": "Natt", "escalate_to": "alarm-centre"},
                  {"id": "alarm-centre", "name": "Alarmsentralen"},
                  {"id": "west", "name": "Vest"}],
        "residents": [{"id": "r-1", "name": "Kari", "team": "east"},
                      {"id": "r-2", "name": "Ola", "team": "west"}],
    })


def service() -> AlertService:
    return AlertService(registry(), Timeouts(critical_s=30, high_s=60, medium_s=300))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_unacknowledged_alert_climbs_the_chain_then_reminds_at_the_end() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.ALARM, T0)])  # high: 60 s
    alert_id = opened.alert.alert_id
    assert svc.next_deadline() == at(60)
    assert svc.due(at(59.9)) == []

    steps = []
    for t in (60, 120, 180, 240):
        [change] = svc.due(at(t))
        steps.append(change)
        assert change.alert.alert_id == alert_id
        assert svc.next_deadline() == at(t + 60)

    assert [c.reason for c in steps] == [ChangeReason.ESCALATED, ChangeReason.ESCALATED,
                                         ChangeReason.REMINDED, ChangeReason.REMINDED]
    assert [c.wire["escalation_level"] for c in steps] == [1, 2, 3, 4]
    assert [c.teams for c in steps] == [("east", "night"), ("east", "night", "alarm-centre"),
                                        ("east", "night", "alarm-centre"), ("east", "night", "alarm-centre")]
    assert all(c.wire["team_id"] == "east" and c.wire["state"] == "open" for c in steps)
    assert steps[2].transitions[0].note == "reminder to east, night, alarm-centre (level 3)"


def test_critical_escalates_after_30_s_and_medium_after_5_min() -> None:
    svc = service()
    [smoke] = svc.apply([open_intent(AlertKind.SMOKE, T0, device="d-1-smoke")])
    [door] = svc.apply([open_intent(AlertKind.DOOR_OPEN, T0, device="d-1-door", with_event=False)])
    assert svc.due(at(29.9)) == []
    assert [c.alert.alert_id for c in svc.due(at(30))] == [smoke.alert.alert_id]
    svc.acknowledge(smoke.alert.alert_id, "ola", at(31))
    assert svc.due(at(299.9)) == []
    [step] = svc.due(at(300))
    assert (step.alert.alert_id, step.wire["escalation_level"]) == (door.alert.alert_id, 1)


def test_low_priority_never_escalates() -> None:
    svc = service()
    svc.apply([open_intent(AlertKind.BATTERY_LOW, T0, device="d-1-fall", device_id="d-1-fall")])
    assert svc.next_deadline() is None
    assert svc.due(at(86_400)) == []


def test_a_team_without_escalate_to_gets_reminders() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.FALL, T0, resident="r-2", device="d-2-fall")])
    [first] = svc.due(at(60))
    assert first.reason is ChangeReason.REMINDED
    assert (first.teams, first.wire["escalation_level"]) == (("west",), 1)
    assert opened.alert.alert_id == first.alert.alert_id


def test_acknowledging_anywhere_stops_escalation_and_resolving_reaches_every_copy() -> None:
    svc = service()
    [opened] = svc.apply([open_intent(AlertKind.ALARM, T0)])
    alert_id = opened.alert.alert_id
    svc.due(at(60))
    svc.due(at(120))
    ack = svc.acknowledge(alert_id, "operator-1", at(130))
    assert ack.teams == ("east", "night", "alarm-centre")
    assert svc.next_deadline() is None
    assert svc.due(at(10_000)) == []
    done = svc.resolve(alert_id, "ola", at(900), "Visited")
    assert done.final and done.teams == ("east", "night", "alarm-centre")
    assert done.wire["escalation_level"] == 2


def test_cancel_stops_escalation() -> None:
    svc = service()
    intent = open_intent(AlertKind.DOOR_OPEN, T0, device="d-1-door", with_event=False)
    svc.apply([intent])
    svc.apply([cancel_intent(AlertKind.DOOR_OPEN, at(10), intent.source)])
    assert svc.next_deadline() is None


def test_restore_rearms_overdue_timers_now_and_others_from_the_last_step() -> None:
    before = service()
    [overdue] = before.apply([open_intent(AlertKind.ALARM, T0)])
    [smoke] = before.apply([open_intent(AlertKind.SMOKE, at(100), device="d-1-smoke")])
    [taken] = before.apply([open_intent(AlertKind.FALL, at(100), device="d-1-fall")])
    [escalated] = before.due(at(60))  # the alarm reached "night" at 60 s
    assert escalated.alert.alert_id == overdue.alert.alert_id
    before.acknowledge(taken.alert.alert_id, "ola", at(110))
    stored = [a.record() for a in before.active()]  # what the database holds

    after = service()
    restored = after.restore([Alert.from_record(r) for r in stored], now=at(125))
    assert {a.alert_id for a in restored} == {overdue.alert.alert_id, smoke.alert.alert_id, taken.alert.alert_id}
    # the alarm's next step was due at 120 s (last step at 60 s + 60 s): overdue, so now
    assert after.next_deadline() == at(125)
    [step] = after.due(at(125))
    assert (step.alert.alert_id, step.wire["escalation_level"]) == (overdue.alert.alert_id, 2)
    assert step.teams == ("east", "night", "alarm-centre")
    # the smoke alert's first step is still 30 s after it opened; the acknowledged one has none
    assert after.next_deadline() == at(130)
    assert [c.alert.alert_id for c in after.due(at(130))] == [smoke.alert.alert_id]
    assert after.get(taken.alert.alert_id).state is AlertState.ACKNOWLEDGED


def test_restore_does_not_duplicate_alerts_and_recognises_re_processed_events() -> None:
    before = service()
    first = open_intent(AlertKind.ALARM, T0)
    [opened] = before.apply([first])
    second = open_intent(AlertKind.ALARM, at(5))
    before.apply([second])
    stored = [a.record() for a in before.active()]

    after = service()
    after.restore([Alert.from_record(r) for r in stored], now=at(10))
    after.restore([Alert.from_record(r) for r in stored], now=at(11))  # twice: harmless
    assert len(after) == 1
    assert after.apply([first]) == []  # the triggering event again
    assert after.apply([second]) == []  # the attached one again
    assert after.get(opened.alert.alert_id).event_count == 2
    [attached] = after.apply([open_intent(AlertKind.ALARM, at(20))])  # a genuinely new press
    assert (attached.reason, attached.wire["event_count"]) == (ChangeReason.ATTACHED, 3)
    # transitions continue their numbering after a restart
    ack = after.acknowledge(opened.alert.alert_id, "ola", at(30))
    assert ack.transitions[0].seq == 1


def test_restored_closed_alerts_answer_late_actions_with_illegal_transition() -> None:
    before = service()
    [opened] = before.apply([open_intent(AlertKind.ALARM, T0)])
    done = before.resolve(opened.alert.alert_id, "ola", at(5))
    after = service()
    after.restore([done.alert], now=at(10))
    assert len(after) == 0
    with pytest.raises(IllegalTransition):
        after.acknowledge(opened.alert.alert_id, "per", at(11))


def test_timer_heap_replaces_and_forgets_deadlines() -> None:
    timers = EscalationTimers()
    timers.arm("a", at(10))
    timers.arm("b", at(5))
    timers.arm("a", at(3))  # re-armed earlier
    timers.arm("c", at(7))
    timers.disarm("c")
    assert timers.next_deadline() == at(3)
    assert timers.pop_due(at(6)) == ["a", "b"]
    assert timers.pop_due(at(100)) == []
    assert timers.next_deadline() is None and len(timers) == 0


def test_next_team_follows_the_chain_and_stops_at_loops() -> None:
    teams = {t.id: t for t in registry().teams}
    assert next_team(teams, ("east",)) == "night"
    assert next_team(teams, ("east", "night")) == "alarm-centre"
    assert next_team(teams, ("east", "night", "alarm-centre")) is None
    assert next_team(teams, ("alarm-centre", "east", "night")) is None  # would loop
