"""What the browser tests share: the system under test (`python -m trygg up` in its own
process, with a private Mosquitto and a fresh database, users added with the users CLI,
devices publishing with `mosquitto_pub`) and a few page helpers.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import ConsoleMessage, Error, Page
from psycopg.types.json import Jsonb

from storage import save_registry
from tests.fix_db import create_database, drop_database, scalar
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import event, wait_for
from tests.registry_documents import browser_registry_yaml
from trygg.registry import parse_registry

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PASSWORD = "browser-test-password-1"
UP_COMMAND = [sys.executable, "-m", "trygg", "up"]
USERS_ADD_COMMAND = [sys.executable, "-m", "trygg", "users", "add"]

#: r-1..r-3 and r-4..r-9 consenting to research; devices beat rarely, so that no
#: `device_offline` alert appears while the tests run (tests/registry_documents.py).
REGISTRY_YAML = browser_registry_yaml()

#: (username, role, CLI options)
USERS: list[tuple[str, str, list[str]]] = [
    ("ola", "staff", ["--team", "east"]),
    ("anne", "relative", ["--resident", "r-1"]),
    ("forsker", "researcher", []),
]

DASHBOARD_LINE = re.compile(r"dashboard (http://[0-9.]+:\d+)/")


def base_env(mosquitto: MosquittoInstance, database: str, prefix: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({
        "TRYGG_MQTT_URL": mosquitto.url, "TRYGG_DATABASE_URL": database, "TRYGG_MQTT_PREFIX": prefix,
        "TRYGG_MQTT_CLIENT_ID": f"up-{prefix.split('/')[0]}", "TRYGG_DATA_DIR": str(data_dir),
        "TRYGG_HTTP_HOST": "127.0.0.1", "TRYGG_HTTP_PORT": "0",
        "TRYGG_PSEUDONYM_KEY": "p" * 32, "TRYGG_SESSION_SECRET": "s" * 32, "TRYGG_LOG_LEVEL": "info",
    })
    return env


@dataclass
class System:
    """One running `trygg up` with its broker, database and topic prefix."""

    mosquitto: MosquittoInstance
    database: str
    prefix: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    published: list[str] = field(default_factory=list)

    def start_with_users(self, users: list[tuple[str, str, list[str]]], port: int = 0) -> None:
        """Add `users` with the users CLI while `trygg up` starts (both take seconds)."""
        users_added = add_users(self.env, users)
        try:
            self.start(port)
        finally:
            users_added()

    def start(self, port: int = 0, timeout: float = 60) -> None:
        """Start `trygg up`; wait until it prints where the dashboard listens."""
        env = {**self.env, "TRYGG_HTTP_PORT": str(port)}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(UP_COMMAND, env=env, stdout=out, stderr=subprocess.STDOUT)

        def printed() -> str | None:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            found = DASHBOARD_LINE.search(text)
            return found.group(1) if found else None

        url = wait_for(printed, lambda u: u is not None or (self.proc is not None and self.proc.poll() is not None),
                       timeout=timeout, interval=0.05)
        if url is None:
            tail = self.log.read_text(errors="replace")[-3000:]
            self.stop()
            pytest.fail(f"`trygg up` did not print 'dashboard http://…/' (is the dashboard wired in?):\n{tail}")
        self.base_url = url

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def publish(self, device_id: str, kind: str, data: dict[str, Any] | None = None) -> str:
        """Publish one event as the device would, with `mosquitto_pub` (QoS 1); its id."""
        event_id = f"e-{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub", "-h", "127.0.0.1",
             "-p", str(self.mosquitto.port), "-q", "1", "-i", f"dev-{device_id}-{event_id[-6:]}",
             "-t", f"{self.prefix}/devices/{device_id}/events", "-m", event(event_id, kind, data).decode()],
            check=True, timeout=10, capture_output=True)
        self.published.append(event_id)
        return event_id


def add_users(env: dict[str, str], users: list[tuple[str, str, list[str]]]) -> Callable[[], None]:
    """Start setting the users' passwords with the users CLI (password on stdin); the
    returned function waits for them and fails on any error."""
    procs = []
    for name, role, options in users:
        proc = subprocess.Popen([*USERS_ADD_COMMAND, name, "--role", role, *options, "--password-stdin"],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdin is not None
        proc.stdin.write(f"{PASSWORD}\n".encode())
        proc.stdin.close()
        procs.append((name, proc))

    def finish() -> None:
        failed = []
        for name, proc in procs:
            assert proc.stdout is not None
            with proc.stdout:
                out = proc.stdout.read()
            proc.wait(60)
            if proc.returncode != 0:
                failed.append(f"trygg users add {name}: {out.decode(errors='replace')}")
        assert not failed, "\n".join(failed)

    return finish


def seed_history(database: str, now: datetime) -> None:
    """Two weeks of stored events and closed alerts for the research page. Everything is
    older than an hour, so `trygg up` neither replays it through the rules nor counts it
    as a device being heard."""
    rows = []
    kinds = [("motion", {"room": "kitchen"}), ("heartbeat", {"battery_pct": 80}), ("alarm.button", {})]
    for day in range(14):
        for n in range(4, 10):
            for i, (kind, data) in enumerate(kinds):
                if kind == "alarm.button" and (day + n) % 3:
                    continue
                device = f"d-{n}-motion" if kind == "motion" else f"d-{n}-alarm"
                for k in range(1 + (day * n + i) % 4):
                    ts = now - timedelta(days=day, hours=2 + i, minutes=7 * k)
                    rows.append((device, f"seed-{day}-{n}-{i}-{k}", f"r-{n}", kind, ts, ts, Jsonb(data)))
    alerts = []
    for n in range(4, 10):
        for j in range(3):
            opened = now - timedelta(days=j + 1, hours=n)
            acked = opened + timedelta(seconds=20 + 15 * n + 40 * j)
            resolved = acked + timedelta(minutes=5 + n)
            ref = {"device_id": f"d-{n}-alarm", "event_id": f"seed-a-{n}-{j}", "type": "alarm.button",
                   "ts": opened.isoformat(), "received_at": opened.isoformat()}
            alerts.append((f"a-seed-{n}-{j}", f"r-{n}", "east", "alarm", "high", "resolved", opened, resolved,
                           acked, "ola", resolved, "ola", resolved, "seeded", opened, Jsonb(ref), Jsonb(ref),
                           ["east"], 3, 3))
    with psycopg.connect(database) as conn:
        conn.cursor().executemany(
            "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
        conn.cursor().executemany(
            "INSERT INTO trygg.alerts (alert_id, resident_id, team_id, kind, priority, state, opened_at,"
            " updated_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, closed_at, note,"
            " escalated_at, trigger, last_event, teams, version, transition_count)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", alerts)


def make_system(mosquitto: MosquittoInstance, database: str, workdir: Path) -> System:
    """Registry and history stored; not started yet."""
    prefix = f"b{uuid.uuid4().hex[:10]}/trygg/v1"
    with psycopg.connect(database) as conn:
        save_registry(conn, parse_registry(REGISTRY_YAML), actor="test")
    seed_history(database, datetime.now(UTC) - timedelta(hours=1))
    env = base_env(mosquitto, database, prefix, workdir / "data")
    return System(mosquitto, database, prefix, env, workdir / "trygg.log")


@dataclass
class Watch:
    """Script errors and CSP violations seen by a page; a test ends with none."""

    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.errors, "the page reported errors:\n" + "\n".join(self.errors)


def watch(page: Page) -> Watch:
    """Collect the page's uncaught script errors and Content-Security-Policy refusals."""
    seen = Watch()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            seen.errors.append(f"console: {msg.text}")

    def on_error(exc: Error) -> None:
        seen.errors.append(f"uncaught: {exc}")

    page.on("pageerror", on_error)
    page.on("console", on_console)
    return seen


