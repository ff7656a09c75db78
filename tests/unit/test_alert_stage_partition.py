"""The alert stage serving one partition of a cluster (composition/cluster_rules.py):
changes given elsewhere take part in its restore (the newer version of an alert wins, and
its escalation is re-armed), and every change, but no republish, goes to `mirror`. No
broker (its publisher waits for one), no database."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alerts import AlertConfig, AlertStage, Change, ChangeReason
from alerts.journal import Item
from tests.helpers import alert_doc, small_registry
from trygg.contract import AlertKind, AlertState, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def press(resident: str = "r-1", device: str = "d-1-alarm") -> AlertIntent:
    now = datetime.now(UTC)
    event = Event(device, "e-1", EventType.ALARM_BUTTON, now, now, {}, resident)
    return AlertIntent(IntentAction.OPEN, resident, AlertKind.ALARM, Priority.HIGH, now, (device, "e-1"), event)


def test_changes_are_mirrored_and_given_changes_restored() -> None:
    async def scenario() -> None:
        mirrored: list[Item] = []
        fall = alert_doc("a-fall", "r-1", "east")
        overdue = replace(fall, escalated_at=datetime.now(UTC) - timedelta(minutes=5), version=3)
        config = AlertConfig(broker_port=closed_port(), escalate_high_s=60)
        stage = AlertStage(small_registry(), config, mirror=mirrored.append,
                           restored=[(fall, ()), (overdue, ())])
        task = asyncio.create_task(stage.run())
        await asyncio.wait_for(stage.wait_ready(), 5)
        try:
            taken = stage.get("a-fall")
            assert taken.version >= 3  # the newer of the two, its overdue escalation re-armed
            for _ in range(100):
                if stage.get("a-fall").escalation_level == 1:
                    break
                await asyncio.sleep(0.01)
            assert stage.get("a-fall").teams == ("east", "alarm-centre")
            stage.on_intents([press()])
            opened = next(a for a in stage.active() if a.kind is AlertKind.ALARM)
            stage.acknowledge(opened.alert_id, "sykepleier-1")
            changes = [(alert.alert_id, alert.state, alert.escalation_level) for alert, _ in mirrored]
            assert changes == [("a-fall", AlertState.OPEN, 1), (opened.alert_id, AlertState.OPEN, 0),
                               (opened.alert_id, AlertState.ACKNOWLEDGED, 0)]
            assert [len(steps) for _, steps in mirrored] == [1, 1, 1]  # each with its transitions
            stage._deliver([Change(ChangeReason.REPUBLISHED, stage.get("a-fall"))], 0.0)  # as after a reconnect
            assert len(mirrored) == 3
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
