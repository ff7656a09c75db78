"""Alerts and PostgreSQL: an alarm reaches staff while the database is down and its rows
arrive when it returns; after a hard crash (kill -9) a new stage keeps the open alert,
raises nothing twice, and picks its escalation up again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts import AlertService, Timeouts
from alerts.persistence import item_of
from storage import Pool
from storage.alerts_store import AlertStore
from tests.fix_alerts import Handheld, StartStage, alerts_of, intent
from tests.fix_db import PostgresInstance
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import small_registry, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

# A stage in a process of its own that raises one alert and then waits to be killed.
CHILD = """
import asyncio, sys
from datetime import datetime
from pathlib import Path
from alerts import AlertConfig, AlertStage
from composition.runtime import open_pool
from tests.helpers import small_registry
from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction

host, port, prefix, conninfo, journal, at = sys.argv[1:7]

async def main() -> None:
    stage = AlertStage(small_registry(), AlertConfig(broker_host=host, broker_port=int(port), prefix=prefix,
                                                     client_id="alerts-child", journal_dir=Path(journal),
                                                     retry_s=0.2),
                       pool=open_pool(conninfo))
    runner = asyncio.create_task(stage.run())
    await stage.wait_ready()
    when = datetime.fromisoformat(at)
    event = Event("d-1-alarm", "e-crash", EventType.ALARM_BUTTON, when, when, {}, "r-1")
    stage.on_intents([AlertIntent(IntentAction.OPEN, "r-1", AlertKind.ALARM, Priority.HIGH, when,
                                  ("d-1-alarm", "e-crash"), event)])
    await runner

asyncio.run(main())
"""


def rows(url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute(query.encode(), args).fetchall()
    except psycopg.OperationalError:
        return []


def crash_after_one_alert(mosquitto: MosquittoInstance, prefix: str, conninfo: str, journal: Path,
                          at: datetime, done: Callable[[], bool]) -> None:
    """Run CHILD until `done()`, then kill -9 it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mosquitto.address.host, str(mosquitto.address.port), prefix, conninfo,
         str(journal), at.isoformat()],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        ok = wait_for(done, bool, timeout=30, interval=0.02)
        assert ok, child.stderr.read().decode() if child.poll() is not None and child.stderr else "child too slow"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stderr:
            child.stderr.close()


@pytest.mark.serial
def test_an_alarm_reaches_staff_while_postgres_is_down_and_is_stored_when_it_returns(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], prefix: str,
    private_postgres: PostgresInstance,
) -> None:
    url = private_postgres.url("trygg")
    run = start_stage(url)
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    run.call(lambda: run.stage.on_intents([intent(event_id="e-before")]))  # the writer is connected
    east.wait(lambda m: len(m) >= 1)
    assert wait_for(lambda: rows(url, "SELECT count(*) FROM trygg.alerts"), lambda r: r == [(1,)])

    private_postgres.stop()
    sent = time.perf_counter()
    run.call(lambda: run.stage.on_intents([intent(resident="r-2", device="d-2-alarm", event_id="e-during")]))
    messages = east.wait(lambda m: len(m) >= 2)
    assert messages[1].doc["resident_id"] == "r-2"
    assert messages[1].at - sent < 0.05, "the alert path waited for the database"
    alert_id = messages[1].doc["alert_id"]
    run.call(lambda: run.stage.acknowledge(alert_id, "ola"))
    assert east.wait(lambda m: len(m) >= 3)[2].doc["state"] == "acknowledged"
    time.sleep(0.5)
    writer = run.stage.writer
    assert writer is not None and not writer.database_ok and writer.backlog == 2

    private_postgres.start()
    stored = wait_for(lambda: rows(url, "SELECT state, acknowledged_by FROM trygg.alerts WHERE alert_id = %s",
                                   alert_id), lambda r: r == [("acknowledged", "ola")], timeout=20)
    assert stored == [("acknowledged", "ola")]
    assert rows(url, "SELECT seq, to_state FROM trygg.alert_transitions WHERE alert_id = %s ORDER BY seq",
                alert_id) == [(0, "open"), (1, "acknowledged")]
    assert writer.database_ok


