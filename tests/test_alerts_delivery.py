"""The alert stage against a real Mosquitto and PostgreSQL, as a staff handheld sees it:
alerts arrive on the team's topic (retained while unresolved), the final state reaches
connected handhelds and nothing lingers for later ones, and an alert nobody takes
climbs to the alarm centre."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from alerts import AlertConfig, AlertStage
from mqtt import Protocol
from tests.fix_alerts import Handheld, Running, StartStage, alerts_of, intent
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import small_registry, wait_for
from trygg.contract import AlertKind
from trygg.registry import Team

pytestmark = pytest.mark.integration


@pytest.mark.serial
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_an_alert_reaches_the_team_at_once_and_a_later_handheld_gets_it_retained(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], prefix: str, database: str, protocol: str
) -> None:
    run = start_stage(database, protocol=Protocol.parse(protocol))
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    fall = intent(AlertKind.FALL, "d-1-fall", "e-000123", "fall.detected")
    sent = time.perf_counter()
    run.call(lambda: run.stage.on_intents([fall]))

    [msg] = east.wait(lambda m: len(m) >= 1)
    doc = msg.doc
    assert msg.topic == f"{prefix}/teams/east/alerts/{doc['alert_id']}"
    assert msg.at - sent < 0.5
    assert (doc["resident_id"], doc["team_id"], doc["kind"], doc["priority"], doc["state"]) == (
        "r-1", "east", "fall", "high", "open")
    assert doc["trigger"]["event_id"] == "e-000123"
    assert doc["trigger"]["device_id"] == "d-1-fall"

    late = handhelds(f"{prefix}/teams/east/alerts/+")
    [kept] = late.wait(lambda m: len(m) >= 1)
    assert kept.retain and kept.doc == doc

    # a second fall attaches: republished with event_count 2, not a new alert
    run.call(lambda: run.stage.on_intents([intent(AlertKind.FALL, "d-1-fall", None, "fall.detected")]))
    messages = east.wait(lambda m: len(m) >= 2)
    assert [(d["alert_id"], d["event_count"]) for d in alerts_of(messages)] == [
        (doc["alert_id"], 1), (doc["alert_id"], 2)]

    # the rows are in PostgreSQL shortly after
    def stored() -> tuple[Any, ...] | None:
        with psycopg.connect(database) as conn:
            return conn.execute("SELECT state, event_count, team_id, kind, teams FROM trygg.alerts"
                                " WHERE alert_id = %s", (doc["alert_id"],)).fetchone()

    assert wait_for(stored, lambda r: r is not None and r[1] == 2, timeout=10) == (
        "open", 2, "east", "fall", ["east"])


def test_resolve_shows_the_final_state_to_connected_handhelds_and_nothing_to_later_ones(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], prefix: str, database: str
) -> None:
    closed: list[tuple[str, AlertKind, str | None]] = []

    class Rules:
        def alert_closed(self, resident_id: str, kind: AlertKind, device_id: str | None) -> None:
            closed.append((resident_id, kind, device_id))

    run = start_stage(database, alert_closed=Rules())
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    run.call(lambda: run.stage.on_intents([intent()]))
    [opened] = east.wait(lambda m: len(m) >= 1)
    alert_id = opened.doc["alert_id"]

    acked = run.call(lambda: run.stage.acknowledge(alert_id, "ola"))
    assert acked.state == "acknowledged"
    done = run.call(lambda: run.stage.resolve(alert_id, "ola", "Trykket ved et uhell"))
    assert (done.state, done.resolved_by, done.note) == ("resolved", "ola", "Trykket ved et uhell")
    assert closed == [("r-1", AlertKind.ALARM, None)]

    messages = east.wait(lambda m: len(m) >= 4)
    assert [m.doc["state"] if m.payload else "" for m in messages] == ["open", "acknowledged", "resolved", ""]
    assert not messages[2].retain  # the final state is not kept ...
    late = handhelds(f"{prefix}/teams/east/alerts/+")
    time.sleep(0.3)
    assert late.received() == []  # ... and the retained copy is cleared

    def trail() -> list[tuple[Any, ...]]:
        with psycopg.connect(database) as conn:
            return conn.execute("SELECT seq, from_state, to_state, actor, note FROM trygg.alert_transitions"
                                " WHERE alert_id = %s ORDER BY seq", (alert_id,)).fetchall()

    assert wait_for(trail, lambda t: len(t) == 3, timeout=10) == [
        (0, None, "open", "system", None),
        (1, "open", "acknowledged", "ola", None),
        (2, "acknowledged", "resolved", "ola", "Trykket ved et uhell"),
    ]
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT state, acknowledged_by, resolved_by, acknowledged_at <= resolved_at,"
                           " closed_at = resolved_at FROM trygg.alerts WHERE alert_id = %s",
                           (alert_id,)).fetchone()
    assert row == ("resolved", "ola", "ola", True, True)


def test_with_resend_an_open_alert_goes_out_again_until_someone_takes_it(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], prefix: str, database: str
) -> None:
    """The cluster's partitions publish open alerts again every few seconds (a NATS node
    may acknowledge an alert and not deliver it while another node's death leaves a
    stream without a leader): the same alert, same version, until it is taken."""
    run = start_stage(database, resend_open_s=0.3)
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    run.call(lambda: run.stage.on_intents([intent()]))
    messages = east.wait(lambda m: len(m) >= 3, timeout=5)
    docs = alerts_of(messages)
    assert {json.dumps(d, sort_keys=True) for d in docs} == {json.dumps(docs[0], sort_keys=True)}  # the same alert
    assert docs[0]["state"] == "open"
    run.call(lambda: run.stage.acknowledge(docs[0]["alert_id"], "ola"))
    taken = east.wait(lambda m: any(x.payload and x.doc["state"] == "acknowledged" for x in m), timeout=5)
    time.sleep(1.0)  # three resend periods: nothing more once it is taken
    assert len(east.received()) == len(taken)


def test_an_alert_nobody_takes_escalates_to_the_alarm_centre(
    start_stage: StartStage, handhelds: Callable[[str], Handheld], prefix: str, database: str
) -> None:
    run = start_stage(database, escalate_high_s=0.3)
    east = handhelds(f"{prefix}/teams/east/alerts/+")
    centre = handhelds(f"{prefix}/teams/alarm-centre/alerts/+")
    opened_at = time.perf_counter()
    run.call(lambda: run.stage.on_intents([intent()]))
    [first] = east.wait(lambda m: len(m) >= 1)
    alert_id = first.doc["alert_id"]

    [escalated] = centre.wait(lambda m: len(m) >= 1)
    assert escalated.topic == f"{prefix}/teams/alarm-centre/alerts/{alert_id}"
    assert (escalated.doc["alert_id"], escalated.doc["escalation_level"], escalated.doc["team_id"]) == (
        alert_id, 1, "east")
    assert 0.25 < escalated.at - opened_at < 1.5
    # the original team's copy is updated too
    assert east.wait(lambda m: len(m) >= 2)[1].doc["escalation_level"] == 1

    # at the end of the chain: reminders with a rising level, until someone acknowledges
    reminders = centre.wait(lambda m: len(m) >= 2)
    assert reminders[1].doc["escalation_level"] == 2
    run.call(lambda: run.stage.acknowledge(alert_id, "operator-1"))
    time.sleep(0.8)
    docs = alerts_of(centre.received())
    assert docs[-1]["state"] == "acknowledged"
    assert [d["state"] for d in docs].count("acknowledged") == 1  # no reminder after it
    assert all(d["alert_id"] == alert_id for d in docs)

    late = handhelds(f"{prefix}/teams/alarm-centre/alerts/+")
    [kept] = late.wait(lambda m: len(m) >= 1)
    assert kept.retain and kept.doc["state"] == "acknowledged"
    with psycopg.connect(database) as conn:
        wait_for(lambda: conn.execute("SELECT teams FROM trygg.alerts WHERE alert_id = %s",
                                      (alert_id,)).fetchone(),
                 lambda r: r is not None and r[0] == ["east", "alarm-centre"], timeout=10)
        conn.rollback()
        row = conn.execute("SELECT state, escalation_level >= 2, teams FROM trygg.alerts WHERE alert_id = %s",
                           (alert_id,)).fetchone()
    assert row == ("acknowledged", True, ["east", "alarm-centre"])


def test_dashboard_subscribers_see_every_change_of_their_teams(
    start_stage: StartStage, prefix: str
) -> None:
    run = start_stage(None)  # no database at all: delivery works without one
    sub = run.call(lambda: run.stage.subscribe({"east"}))
    run.call(lambda: run.stage.on_intents([intent()]))
    first = run.call(sub.get_nowait)
    assert (first.state, first.team_id, first.teams) == ("open", "east", ("east",))
    run.call(lambda: run.stage.resolve(first.alert_id, "ola"))
    final = run.call(sub.get_nowait)
    assert final.state == "resolved"
    assert run.call(lambda: run.stage.active({"east"})) == []
    # intents from another thread (a rule replay at start-up) are handed to the loop
    run.stage.on_intents([intent(resident="r-2", device="d-2-alarm")])
    other = wait_for(lambda: run.call(lambda: run.stage.active({"east"})), bool, timeout=5, interval=0.01)
    assert [a.resident_id for a in other] == ["r-2"]
    assert run.call(sub.get_nowait).resident_id == "r-2"


def test_a_team_with_a_webhook_gets_every_change_posted(start_stage: StartStage, prefix: str) -> None:
    posted: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posted.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/trygg"
        registry = small_registry().model_copy(update={"teams": [
            Team(id="east", name="Øst", escalate_to="alarm-centre", webhook_url=url),
            Team(id="alarm-centre", name="Alarmsentralen")]})
        run = start_stage(None, registry=registry)
        run.call(lambda: run.stage.on_intents([intent()]))
        [opened] = wait_for(lambda: list(posted), lambda p: len(p) >= 1, timeout=10, interval=0.01)
        run.call(lambda: run.stage.resolve(opened["alert_id"], "ola"))
        hooks = wait_for(lambda: list(posted), lambda p: len(p) >= 2, timeout=10, interval=0.01)
        assert [(d["alert_id"], d["state"]) for d in hooks] == [(opened["alert_id"], "open"),
                                                               (opened["alert_id"], "resolved")]
    finally:
        server.shutdown()
        server.server_close()


class Receiver:
    """A team's webhook receiver on a loopback port; `hold_s` > 0 keeps every request
    unanswered that long (or until `close`), like a receiver that hangs."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.posted: list[tuple[dict[str, Any], float]] = []
        self.released = threading.Event()
        receiver = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posted.append((json.loads(body), time.perf_counter()))
                if hold_s:
                    receiver.released.wait(hold_s)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/trygg"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.serial