def login(page: Page, base_url: str, username: str, expect_path: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label(re.compile("Brukernavn")).fill(username)
    page.get_by_label(re.compile("Passord")).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Logg inn")).click()
    # A sign-in is an argon2 check on one low-priority thread and its rest; on a loaded
    # machine it took over 5 s, Playwright's default wait.
    page.wait_for_url(f"{base_url}{expect_path}", timeout=20_000)


def shot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """A screenshot in tests/artifacts/: the whole page, or what is on screen (a page as
    long as ReDoc's takes longer to draw whole than a test should wait)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


#: axe-core, vendored by scripts/vendor (tests/browser/vendor/axe-core/VERSION)
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
#: The impacts that fail a page; "moderate" and "minor" are written to the report only.
AXE_FAILING = frozenset({"serious", "critical"})


def check_accessible(page: Page, name: str) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now (WCAG 2.1 A and AA and best practice) and
    fail on any serious or critical violation, naming the rule and the elements. The full
    report goes to tests/artifacts/axe-{name}.json. Evaluated through the DevTools
    protocol, so the page's Content-Security-Policy does not have to allow it."""
    page.evaluate(_axe_source())
    result = page.evaluate(
        "axe.run(document, {resultTypes: ['violations'],"
        " runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(result["violations"], indent=1), encoding="utf-8")
    failing = [v for v in result["violations"] if v.get("impact") in AXE_FAILING]
    lines = [f"{v['impact']} {v['id']}: {v['help']} — "
             + "; ".join(" ".join(n["target"]) + (f" ({n['failureSummary'].splitlines()[-1].strip()})"
                                                   if n.get("failureSummary") else "")
                         for n in v["nodes"][:5])
             for v in failing]
    assert not failing, f"axe-core on {name}:\n" + "\n".join(lines)
    return list(result["violations"])


@contextmanager
def api_as(system: System, username: str) -> Iterator[httpx.Client]:
    """An API client signed in as `username` with a bearer token (a colleague's handheld,
    or another console, acting while the page under test looks on)."""
    with httpx.Client(base_url=system.base_url, timeout=10) as client:
        answer = client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
        answer.raise_for_status()
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def resolve_open_alerts(system: System, resident_id: str, note: str, username: str = "ola") -> list[str]:
    """`username` (staff) resolves every active alert of the resident through the API;
    returns their ids once the alert stage has stored them as resolved."""
    with api_as(system, username) as client:
        alerts = [a for a in client.get("/api/alerts").json() if a["resident_id"] == resident_id]
        for alert in alerts:
            answer = client.post(f"/api/alerts/{alert['alert_id']}/resolve", json={"note": note})
            assert answer.status_code in (200, 409), answer.text  # 409: closed meanwhile
    ids = [a["alert_id"] for a in alerts]
    query = "SELECT count(*) FROM trygg.alerts WHERE alert_id = ANY(%s) AND state IN ('resolved', 'cancelled')"
    assert wait_for(lambda: scalar(system.database, query, ids), lambda n: n == len(ids),
                    timeout=10, interval=0.05) == len(ids)
    return ids


@functools.cache
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8")



@contextmanager
def running_system(mosquitto: MosquittoInstance, pg_admin_url: str, workdir: Path,
                   env: dict[str, str] | None = None) -> Iterator[System]:
    """A `trygg up` with the browser tests' users on a database of its own, stopped and
    dropped afterwards; `env` adds settings."""
    database = create_database(pg_admin_url)
    running = make_system(mosquitto, database, workdir)
    running.env.update(env or {})
    try:
        running.start_with_users(USERS)
        yield running
    finally:
        running.stop()
        drop_database(pg_admin_url, database)