def test_after_a_hard_crash_the_open_alert_is_restored_and_nothing_is_raised_twice(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], mosquitto: MosquittoInstance,
    prefix: str, database: str, tmp_path: Path,
) -> None:
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    at = datetime.now(UTC)
    crash_after_one_alert(
        mosquitto, prefix, database, tmp_path / "child-journal", at,
        lambda: bool(east.received()) and rows(database, "SELECT count(*) FROM trygg.alerts") == [(1,)],
    )
    [before] = alerts_of(east.received())
    alert_id = before["alert_id"]

    centre = handhelds(f"{prefix}/teams/alarm-centre/alerts/+")
    run = start_stage(database, escalate_high_s=0.5)  # its escalation is overdue now
    assert [a.alert_id for a in run.call(run.stage.active)] == [alert_id]
    # the broker redelivers the event: the same alert, nothing new
    run.call(lambda: run.stage.on_intents([intent(event_id="e-crash", at=at)]))
    [escalated] = centre.wait(lambda m: len(m) >= 1)
    assert (escalated.doc["alert_id"], escalated.doc["escalation_level"]) == (alert_id, 1)

    docs = alerts_of(east.received())
    assert {d["alert_id"] for d in docs} == {alert_id}
    assert {d["event_count"] for d in docs} == {1}
    assert {d["opened_at"] for d in docs} == {before["opened_at"]}
    stored = wait_for(lambda: rows(database, "SELECT count(*), max(escalation_level) FROM trygg.alerts"),
                      lambda r: r[0][1] >= 1)
    assert stored[0][0] == 1 and stored[0][1] >= 1


def test_a_crash_while_postgres_is_down_loses_no_alert(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], mosquitto: MosquittoInstance,
    prefix: str, private_postgres: PostgresInstance, tmp_path: Path,
) -> None:
    url = private_postgres.url("trygg")
    journal = tmp_path / "alerts"  # the journal directory start_stage uses
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    private_postgres.stop()
    at = datetime.now(UTC)
    crash_after_one_alert(
        mosquitto, prefix, url, journal, at,
        lambda: bool(east.received()) and (journal / "alerts.log").exists()
        and (journal / "alerts.log").stat().st_size > 0,
    )
    [before] = alerts_of(east.received())

    run = start_stage(url)  # PostgreSQL still down: restored from the journal
    assert [a.alert_id for a in run.call(run.stage.active)] == [before["alert_id"]]
    run.call(lambda: run.stage.on_intents([intent(event_id="e-crash", at=at)]))
    private_postgres.start()
    stored = wait_for(lambda: rows(url, "SELECT alert_id, state, event_count FROM trygg.alerts"),
                      lambda r: bool(r), timeout=20)
    assert stored == [(before["alert_id"], "open", 1)]
    assert rows(url, "SELECT seq, to_state, actor FROM trygg.alert_transitions") == [(0, "open", "system")]
    assert {d["event_count"] for d in alerts_of(east.received())} == {1}


def test_the_store_keeps_the_newest_version_and_each_transition_once(database: str, pool: Pool) -> None:
    svc = AlertService(small_registry(), Timeouts())
    [opened] = svc.apply([intent()])
    acked = svc.acknowledge(opened.alert.alert_id, "ola", datetime.now(UTC))
    (rec1, steps1), (rec2, steps2) = item_of(opened), item_of(acked)
    store = AlertStore(pool)
    try:
        store.write([rec1, rec2], [*steps1, *steps2])
        store.write([rec2], [*steps2])  # a journal replayed after a crash
        store.write([rec1], [*steps1])  # an older version arriving late
        [loaded] = store.load()
        assert loaded == rec2
        assert [(t.seq, t.to_state) for t in store.transitions(rec1.alert_id)] == [(0, "open"), (1, "acknowledged")]
        done = svc.resolve(opened.alert.alert_id, "ola", datetime.now(UTC), "ok")
        rec3, steps3 = item_of(done)
        store.write([rec3], steps3)
        assert store.load() == []  # only unresolved ones
        assert store.load(closed_since=datetime.now(UTC) - timedelta(hours=1)) == [rec3]
        with pytest.raises(psycopg.errors.RaiseException), psycopg.connect(database) as conn:
            conn.execute("DELETE FROM trygg.alert_transitions")  # nothing is deleted
    finally:
        store.close()