def test_a_hanging_webhook_receiver_of_one_team_does_not_delay_another_teams(start_stage: StartStage) -> None:
    """East's receiver never answers (30 s); west's alarm still reaches west's receiver at
    once. Before, four workers shared by all teams were all waiting on east."""
    east, west = Receiver(hold_s=30), Receiver()
    try:
        registry = small_registry().model_copy(update={"teams": [
            Team(id="east", name="Øst", escalate_to="alarm-centre", webhook_url=east.url),
            Team(id="west", name="Vest", escalate_to="alarm-centre", webhook_url=west.url),
            Team(id="alarm-centre", name="Alarmsentralen")]})
        r2 = registry.residents[1].model_copy(update={"team": "west"})
        registry = registry.model_copy(update={"residents": [registry.residents[0], r2]})
        run = start_stage(None, registry=registry)
        kinds = [AlertKind.ALARM, AlertKind.FALL, AlertKind.SMOKE, AlertKind.DOOR_OPEN, AlertKind.INACTIVITY,
                 AlertKind.WANDERING, AlertKind.GEOFENCE_EXIT, AlertKind.BATTERY_LOW]
        run.call(lambda: run.stage.on_intents([intent(k, event_type="alarm.button") for k in kinds]))
        wait_for(lambda: len(east.posted), lambda n: n >= 1, timeout=5, interval=0.01)  # east hangs now
        time.sleep(0.2)
        sent = time.perf_counter()
        run.call(lambda: run.stage.on_intents([intent(resident="r-2", device="d-2-alarm")]))
        [(doc, at)] = wait_for(lambda: list(west.posted), bool, timeout=10, interval=0.005)
        assert (doc["resident_id"], doc["state"]) == ("r-2", "open")
        assert at - sent < 1.0, f"west's webhook came {at - sent:.1f} s late"
    finally:
        east.close()
        west.close()


