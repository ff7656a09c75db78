"""The stages as separate processes (`trygg gateway`, `trygg processors`, `trygg alerts`)
give staff the same alert as `trygg up`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from storage import save_registry
from tests.fix_alerts import Handheld
from tests.fix_db import scalar
from tests.fix_mqtt import MosquittoInstance, Publisher
from tests.helpers import event, small_registry, wait_for
from trygg.pipeline import internal_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def three_processes(mosquitto: MosquittoInstance, database: str, prefix: str,
                    tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    with psycopg.connect(database) as conn:
        save_registry(conn, small_registry(), actor="test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_MQTT_URL": mosquitto.url, "TRYGG_DATABASE_URL": database, "TRYGG_MQTT_PREFIX": prefix,
                "TRYGG_MQTT_CLIENT_ID": f"s{prefix.split('/')[0]}", "TRYGG_ESCALATE_HIGH_S": "1",
                "TRYGG_LOG_LEVEL": "warning"})
    procs, logs = [], []
    for stage in ("gateway", "processors", "alerts"):
        logs.append((tmp_path / f"{stage}.log").open("wb"))
        procs.append(subprocess.Popen([sys.executable, "-m", "trygg", stage],
                                      env={**env, "TRYGG_DATA_DIR": str(tmp_path / stage)},
                                      stdout=logs[-1], stderr=logs[-1]))
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(30)
    for log in logs:
        log.close()


def test_three_processes_raise_store_and_escalate_an_alarm(
    three_processes: list[subprocess.Popen[bytes]], mosquitto: MosquittoInstance, publisher: Publisher,
    database: str, prefix: str,
) -> None:
    staff = Handheld(mosquitto, f"{prefix}/teams/+/alerts/+")
    try:
        # What a stray client could put on the internal topics is skipped, not fatal.
        garbage = [b"not json", b"[]", b'{"resident_id": "r-1", "kind": "no-such-kind"}', b"{}"]
        publisher.publish_all([(internal_topic(prefix, topic), payload)
                               for topic in ("alert-closed", "intents") for payload in garbage])
        # Each process subscribes in its own time: press until the first alert arrives.
        presses = iter(range(100))
        alerts = wait_for(lambda: publisher.publish_all([(f"{prefix}/devices/d-1-alarm/events",
                                                          event(f"p-{next(presses)}", "alarm.button"))])
                          or staff.alerts(), bool, timeout=30, interval=0.5)
        assert alerts, "no alert from the three processes"
        assert alerts[0]["kind"] == "alarm" and alerts[0]["team_id"] == "east"
        escalated = wait_for(lambda: [a for a in staff.alerts() if a["escalation_level"] >= 1], bool, timeout=10)
        assert escalated and escalated[0]["alert_id"] == alerts[0]["alert_id"]
        assert wait_for(lambda: scalar(database, "SELECT count(*) FROM trygg.alerts"), lambda n: n == 1) == 1
        assert wait_for(lambda: scalar(database, "SELECT count(*) FROM trygg.events"), lambda n: n >= 1)
    finally:
        staff.close()
    assert all(p.poll() is None for p in three_processes), "a stage died"
