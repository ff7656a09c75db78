"""What a researcher can learn about one person (docs/research.md "What is guaranteed"):
no time finer than the hour, answers that only change by whole buckets, no exported row
of a group under 5 residents, and no position stored without a location basis.

Each test plays an attack that worked before: two aggregate queries whose `until`
differ by 1 µs, a 2-second window, an export of a window that holds one resident's
press, and a GPS fix stored during an alarm of a resident without a location basis."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests import fix_api
from tests.fix_api import World, as_research_role, give_location_basis, hmac_hex, make_world

pytestmark = pytest.mark.integration

CONSENTING = ("r-1", "r-3", "r-4", "r-5", "r-6")
MORNING = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
#: r-1 presses the alarm button at this exact time, alone in its hour.
PRESS = datetime(2026, 11, 18, 14, 3, 7, 120000, tzinfo=UTC)


def insert(w: World, rows: list[tuple[str, str, str, str, datetime, dict[str, object]]]) -> None:
    with psycopg.connect(w.url) as conn:
        conn.cursor().executemany(
            "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(d, e, r, t, ts, ts + timedelta(milliseconds=40), Jsonb(data)) for d, e, r, t, ts, data in rows])


def presses(w: World) -> None:
    """Every consenting resident presses once in the morning (a group of 5), and r-1
    presses again at PRESS."""
    rows = [(f"d-{rid[2:]}-alarm", f"am-{rid}", rid, "alarm.button", MORNING + timedelta(minutes=i, seconds=7), {})
            for i, rid in enumerate(CONSENTING)]
    rows.append(("d-1-alarm", "pm-r-1", "r-1", "alarm.button", PRESS, {}))
    insert(w, rows)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def counts(w: World, since: datetime, until: datetime, bucket: str = "day") -> dict[str, object]:
    response = w.client.get("/api/research/events", params={"since": iso(since), "until": iso(until),
                                                             "bucket": bucket, "type": "alarm.button"},
                            headers=w.headers("researcher"))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def export(w: World, since: datetime, until: datetime) -> list[dict[str, str]]:
    response = w.client.get("/api/research/export", params={"since": iso(since), "until": iso(until)},
                            headers=w.headers("researcher"))
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_until_one_microsecond_apart_gives_the_same_answer(world: World) -> None:
    """Before: 5 presses up to PRESS, 6 presses up to PRESS + 1 µs — r-1 pressed at
    exactly 14:03:07.120. Now both windows are cut at the same bucket boundary."""
    presses(world)
    day = datetime(2026, 11, 18, tzinfo=UTC)
    before = counts(world, day, PRESS)
    after = counts(world, day, PRESS + timedelta(microseconds=1))
    assert before == after
    # The answer says which window it is for: whole days in Oslo.
    assert before["since"] == "2026-11-17T23:00:00Z" and before["until"] == "2026-11-18T23:00:00Z"


def test_a_two_second_window_answers_for_whole_buckets(world: World) -> None:
    """A 2-second window around one press is widened to whole buckets and at least a day:
    the answer is the one for that day, never a count of that moment."""
    presses(world)
    narrow = counts(world, PRESS - timedelta(seconds=1), PRESS + timedelta(seconds=1), bucket="hour")
    whole_day = counts(world, datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC), bucket="hour")
    assert narrow["rows"] == whole_day["rows"]
    since = datetime.fromisoformat(str(narrow["since"]))
    until = datetime.fromisoformat(str(narrow["until"]))
    assert until - since >= timedelta(days=1)
    assert since.minute == since.second == since.microsecond == 0
    for row in narrow["rows"]:  # type: ignore[attr-defined]
        assert row["residents"] >= 5
        assert row["bucket_start"].endswith(":00:00Z")


def test_export_of_one_residents_moment_shows_nothing_of_them(world: World) -> None:
    """Before: the export of [PRESS − 1 s, PRESS + 1 s) was one row with r-1's pseudonym
    and the exact time. Now r-1's afternoon press is in a group of one: no row at all."""
    presses(world)
    rows = export(world, PRESS - timedelta(seconds=1), PRESS + timedelta(seconds=1))
    assert not [r for r in rows if at(r["ts"]) >= PRESS.replace(minute=0, second=0, microsecond=0)]
    for r in rows:  # what is shown is hourly, in groups of at least 5 residents
        for t in (at(r["ts"]), at(r["received_at"])):
            assert (t.minute, t.second, t.microsecond) == (0, 0, 0), r
    cells: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for r in rows:
        cells[tuple(v for k, v in r.items() if k != "resident_pseudonym")].add(r["resident_pseudonym"])
    assert all(len(p) >= 5 for p in cells.values())
    # The morning presses of five residents are a group: exported, by the hour.
    morning = [r for r in rows if r["type"] == "alarm.button"]
    assert len(morning) == 5 and {at(r["ts"]) for r in morning} == {MORNING}