def test_open_alerts_survive_a_broker_restart_that_loses_retained_messages(prefix: str) -> None:
    broker = MosquittoInstance()  # a broker of its own: this test restarts it
    broker.start()
    made: list[Handheld] = []
    run: Running | None = None
    try:
        stage = AlertStage(small_registry(), AlertConfig(broker_host=broker.address.host,
                                                         broker_port=broker.address.port, prefix=prefix,
                                                         client_id="alerts-restart"))
        run = Running(stage)
        run.call(lambda: run.stage.on_intents([intent(event_id="e-before")]))
        assert wait_for(stage.publisher.pending, lambda n: n == 0, timeout=10) == 0

        assert broker.proc is not None
        broker.proc.terminate()  # Mosquitto without persistence: its retained messages are gone
        broker.proc.wait(10)
        wait_for(stage.publisher.connected.is_set, lambda up: not up, timeout=10)
        # raised while the broker is away: queued, not lost
        run.call(lambda: run.stage.on_intents([intent(resident="r-2", device="d-2-alarm", event_id="e-during")]))
        broker.start()

        assert wait_for(lambda: stage.publisher.connections, lambda n: n >= 2, timeout=15) >= 2
        wait_for(stage.publisher.pending, lambda n: n == 0, timeout=10)
        time.sleep(0.2)
        late = Handheld(broker, f"{prefix}/teams/east/alerts/+")
        made.append(late)
        docs = alerts_of(late.wait(lambda m: len(m) >= 2))
        assert sorted(d["resident_id"] for d in docs) == ["r-1", "r-2"]
    finally:
        for hh in made:
            hh.close()
        if run is not None:
            run.stop()
        broker.stop()
