"""Research data: consenting residents only, stable keyed pseudonyms, positions rounded
to ~1 km, small groups suppressed, CSV and Parquet that parse back; and the SQL role
trygg_research that reads the research views and nothing else."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.types.json import Jsonb

from tests.fix_api import PSEUDONYM_KEY, World, as_research_role, give_location_basis, hmac_hex, insert_alert

pytestmark = pytest.mark.integration

CONSENTING = ("r-1", "r-3", "r-4", "r-5", "r-6")
NOT_CONSENTING = ("r-2", "r-7")
DAY = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday, inside the stored partitions
SINCE, UNTIL = "2026-11-18T00:00:00Z", "2026-11-19T00:00:00Z"


def add_events(w: World) -> None:
    """On DAY: a heartbeat from every resident, motion from 4 consenting residents, a
    position of r-1 and r-2, a door unlocked by staff at r-1."""
    rows = []
    device = {"r-1": "d-1", "r-2": "d-2", "r-3": "d-3", "r-4": "d-4", "r-5": "d-5", "r-6": "d-6", "r-7": "d-7"}
    for i, rid in enumerate(CONSENTING + NOT_CONSENTING):
        ts = DAY + timedelta(minutes=i)
        rows.append((f"{device[rid]}-alarm", f"day-hb-{rid}", rid, "heartbeat", ts, Jsonb({"battery_pct": 50})))
    for rid in CONSENTING[:4]:
        rows.append((f"{device[rid]}-alarm", f"day-mo-{rid}", rid, "motion", DAY, Jsonb({"room": "kitchen"})))
    for rid in ("r-1", "r-2"):
        rows.append((f"{device[rid]}-gps", f"day-loc-{rid}", rid, "location", DAY,
                     Jsonb({"lat": 59.913912, "lon": 10.756789, "accuracy_m": 8})))
    rows.append(("d-1-lock", "day-lock", "r-1", "door.unlocked", DAY, Jsonb({"by": "staff-east"})))
    with psycopg.connect(w.url) as conn:
        conn.cursor().executemany(
            "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)", [(d, e, r, t, ts, ts, data) for d, e, r, t, ts, data in rows])


def add_alerts(w: World) -> None:
    """`fall` alerts of the 5 consenting residents (ack after 10..50 s, resolved after 10
    min), `smoke` of 2 (suppressed), and a `fall` of a non-consenting one (left out)."""
    rows = []
    for i, rid in enumerate(CONSENTING):
        rows.append((f"a-fall-{rid}", rid, "fall", "high", DAY, DAY + timedelta(seconds=10 * (i + 1)),
                     DAY + timedelta(minutes=10), "resolved"))
    for rid in CONSENTING[:2]:
        rows.append((f"a-smoke-{rid}", rid, "smoke", "critical", DAY, DAY + timedelta(seconds=5), None,
                     "acknowledged"))
    rows.append(("a-fall-r-7", "r-7", "fall", "high", DAY, DAY + timedelta(hours=5), DAY + timedelta(hours=9),
                 "resolved"))
    with psycopg.connect(w.url) as conn:
        for alert_id, rid, kind, priority, opened, acked, resolved, state in rows:
            insert_alert(conn, {"alert_id": alert_id, "resident_id": rid, "team_id": "east", "kind": kind,
                                "priority": priority, "state": state, "opened_at": opened,
                                "updated_at": opened, "acknowledged_at": acked, "resolved_at": resolved})


def export_csv(w: World) -> list[dict[str, str]]:
    response = w.client.get(f"/api/research/export?since={SINCE}&until={UNTIL}&format=csv",
                            headers=w.headers("researcher"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_export_has_consenting_residents_under_stable_pseudonyms(world: World) -> None:
    add_events(world)
    rows = export_csv(world)
    pseudonyms = {r["resident_pseudonym"] for r in rows}
    assert pseudonyms == {hmac_hex(rid) for rid in CONSENTING}
    for rid in (*CONSENTING, *NOT_CONSENTING):
        assert all(rid not in value for r in rows for value in r.values())
    assert not {hmac_hex(rid) for rid in NOT_CONSENTING} & pseudonyms
    assert export_csv(world) == rows  # stable
    assert not any("Kari" in v or "d-1-" in v for r in rows for v in r.values())


def test_export_coarsens_positions_and_drops_people(world: World) -> None:
    """Five residents with a location basis near the same place in one hour, and a door
    unlocked by staff at each: positions at 2 decimals without accuracy, no staff name."""
    residents = ("r-1", "r-2", "r-4", "r-5", "r-6")
    give_location_basis(world, residents)
    with psycopg.connect(world.url) as conn:
        for n, rid in enumerate(residents):
            ts = DAY + timedelta(minutes=n)
            conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
                         " VALUES (%s, %s, %s, 'location', %s, %s, %s), (%s, %s, %s, 'door.unlocked', %s, %s, %s)",
                         (f"x-gps-{rid}", f"loc-{rid}", rid, ts, ts,
                          Jsonb({"lat": 59.913912 + n / 10_000, "lon": 10.756789, "accuracy_m": 8}),
                          f"x-lock-{rid}", f"lock-{rid}", rid, ts, ts, Jsonb({"by": "staff-east"})))
    rows = export_csv(world)
    locations = [r for r in rows if r["type"] == "location"]
    assert len(locations) == 5
    assert {(r["lat"], r["lon"]) for r in locations} == {("59.91", "10.76")}
    assert {r["data"] for r in locations} == {"{}"}
    assert "accuracy" not in ",".join(rows[0].keys())
    unlocked = [r for r in rows if r["type"] == "door.unlocked"]
    assert len(unlocked) == 5 and {json.dumps(json.loads(r["data"])) for r in unlocked} == {"{}"}
    assert not any("staff" in v or "x-gps" in v for r in rows for v in r.values())


def test_parquet_export_parses_back_to_the_csv_rows(world: World) -> None:
    add_events(world)
    response = world.client.get(f"/api/research/export?since={SINCE}&until={UNTIL}&format=parquet",
                                headers=world.headers("researcher"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == ["resident_pseudonym", "type", "device_kind", "ts", "received_at", "lat",
                                  "lon", "data"]
    parquet_rows = table.to_pylist()
    csv_rows = export_csv(world)
    # Only the heartbeats of 5 residents form a group of 5 (docs/research.md).
    assert len(parquet_rows) == len(csv_rows) == 5
    assert [(r["resident_pseudonym"], r["type"]) for r in parquet_rows] == [
        (r["resident_pseudonym"], r["type"]) for r in csv_rows]
    assert {r["ts"] for r in parquet_rows} == {DAY}  # cut to the hour


def test_counts_suppress_groups_under_five_residents(world: World) -> None:
    add_events(world)
    with psycopg.connect(world.url) as conn:  # motion of a fifth consenting resident, r-6
        conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
                     " VALUES ('d-6-alarm', 'day-mo-r-6', 'r-6', 'motion', %s, %s, '{}')", (DAY, DAY))
    response = world.client.get(f"/api/research/events?since={SINCE}&until={UNTIL}&bucket=day",
                                headers=world.headers("researcher"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["min_group"] == 5
    # motion: 5 consenting residents; location (1) and door.unlocked (1) are held back.
    # Heartbeats are not research events (docs/research.md), although the 5 consenting
    # residents' heartbeats are stored here as events.
    assert [(r["type"], r["events"], r["residents"]) for r in body["rows"]] == [("motion", 5, 5)]
    assert body["rows"][0]["bucket_start"] == "2026-11-17T23:00:00Z"  # midnight in Oslo
    assert body["suppressed_groups"] == 2

    one_type = world.client.get(f"/api/research/events?since={SINCE}&until={UNTIL}&type=door.unlocked&bucket=hour",
                                headers=world.headers("researcher")).json()
    assert one_type["rows"] == [] and one_type["suppressed_groups"] == 1
    motion = world.client.get(f"/api/research/events?since={SINCE}&until={UNTIL}&type=motion&bucket=hour",
                              headers=world.headers("researcher")).json()
    assert [(r["bucket_start"], r["residents"]) for r in motion["rows"]] == [("2026-11-18T12:00:00Z", 5)]
    beats = world.client.get(f"/api/research/events?since={SINCE}&until={UNTIL}&type=heartbeat",
                             headers=world.headers("researcher")).json()
    assert beats["rows"] == [] and beats["suppressed_groups"] == 0


def test_response_times_per_kind(world: World) -> None:
    add_alerts(world)
    response = world.client.get(f"/api/research/response-times?since={SINCE}&until={UNTIL}",
                                headers=world.headers("researcher"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["suppressed_groups"] == 1  # smoke: 2 residents
    (fall,) = body["kinds"]
    assert (fall["kind"], fall["alerts"], fall["residents"]) == ("fall", 5, 5)  # r-7 left out
    assert fall["time_to_acknowledge_s"]["p50"] == pytest.approx(30.0)
    assert fall["time_to_acknowledge_s"]["p90"] == pytest.approx(46.0)
    assert fall["time_to_acknowledge_s"]["p99"] == pytest.approx(49.6)
    assert fall["time_to_resolve_s"] == {"p50": 600.0, "p90": 600.0, "p99": 600.0}


@pytest.mark.parametrize("query", [
    "bucket=minute", "type=smoke.alarm", "since=yesterday", "since=2026-11-19T00:00:00Z&until=2026-11-18T00:00:00Z",
])
def test_bad_parameters_are_422_with_a_message(world: World, query: str) -> None:
    response = world.client.get(f"/api/research/events?{query}", headers=world.headers("researcher"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]


def test_bad_export_format_is_422(world: World) -> None:
    response = world.client.get("/api/research/export?format=xlsx", headers=world.headers("researcher"))
    assert response.status_code == 422


def test_sql_role_reads_research_views_only(world: World) -> None:
    add_events(world)
    add_alerts(world)
    with psycopg.connect(as_research_role(world.url)) as conn:
        events = conn.execute("SELECT resident_pseudonym, type, lat, lon, data FROM research.events"
                              " WHERE ts >= %s AND ts < %s", (DAY - timedelta(hours=1), DAY + timedelta(hours=1))
                              ).fetchall()
        assert {e[0] for e in events} == {hmac_hex(rid) for rid in CONSENTING}
        assert conn.execute("SELECT count(*) FROM research.alerts").fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM research.residents").fetchone() == (5,)
        conn.execute("SELECT * FROM research.daily_event_counts").fetchall()
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'research'")}
        assert not {"resident_id", "name", "accuracy_m", "note", "team_id"} & columns
    for table in ("trygg.events", "trygg.residents", "trygg.research_pseudonyms", "trygg.alerts",
                  "trygg.audit_log", "trygg.research_residents", "trygg.users"):
        with psycopg.connect(as_research_role(world.url)) as conn, pytest.raises(
                psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1".encode())


def test_a_new_key_renews_every_pseudonym(world: World) -> None:
    import asyncio

    from dashboard.research import sync_pseudonyms

    async def renew(key: bytes) -> int:
        async with await psycopg.AsyncConnection.connect(world.url) as conn:
            return await sync_pseudonyms(conn, key)

    assert asyncio.run(renew(PSEUDONYM_KEY.encode())) == 0  # filled at start already
    assert asyncio.run(renew(b"another-key-0123456789")) == 7
    with psycopg.connect(world.url) as conn:
        stored = dict(conn.execute("SELECT resident_id, pseudonym FROM trygg.research_pseudonyms").fetchall())
    assert stored["r-1"] == hmac.new(b"another-key-0123456789", b"r-1", hashlib.sha256).hexdigest()
    # The API puts its own key back before it answers.
    add_events(world)
    assert {r["resident_pseudonym"] for r in export_csv(world)} == {hmac_hex(rid) for rid in CONSENTING}