def test_a_position_without_location_basis_never_reaches_research(world: World) -> None:
    """r-3 has no location basis; its GPS fix was stored because an alarm was open
    (care only, docs/contract.md#7-privacy-and-lawful-care). Five residents with a basis were at the same place in
    the same hour. Before: r-3's fix was counted, exported and in research.events."""
    with_basis = ("r-1", "r-2", "r-4", "r-5", "r-6")
    give_location_basis(world, with_basis)
    fix = {"lat": 59.913912, "lon": 10.756789, "accuracy_m": 8}
    insert(world, [(f"x-gps-{rid}", f"loc-{rid}", rid, "location", MORNING + timedelta(minutes=n), fix)
                   for n, rid in enumerate((*with_basis, "r-3"))])
    day = datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC)

    aggregate = world.client.get("/api/research/events", params={
        "since": iso(day[0]), "until": iso(day[1]), "type": "location"}, headers=world.headers("researcher")).json()
    assert [(r["events"], r["residents"]) for r in aggregate["rows"]] == [(5, 5)]

    rows = export(world, *day)
    located = [r for r in rows if r["type"] == "location"]
    assert {r["resident_pseudonym"] for r in located} == {hmac_hex(rid) for rid in with_basis}
    assert {(r["lat"], r["lon"]) for r in located} == {("59.91", "10.76")}

    with psycopg.connect(as_research_role(world.url)) as conn:
        in_view = {p for (p,) in conn.execute("SELECT resident_pseudonym FROM research.events WHERE type = 'location'")}
        daily = conn.execute("SELECT events, residents FROM research.daily_event_counts"
                             " WHERE type = 'location'").fetchall()
    assert hmac_hex("r-3") not in in_view
    assert in_view == {hmac_hex(rid) for rid in with_basis}
    assert daily == [(5, 5)]


def test_research_views_show_no_time_finer_than_the_hour(world: World) -> None:
    """As `trygg_research`, research.events and research.alerts hold hours, not
    microseconds."""
    presses(world)
    with psycopg.connect(as_research_role(world.url)) as conn:
        times = conn.execute("SELECT ts, received_at FROM research.events").fetchall()
    assert times
    for ts, received in times:
        for t in (ts, received):
            assert (t.minute, t.second, t.microsecond) == (0, 0, 0), t


@pytest.mark.parametrize("path", ["/api/research/events", "/api/research/response-times", "/api/research/export"])
@pytest.mark.parametrize("window", [{"since": "0001-01-01T00:00:00Z", "until": "0001-01-02T00:00:00Z"},
                                    {"since": "9999-12-30T00:00:00Z", "until": "9999-12-31T23:59:59Z"}])
def test_windows_at_the_ends_of_time_are_422(world: World, path: str, window: dict[str, str]) -> None:
    """Widening to whole days in Oslo cannot go past year 1 or 9999: a clear 422."""
    response = world.client.get(path, params=window, headers=world.headers("researcher"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"]


def test_a_coarser_grain_cuts_export_times_to_the_day_and_refuses_hourly_counts(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRYGG_RESEARCH_TIME_GRAIN=day: the export shows days, and hourly counts are 422."""
    base = fix_api.settings
    monkeypatch.setattr(fix_api, "settings", lambda data_dir=None: base(data_dir).model_copy(
        update={"research_time_grain": "day"}))
    with make_world(database) as w:
        presses(w)
        day = datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC)
        hourly = w.client.get("/api/research/events", params={"since": iso(day[0]), "until": iso(day[1]),
                                                               "bucket": "hour"}, headers=w.headers("researcher"))
        assert hourly.status_code == 422 and "day or coarser" in hourly.text
        rows = [r for r in export(w, *day) if r["type"] == "alarm.button"]
        # Five residents pressed that day (r-1 twice): all six presses, at the Oslo day.
        assert len(rows) == 6 and {at(r["ts"]) for r in rows} == {datetime(2026, 11, 17, 23, tzinfo=UTC)}
