"""`trygg up` in a process of its own, as an operator starts it (`TryggProcess`), and the
fixture `up` that starts it on the test's broker prefix and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage import save_registry
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import small_registry, wait_for


class TryggProcess:
    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = ()) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "trygg", "up", *args], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        running = wait_for(lambda: "Trygg is running" in log.read_text() or self.proc.poll() is not None,
                           bool, timeout=60)
        assert running and self.proc.poll() is None, log.read_text()[-3000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._out.close()


@pytest.fixture
def up(mosquitto: MosquittoInstance, prefix: str, tmp_path: Path) -> Iterator[Callable[[str], TryggProcess]]:
    running: list[TryggProcess] = []

    def start(conninfo: str, data_dir: Path | None = None, registry: Any = None,
              **settings: str) -> TryggProcess:
        with psycopg.connect(conninfo) as conn:
            save_registry(conn, registry or small_registry(), actor="test")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
        env.update({
            "TRYGG_MQTT_URL": mosquitto.url, "TRYGG_DATABASE_URL": conninfo,
            "TRYGG_MQTT_PREFIX": prefix, "TRYGG_MQTT_CLIENT_ID": f"up-{prefix.split('/')[0]}",
            "TRYGG_DATA_DIR": str(data_dir or tmp_path / "data"), "TRYGG_HTTP_PORT": "0",
            "TRYGG_PSEUDONYM_KEY": "k" * 32, "TRYGG_SESSION_SECRET": "s" * 32,
            "TRYGG_ESCALATE_CRITICAL_S": "1", "TRYGG_ESCALATE_HIGH_S": "1.5",
            "TRYGG_ESCALATE_MEDIUM_S": "3", "TRYGG_DB_RETRY_S": "0.5", "TRYGG_LOG_LEVEL": "info",
            **settings,
        })
        proc = TryggProcess(env, tmp_path / f"trygg-{len(running)}.log")
        running.append(proc)
        return proc

    yield start
    for proc in running:
        proc.stop()
