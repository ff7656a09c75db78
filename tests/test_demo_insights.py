"""The demo's simulated past of insights (composition/demo_insights.py; docs/console.md):
`trygg up --demo` on an empty database shows changes worth a look from its first minute,
on the demo residents' own ids, with 60 days of values behind them; seeding again changes
nothing, and the daily job goes on from the last simulated day with the measured ones."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from composition.demo_insights import DAYS, SeedJob, seed
from composition.insights import Job, run_pass
from simulators import demo_registry
from storage import save_registry
from tests.fix_mqtt import MosquittoInstance
from tests.fix_up import TryggProcess
from tests.helpers import wait_for
from trygg.insights import Params

pytestmark = pytest.mark.integration

OSLO = ZoneInfo("Europe/Oslo")


def stored(url: str) -> tuple[Any, ...]:
    """Everything the seeding writes, to compare before and after."""
    with psycopg.connect(url) as conn:
        return tuple(conn.execute(query).fetchall() for query in (
            "SELECT resident_id, day, vals, usual, usable, computed_at FROM trygg.insight_days"
            " ORDER BY resident_id, day",
            "SELECT notice_id, resident_id, feature, day, reason_en, created_at FROM trygg.insight_notices"
            " ORDER BY notice_id",
            "SELECT resident_id, through_day, state, updated_at FROM trygg.insight_state ORDER BY resident_id"))


def test_seeding_fills_60_days_once_and_the_daily_job_goes_on_from_there(database: str) -> None:
    now = datetime(2026, 11, 30, 8, tzinfo=OSLO)
    with psycopg.connect(database) as conn:
        save_registry(conn, demo_registry(), actor="test")

    seeded = seed(SeedJob(database, Params(), now=now))
    assert seeded.done and seeded.residents == 50 and seeded.days == DAYS
    assert (seeded.first_day, seeded.last_day) == (now.date() - timedelta(days=DAYS + 1),
                                                   now.date() - timedelta(days=2))
    days, notices, states = before = stored(database)
    assert len(days) == 50 * DAYS and len(states) == 50 and len(notices) == seeded.notices
    assert {s[1] for s in states} == {seeded.last_day}
    raised = {(n[1], n[2]) for n in notices}
    assert {f for r, f in raised if r == "r-0007"} & {"night_toilet_visits", "night_activity"}, raised  # gradual
    assert {f for r, f in raised if r == "r-0010"} & {"active_hours", "first_activity"}, raised  # the abrupt one

    again = seed(SeedJob(database, Params(), now=now + timedelta(hours=1)))
    assert not again.done
    assert stored(database) == before, "a second seeding changed what was stored"

    # the daily job computes yesterday from the events stored (none in this test)
    report = run_pass(Job(database, Params(), now=now))
    assert report.resident_days == 50
    with psycopg.connect(database) as conn:
        through = conn.execute("SELECT DISTINCT through_day FROM trygg.insight_state").fetchall()
        yesterday = conn.execute("SELECT count(*) FROM trygg.insight_days WHERE day = %s",
                                 (now.date() - timedelta(days=1),)).fetchone()
    assert through == [(now.date() - timedelta(days=1),)]
    assert yesterday == (50,)


@pytest.mark.slow
def test_the_demo_shows_changes_worth_a_look_from_its_first_minute(
        database: str, mosquitto: MosquittoInstance, prefix: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_MQTT_URL": mosquitto.url, "TRYGG_DATABASE_URL": database, "TRYGG_MQTT_PREFIX": prefix,
                "TRYGG_DATA_DIR": str(tmp_path / "data"), "TRYGG_HTTP_PORT": "0", "TRYGG_LOG_FORMAT": "json"})
    demo = TryggProcess(env, tmp_path / "demo.log", ("--demo",))
    try:
        log = demo.log.read_text
        url = wait_for(lambda: re.search(r"dashboard (http://[0-9.]+:\d+)/", log()), bool, timeout=30)
        assert url is not None, log()[-3000:]
        assert wait_for(lambda: "Demo users" in log(), bool, timeout=30), log()[-3000:]
        assert wait_for(lambda: "demo_insights_seeded" in log(), bool, timeout=60), log()[-3000:]
        base = url[1]
        login = httpx.post(f"{base}/login", data={"username": "ola", "password": "trygg-demo"},
                           headers={"Origin": base, "Sec-Fetch-Site": "same-origin"}, timeout=30)
        assert login.status_code == 303, login.text
        cookies = dict(login.cookies)

        team = httpx.get(f"{base}/api/teams/east/insights", cookies=cookies, timeout=30)
        assert team.status_code == 200, team.text
        open_ = team.json()["open"]
        assert open_ and all(n["reason"][0] and n["reason"][1] for n in open_), open_
        assert {"r-0007", "r-0010"} <= {n["resident"]["id"] for n in open_}

        card = httpx.get(f"{base}/api/residents/r-0007/insights", cookies=cookies, timeout=30).json()
        assert any(n["feature"] in ("night_toilet_visits", "night_activity") and n["reason"][1]
                   for n in card["notices"]), card["notices"]
        toilet = [f["name"] for f in card["features"]].index("night_toilet_visits")
        values = [d["values"][toilet] for d in card["days"]]
        assert len(values) >= DAYS and sum(v is not None for v in values) >= DAYS - 5, values
        assert any(u is not None for d in card["days"] for u in d["usual"]), "no baseline band in the card"

        before = stored(database)
        assert not seed(SeedJob(database, Params())).done
        assert stored(database) == before, "a second seeding changed what was stored"
    finally:
        demo.stop()
    seeded = [line for line in demo.log.read_text().splitlines() if "demo_insights_seeded" in line]
    assert len(seeded) == 1 and '"simulated": true' in seeded[0], seeded

